//! Operator safety (issue 35) with real sessions: no mistake opens the host, an apply with
//! `--confirm` rolls back by itself (also when the CLI is killed) unless confirmed, and no
//! subcommand panics on a closed pipe.

use std::{
    io::Read as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use sg_tests::{
    netns::{NetnsPair, Side},
    probes::TcpPing,
    require_bpf, write_temp,
};

fn rules(iface: &str, port: u16) -> String {
    format!(
        "[groups.g]\ningress = [ {{ proto = \"tcp\", ports = \"{port}\", from = \"192.0.2.0/24\" }} ]\n\n[interfaces.{iface}]\ngroups = [\"g\"]\n"
    )
}

fn file(pair: &NetnsPair, name: &str, text: &str) -> String {
    write_temp(&format!("{}-{name}", pair.if_a), text).display().to_string()
}

#[test]
fn a_rule_set_that_binds_nothing_is_refused_and_changes_nothing() {
    if !require_bpf("a_rule_set_that_binds_nothing_is_refused_and_changes_nothing") {
        return;
    }
    let pair = NetnsPair::new();
    pair.sgctl_ok(Side::A, &["apply", &file(&pair, "ok.toml", &rules(&pair.if_a, 7000))]);
    let cut_short =
        "[groups.g]\ningress = [ { proto = \"tcp\", ports = \"7000\", from = \"192.0.2.0/24\" } ]\n";
    for (what, text, extra) in [
        ("an empty file", "", vec![]),
        ("a file cut before [interfaces]", cut_short, vec![]),
        (
            "AWS JSON without --bind",
            r#"{"SecurityGroups": [{"GroupId": "sg-1", "GroupName": "web", "IpPermissions": [], "IpPermissionsEgress": []}]}"#,
            vec!["--format", "aws"],
        ),
    ] {
        let f = file(&pair, "bad", text);
        let mut args = vec!["apply", f.as_str()];
        args.extend(extra);
        let out = pair.sgctl(Side::A, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: applied");
        assert!(err.contains("bind no interface") && err.contains("--allow-empty"), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        let st = pair.status_json();
        assert_eq!(st["interfaces"][0]["policy_seq"], 1, "{what}: the interface changed");
    }
    // On purpose: detached.
    let empty = file(&pair, "empty", "");
    let out = pair.sgctl_ok(Side::A, &["apply", &empty, "--allow-empty"]);
    assert!(out.contains("detached"), "{out}");
    assert_eq!(pair.status_json()["interfaces"].as_array().map(Vec::len), Some(0));
}

/// `apply --confirm 2 --revoke` of rules that cut the session on port 7000 (and refuse new
/// connections to it), the CLI killed right away: 2 s later the previous rules are back, by
/// one flip, and the session goes on (adopted again); new connections work again.
#[test]
fn an_unconfirmed_apply_rolls_back_by_itself_even_with_the_cli_killed() {
    if !require_bpf("an_unconfirmed_apply_rolls_back_by_itself_even_with_the_cli_killed") {
        return;
    }
    let pair = NetnsPair::new();
    pair.sgctl_ok(Side::A, &["apply", &file(&pair, "good.toml", &rules(&pair.if_a, 7000))]);
    let server = SocketAddr::new(pair.v4_a.into(), 7000);
    let session = TcpPing::start_with(
        &pair.ns_a,
        server,
        &pair.ns_b,
        None,
        Duration::from_millis(100),
        Duration::from_secs(20),
    );
    let bad = file(&pair, "bad.toml", &rules(&pair.if_a, 7001));
    // Run the apply and kill the CLI as soon as it has printed (the rollback must not need it).
    let bin = sg_tests::sgctl_path();
    let out = pair.run(Side::A, move || {
        let mut child = Command::new(bin)
            .args(["apply", &bad, "--confirm", "2", "--revoke"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut text = String::new();
        child.stdout.take().expect("stdout").read_to_string(&mut text).expect("read");
        let _ = child.kill();
        child.wait().expect("wait");
        text
    });
    assert!(out.contains("rolls back to the previous rule set in 2 s"), "{out}");
    // Cut now: no round trip, and a new connection is refused.
    let rounds = session.rounds();
    std::thread::sleep(Duration::from_millis(700));
    assert!(session.rounds() <= rounds + 1, "the session was not cut by the unconfirmed rules");
    let st = pair.status_json();
    assert_eq!(st["interfaces"][0]["policy_seq"], 2);
    // Rolled back: the session goes on, the rule set is #1 again.
    assert!(
        session.wait_rounds(5, Duration::from_secs(20)),
        "the session did not come back after the rollback"
    );
    assert_eq!(session.finish().error, None);
    assert_eq!(pair.status_json()["interfaces"][0]["policy_seq"], 1, "not rolled back");
    let fresh = TcpPing::start(
        &pair.ns_a,
        SocketAddr::new(pair.v4_a.into(), 7000),
        &pair.ns_b,
        None,
        Duration::from_millis(10),
    );
    assert!(fresh.wait_rounds(2, Duration::from_secs(5)));
    assert_eq!(fresh.finish().error, None);
}

#[test]
fn a_confirmed_apply_stays_and_detaches_what_it_dropped_on_confirmation() {
    if !require_bpf("a_confirmed_apply_stays_and_detaches_what_it_dropped_on_confirmation") {
        return;
    }
    let pair = NetnsPair::new();
    pair.sgctl_ok(Side::A, &["apply", &file(&pair, "one.toml", &rules(&pair.if_a, 7000))]);
    let out = pair
        .sgctl_ok(Side::A, &["apply", &file(&pair, "two.toml", &rules(&pair.if_a, 7001)), "--confirm", "3"]);
    assert!(out.contains("rolls back"), "{out}");
    // Another apply meanwhile is refused.
    let again = pair.sgctl(Side::A, &["apply", &file(&pair, "three.toml", &rules(&pair.if_a, 7002))]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("awaits `sgctl confirm`"));
    let out = pair.sgctl_ok(Side::A, &["confirm"]);
    assert!(out.contains("confirmed rule set #2"), "{out}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(pair.status_json()["interfaces"][0]["policy_seq"], 2, "rolled back although confirmed");
    assert!(pair.sgctl_ok(Side::A, &["confirm"]).contains("nothing awaits confirmation"));
}

/// Every subcommand with long output, piped into a reader that closes after one line: no
/// panic, no exit 101.
#[test]
fn no_subcommand_panics_on_a_closed_pipe() {
    if !require_bpf("no_subcommand_panics_on_a_closed_pipe") {
        return;
    }
    let pair = NetnsPair::new();
    let f = file(&pair, "pipe.toml", &rules(&pair.if_a, 7000));
    pair.sgctl_ok(Side::A, &["apply", &f]);
    let bin = sg_tests::sgctl_path().display().to_string();
    for args in [
        "status --all",
        "status --json",
        "stats",
        "stats --json",
        "conntrack list",
        "man",
        "completions bash",
        "export aws",
        "export nft",
        "--help",
    ] {
        let script = format!("{bin} {args} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}");
        let out =
            pair.run(Side::A, move || Command::new("bash").args(["-c", &script]).output().expect("bash"));
        let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("panicked"), "sgctl {args}: {err}");
        assert!(code == "0" || code == "141", "sgctl {args} | head: exit {code} {err}");
    }
}

/// One number per rule: the number `top` shows for the busiest rule is the one `rule remove`
/// takes, and removing it removes exactly that rule (a rule with two peers is one rule).
#[test]
fn the_number_top_shows_is_the_one_rule_remove_takes() {
    if !require_bpf("the_number_top_shows_is_the_one_rule_remove_takes") {
        return;
    }
    let pair = NetnsPair::new();
    let text = format!(
        "[groups.g]\ningress = [\n  {{ proto = \"udp\", ports = \"7000\", from = [\"192.0.2.0/24\", \"2001:db8::/64\"] }},\n  \
         {{ proto = \"udp\", ports = \"7001\", from = \"192.0.2.0/24\" }},\n]\n\n[interfaces.{}]\ngroups = [\"g\"]\n",
        pair.if_a
    );
    pair.sgctl_ok(Side::A, &["apply", &file(&pair, "two.toml", &text)]);
    // New flows to 7001 only, while top samples.
    let sender = {
        let dst = SocketAddr::new(pair.v4_a.into(), 7001);
        pair.run_spawn(Side::B, move || {
            for p in 0..3000u16 {
                let s = std::net::UdpSocket::bind(("192.0.2.2", 20000 + p % 2000)).expect("bind");
                let _ = s.send_to(b"x", dst);
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let out = pair.sgctl_ok(Side::A, &["top", "--json", "--count", "1", "--interval", "0.5"]);
    sender.join().expect("sender");
    let sample: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a sample")).expect("json");
    let busiest = &sample["interfaces"][0]["top_rules"][0];
    // {"group": "g", "direction": "ingress", "index": 1, "rule": "udp 7001 from 192.0.2.0/24"}
    let number = busiest["index"].as_u64().expect("an index").to_string();
    assert_eq!((&busiest["group"], &busiest["direction"]), (&"g".into(), &"ingress".into()), "{busiest}");
    assert!(busiest["rule"].as_str().is_some_and(|r| r.starts_with("udp 7001")), "{busiest}");
    pair.sgctl_ok(Side::A, &["rule", "remove", "g", "ingress", &number]);
    let stats = pair.sgctl_ok(Side::A, &["stats", "--json"]);
    let rules: serde_json::Value = serde_json::from_str(&stats).expect("stats json");
    let left: Vec<String> = rules
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["rule"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(left.iter().any(|r| r.contains("udp 7000")), "{left:?}");
    assert!(!left.iter().any(|r| r.contains("udp 7001")), "{left:?}");
    // The two-peer rule is one rule with one number.
    assert_eq!(left.iter().filter(|r| r.contains("udp 7000")).count(), 1, "{left:?}");
}

/// Errors below the bar, each fixed: one line, the place, what to do.
#[test]
fn mistakes_get_one_line_that_names_the_place_and_the_fix() {
    if !require_bpf("mistakes_get_one_line_that_names_the_place_and_the_fix") {
        return;
    }
    let pair = NetnsPair::new();
    let bad_iface = file(&pair, "noif.toml", &rules("eth9", 7000));
    let half_range = file(
        &pair,
        "range.toml",
        &format!(
            "[groups.g]\ningress = [ {{ proto = \"tcp\", ports = \"80-\", from = \"192.0.2.0/24\" }} ]\n[interfaces.{}]\ngroups = [\"g\"]\n",
            pair.if_a
        ),
    );
    let json = file(&pair, "aws.json", r#"{"SecurityGroups": []}"#);
    let toml = file(&pair, "ok.toml", &rules(&pair.if_a, 7000));
    for (args, want) in [
        (
            vec!["apply", bad_iface.as_str(), "--dry-run"],
            "noif.toml:4:13: no interface eth9 in this network namespace",
        ),
        (vec!["apply", half_range.as_str()], "range.toml:2:38: port range '80-' lacks an end"),
        (
            vec!["apply", json.as_str()],
            "aws.json:1:1: this looks like JSON, not sgctl TOML: AWS JSON needs --format aws",
        ),
        (vec!["apply", toml.as_str(), "--bind", "x=web"], "--bind applies to AWS JSON"),
        (
            vec![
                "explain",
                "--iface",
                &pair.if_a,
                "--dir",
                "ingress",
                "--proto",
                "tcp",
                "--src",
                "192.0.2.2",
                "--dst",
                "192.0.2.1",
                "--rules",
                toml.as_str(),
            ],
            "--dport: tcp and udp packets need a destination port",
        ),
    ] {
        let out = pair.sgctl(Side::A, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    assert!(pair.status_json()["interfaces"].as_array().is_some_and(Vec::is_empty), "something was attached");
    // `rule add` speaks of the rule it was given, never of a line of a file the operator
    // cannot see (the live rule set) or that does not have the rule yet (--file).
    pair.sgctl_ok(Side::A, &["apply", &toml]);
    let add = ["rule", "add", "g", "ingress", "--proto", "tcp", "--ports", "80-", "--cidr", "192.0.2.0/24"];
    for extra in [vec![], vec!["--file", toml.as_str()]] {
        let mut args = add.to_vec();
        args.extend(&extra);
        let out = pair.sgctl(Side::A, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            err.trim(),
            "sgctl: error: rule add g ingress: port range '80-' lacks an end (a range is lo-hi, like 1024-65535)",
            "{args:?}"
        );
    }
    assert_eq!(pair.status_json()["interfaces"][0]["policy_seq"], 1, "the failed adds changed the rule set");
    // The same file again: said to be the same rules, not a new rule set.
    let out = pair.sgctl_ok(Side::A, &["apply", &toml]);
    assert!(out.starts_with("no changes\nthe same rules applied again as rule set #2"), "{out}");
}

/// What an interface enforces is in `status`; a manual detach is seen by a dry run and by
/// explain.
#[test]
fn status_says_what_is_enforced_and_a_manual_detach_is_seen() {
    if !require_bpf("status_says_what_is_enforced_and_a_manual_detach_is_seen") {
        return;
    }
    let pair = NetnsPair::new();
    let f = file(&pair, "enf.toml", &rules(&pair.if_a, 7000));
    pair.sgctl_ok(Side::A, &["apply", &f]);
    let st = pair.status_json();
    let i = &st["interfaces"][0];
    assert_eq!(i["groups"], serde_json::json!(["g"]), "{i}");
    assert!(
        i["source"].as_str().unwrap().starts_with("file ")
            && i["source"].as_str().unwrap().ends_with("enf.toml"),
        "{i}"
    );
    let text = pair.sgctl_ok(Side::A, &["status"]);
    assert!(text.contains("security groups g, rule set #1 from file "), "{text}");
    pair.sgctl_ok(Side::A, &["detach", &pair.if_a]);
    let dry = pair.sgctl_ok(Side::A, &["apply", &f, "--dry-run"]);
    assert!(dry.contains("not attached (detached by hand?): attached again"), "{dry}");
    let ex = pair.sgctl_ok(
        Side::A,
        &[
            "explain",
            "--iface",
            &pair.if_a,
            "--dir",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            "192.0.2.2",
            "--dst",
            "192.0.2.1",
            "--dport",
            "7000",
        ],
    );
    assert!(ex.contains("is not attached"), "{ex}");
}

/// `export aws --write-members` and the `import aws` line it prints give back the rule set:
/// the TOML of the import exports to the same JSON and the same members file.
#[test]
fn export_aws_with_members_imports_back_by_the_line_it_prints() {
    let text = r#"
[groups.web]
members = ["192.0.2.10", "2001:db8::10"]
member_groups = ["canary"]
ingress = [ { proto = "tcp", ports = "443", from_prefix_list = "office" } ]

[groups.canary]
members = ["192.0.2.99"]
ingress = []

[groups.db]
members = ["192.0.2.20"]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]

[prefix_lists.office]
entries = ["198.51.100.0/24"]

[interfaces.eth7]
groups = ["web", "db"]
"#;
    let run = |args: &[&str]| {
        let out = Command::new(sg_tests::sgctl_path()).args(args).output().expect("run sgctl");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sgctl {}: {err}", args.join(" "));
        (String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    let rules = write_temp("export-rt-rules.toml", text);
    let members = write_temp("export-rt-members.toml", "");
    let (json, said) =
        run(&["export", "aws", rules.to_str().unwrap(), "--write-members", members.to_str().unwrap()]);
    let line = said
        .lines()
        .find(|l| l.contains("read back with: "))
        .unwrap_or_else(|| panic!("no import line: {said}"));
    let cmd = line.split("read back with: ").nth(1).unwrap();
    assert!(cmd.contains("--bind eth7=web,db"), "{cmd}");
    let groups = write_temp("export-rt-groups.json", &json);
    // Run the printed line with GROUPS.json replaced by the file the JSON went to.
    let args: Vec<String> = cmd
        .split_whitespace()
        .skip(1)
        .map(|a| if a == "GROUPS.json" { groups.display().to_string() } else { a.to_string() })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (toml, _) = run(&args);
    let again = write_temp("export-rt-again.toml", &toml);
    let members2 = write_temp("export-rt-members2.toml", "");
    let (json2, _) =
        run(&["export", "aws", again.to_str().unwrap(), "--write-members", members2.to_str().unwrap()]);
    assert_eq!(json2, json, "the imported TOML exports to the same JSON\n{toml}");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&members2), read(&members), "and the same members file\n{toml}");
    assert!(read(&members).contains("member_groups = [\"canary\"]"), "{}", read(&members));
    assert!(toml.contains("entries = [\"198.51.100.0/24\"]"), "{toml}");
}

/// Every key of every `--json` output, with the objects that hold it.
fn walk<'a>(
    v: &'a serde_json::Value,
    out: &mut Vec<(&'a str, &'a serde_json::Map<String, serde_json::Value>)>,
) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push((k, m));
                walk(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        _ => {}
    }
}

/// The documentation's JSON vocabulary holds for every `--json` output: the same names for the same
/// things, never a synonym, and a rule always by its group and index.
#[test]
fn every_json_output_speaks_one_vocabulary() {
    if !require_bpf("every_json_output_speaks_one_vocabulary") {
        return;
    }
    let pair = NetnsPair::new();
    let f = file(&pair, "vocab.toml", &rules(&pair.if_a, 7000));
    pair.sgctl_ok(Side::A, &["apply", &f]);
    let session = TcpPing::start(
        &pair.ns_a,
        SocketAddr::new(pair.v4_a.into(), 7000),
        &pair.ns_b,
        None,
        Duration::from_millis(10),
    );
    assert!(session.wait_rounds(5, Duration::from_secs(10)), "the session runs");
    let a = pair.if_a.as_str();
    let (src, dst) = (pair.v4_b.to_string(), pair.v4_a.to_string());
    let outputs: Vec<(&str, String)> = [
        vec!["status", "--json", "--all"],
        vec!["stats", "--json"],
        vec!["conntrack", "list", "--json"],
        vec![
            "explain", "--iface", a, "--dir", "ingress", "--proto", "tcp", "--src", &src, "--dst", &dst,
            "--dport", "7000", "--json",
        ],
        vec!["top", "--json", "--count", "1", "--interval", "0.3"],
        vec!["attach", a, "--json"],
        vec!["apply", &f, "--dry-run", "--json"],
        vec!["upgrade", "--json", "--force"],
    ]
    .into_iter()
    .map(|args| (args[0], pair.sgctl_ok(Side::A, &args)))
    .collect();
    let result = session.finish();
    assert!(result.error.is_none(), "the session was not cut: {:?}", result.error);
    // Into a pipe, top prints its samples without drawing (no escape codes).
    for (cmd, out) in &outputs {
        assert!(!out.contains('\x1b'), "{cmd} wrote escape codes into a pipe: {out:?}");
    }
    let text = pair.sgctl_ok(Side::A, &["top", "--count", "1", "--interval", "0.2"]);
    assert!(text.contains(a) && !text.contains('\x1b'), "{text:?}");
    let never =
        ["dir", "origin", "initiator", "responder", "interface", "src_port", "dst_port", "rule_id", "id"];
    let mut seen = std::collections::BTreeSet::new();
    for (cmd, out) in &outputs {
        let v: serde_json::Value =
            serde_json::from_str(out.lines().next().filter(|_| *cmd == "top").unwrap_or(out))
                .unwrap_or_else(|e| panic!("{cmd}: {e}: {out}"));
        let mut keys = Vec::new();
        walk(&v, &mut keys);
        for (k, obj) in keys {
            seen.insert(k.to_string());
            assert!(
                !never.contains(&k),
                "{cmd}: `{k}` is a synonym the the documentation's vocabulary rules out: {out}"
            );
            let val = &obj[k];
            match k {
                "direction" => assert!(val == "ingress" || val == "egress", "{cmd}: direction {val}"),
                "iface" => assert_eq!(val, a, "{cmd}"),
                "index" if obj.contains_key("group") => assert!(val.is_u64(), "{cmd}: index {val}"),
                "src" | "dst" if obj.contains_key("sport") => {
                    assert!(
                        val.as_str().is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
                        "{cmd}: {k} {val}"
                    );
                }
                "sport" | "dport" => assert!(val.is_u64() || val.is_null(), "{cmd}: {k} {val}"),
                // A rule's text never carries its number (that is `group` and `index`).
                "rule" if val.is_string() => {
                    let t = val.as_str().unwrap_or_default();
                    assert!(
                        !t.contains('#') || t.starts_with("rule id "),
                        "{cmd}: a number in rule text {obj:?}"
                    );
                }
                // A rule is its group and its index; its text is `rule`.
                "group" if obj.contains_key("rule") && !obj["group"].is_null() => {
                    assert!(
                        obj.get("index").is_some_and(serde_json::Value::is_u64),
                        "{cmd}: group without index {obj:?}"
                    );
                    assert!(
                        !obj["rule"].as_str().unwrap_or("").contains('#'),
                        "{cmd}: rule text with a number {obj:?}"
                    );
                }
                _ => {}
            }
        }
    }
    // The shared names are there to be checked (the outputs above carry them).
    for k in
        ["iface", "direction", "group", "index", "rule", "proto", "src", "sport", "dst", "dport", "reason"]
    {
        assert!(seen.contains(k), "no output had `{k}`: {outputs:?}");
    }
    let readme = sg_tests::docs();
    for k in never.iter().chain(["iface", "direction", "group", "index", "rule", "icmp_id"].iter()) {
        assert!(
            readme.contains(&format!("`{k}`")),
            "the documentation's JSON vocabulary does not name `{k}`"
        );
    }
}
