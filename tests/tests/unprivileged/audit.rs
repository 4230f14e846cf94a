//! `sgctl audit`: one fixture per finding (tests/fixtures/audit/), a clean file with none, the
//! exit status at each `--fail-on` level (the live zero-hits check is the system tests').

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Output},
};

use sg_tests::write_temp;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit").join(name)
}

fn audit(args: &[&str]) -> Output {
    Command::new(sg_tests::sgctl_path()).arg("audit").args(args).output().expect("run sgctl audit")
}

/// The checks a fixture triggers (JSON output, never failing).
fn checks(name: &str) -> (BTreeSet<String>, Vec<serde_json::Value>) {
    let path = fixture(name);
    let out = audit(&[path.to_str().unwrap(), "--json", "--fail-on", "never"]);
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON array");
    (v.iter().map(|f| f["check"].as_str().unwrap().to_string()).collect(), v)
}

#[test]
fn each_fixture_triggers_exactly_its_check() {
    for (file, check, severity) in [
        ("admin_port_open_to_world.toml", "admin_port_open_to_world", "error"),
        ("all_open_to_world.toml", "all_open_to_world", "error"),
        ("database_port_open_to_world.toml", "database_port_open_to_world", "warn"),
        ("shadowed_rule.toml", "shadowed_rule", "warn"),
        ("unbound_group.toml", "unbound_group", "warn"),
        ("egress_allow_all.toml", "egress_allow_all", "info"),
        ("acl_blocks_return_traffic.toml", "acl_blocks_return_traffic", "warn"),
        ("acl_shadowed_entry.toml", "acl_shadowed_entry", "warn"),
        ("acl_entry_never_matches.toml", "acl_entry_never_matches", "warn"),
        ("rule_never_matches.toml", "rule_never_matches", "warn"),
    ] {
        let (got, findings) = checks(file);
        assert_eq!(got, BTreeSet::from([check.to_string()]), "{file}: {findings:#?}");
        for f in &findings {
            assert_eq!(f["severity"], severity, "{file}");
            let loc = f["location"].as_str().unwrap();
            assert!(
                loc.contains(file) && loc.split(':').nth(1).is_some_and(|l| l.parse::<u32>().is_ok()),
                "{loc}"
            );
            assert!(!f["fix"].as_str().unwrap().is_empty(), "{file}: every finding says how to fix it");
        }
    }
    let (got, findings) = checks("clean.toml");
    assert!(got.is_empty(), "clean.toml: {findings:#?}");
}

#[test]
fn shadowed_finding_names_both_rules() {
    let (_, findings) = checks("shadowed_rule.toml");
    let f = &findings[0];
    assert!(f["rule"].as_str().unwrap().contains("tcp 8080"), "{f}");
    assert!(f["message"].as_str().unwrap().contains("8000-9000"), "{f}");
    assert!(f["location"].as_str().unwrap().ends_with(":4:3"), "the narrower rule's line: {f}");
}

#[test]
fn acl_findings_name_the_entries_that_decide() {
    let (_, f) = checks("acl_blocks_return_traffic.toml");
    let m = f[0]["message"].as_str().unwrap();
    assert!(m.contains("egress tcp to port 32768 for 192.0.2.0") && m.contains("its final deny"), "{m}");
    assert!(f[0]["location"].as_str().unwrap().ends_with(":4:13"), "the group rule: {}", f[0]);
    let (_, f) = checks("acl_shadowed_entry.toml");
    assert!(f[0]["message"].as_str().unwrap().contains("entry 100 (allow"), "{}", f[0]);
    assert!(f[0]["rule"].as_str().unwrap().starts_with("200 deny tcp 443"), "{}", f[0]);
}

#[test]
fn exit_status_follows_fail_on() {
    let status = |file: &str, level: &str| {
        let path = fixture(file);
        audit(&[path.to_str().unwrap(), "--fail-on", level]).status.success()
    };
    assert!(!status("admin_port_open_to_world.toml", "error"));
    assert!(status("database_port_open_to_world.toml", "error"), "a warning passes --fail-on error");
    assert!(!status("database_port_open_to_world.toml", "warn"));
    assert!(status("admin_port_open_to_world.toml", "never"));
    assert!(status("egress_allow_all.toml", "warn"), "info never fails");
    assert!(status("clean.toml", "warn"));
    // A file that does not validate is an error, with its location.
    let bad = write_temp(
        "audit-bad.toml",
        "[groups.x]\ningress = [ { proto = \"tcp\", ports = \"99999\", from = \"0.0.0.0/0\" } ]\n",
    );
    let out = audit(&[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit-bad.toml:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documentation's table of checks is the code's list (`audit::CHECKS`), and every check of the
/// list has a fixture above that triggers it (zero_hits: the live test).
#[test]
fn readme_table_is_the_list_of_checks() {
    let readme = sg_tests::docs();
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| check | severity | finding |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    let want: Vec<String> = sg_userspace::rules::audit::CHECKS
        .iter()
        .map(|(name, sev, what)| format!("| `{name}` | {} | {what} |", sev.as_str()))
        .collect();
    assert_eq!(rows, want, "the documentation's audit table differs from audit::CHECKS");
    for (name, ..) in sg_userspace::rules::audit::CHECKS {
        assert!(
            *name == "zero_hits" || fixture(&format!("{name}.toml")).exists(),
            "no fixture triggers {name}"
        );
    }
}
