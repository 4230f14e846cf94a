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
    let busiest =
        sample["interfaces"][0]["top_rules"][0]["rule"].as_str().expect("a busiest rule").to_string();
    // "g ingress #1: udp 7001 from 192.0.2.0/24"
    let number = busiest.split('#').nth(1).and_then(|r| r.split(':').next()).expect("a #number").to_string();
    assert!(busiest.starts_with("g ingress #") && busiest.contains("udp 7001"), "{busiest}");
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
