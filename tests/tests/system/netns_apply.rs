//! Apply is all or nothing: an injected failure with the new generation half written, a flip
//! that fails on the second of two interfaces, and an sgctl killed with -9 in the middle of an
//! apply all leave the old policy active and whole; concurrent applies serialise on the lock.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sg_tests::{
    netns::{NetnsPair, Side, run_in_ns},
    require_bpf, write_temp,
};

/// A rule set of ~1,000 rules whose only rule for the peer allows tcp `port`.
fn rules(iface: &str, port: u16) -> String {
    let mut t = String::from("[quotas]\nrules_per_group = 1000\n[groups.g]\ningress = [\n");
    for i in 0..999u16 {
        let _ = writeln!(
            t,
            "  {{ proto = \"udp\", ports = \"{}\", from = \"203.0.113.{}/32\" }},",
            10_000 + i,
            i % 250
        );
    }
    let _ = writeln!(t, "  {{ proto = \"tcp\", ports = \"{port}\", from = \"192.0.2.2/32\" }},\n]");
    let _ = writeln!(t, "[interfaces.{iface}]\ngroups = [\"g\"]");
    t
}

/// Listeners on A's 8080 and 9090 (kept open while the returned value lives).
fn listeners(pair: &NetnsPair) -> Vec<TcpListener> {
    let a = pair.addr(Side::A, false);
    run_in_ns(&pair.ns_a, move || {
        [8080u16, 9090].iter().map(|p| TcpListener::bind(SocketAddr::new(a, *p)).unwrap()).collect()
    })
}

/// Which of A's ports 8080 / 9090 the peer can connect to.
fn reachable(pair: &NetnsPair) -> (bool, bool) {
    let a = pair.addr(Side::A, false);
    pair.run(Side::B, move || {
        let try_port =
            |p| TcpStream::connect_timeout(&SocketAddr::new(a, p), Duration::from_millis(600)).is_ok();
        (try_port(8080), try_port(9090))
    })
}

fn policy_seq(pair: &NetnsPair) -> u64 {
    pair.status_json()["interfaces"][0]["policy_seq"].as_u64().unwrap()
}

fn stats_mention(pair: &NetnsPair, needle: &str) -> bool {
    pair.sgctl_ok(Side::A, &["stats"]).contains(needle)
}

/// `sgctl ARGS` in A with an environment variable, not waited for.
fn spawn_sgctl(pair: &NetnsPair, env: Option<(&str, &str)>, args: &[&str]) -> std::process::Child {
    let bin = sg_tests::sgctl_path();
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    let env = env.map(|(k, v)| (k.to_string(), v.to_string()));
    pair.run(Side::A, move || {
        let mut c = Command::new(bin);
        c.args(&args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.spawn().expect("spawn sgctl")
    })
}

#[test]
fn a_failure_with_the_new_generation_half_written_keeps_the_old_policy() {
    if !require_bpf("a_failure_with_the_new_generation_half_written_keeps_the_old_policy") {
        return;
    }
    let pair = NetnsPair::new();
    let _l = listeners(&pair);
    let v1 = write_temp(&format!("{}-v1.toml", pair.if_a), &rules(&pair.if_a, 8080));
    let v2 = write_temp(&format!("{}-v2.toml", pair.if_a), &rules(&pair.if_a, 9090));
    pair.sgctl_ok(Side::A, &["apply", v1.to_str().unwrap()]);
    assert_eq!(reachable(&pair), (true, false), "v1 allows 8080 only");
    let out = spawn_sgctl(
        &pair,
        Some(("SGCTL_FAILPOINT", "write_generation=fail")),
        &["apply", v2.to_str().unwrap()],
    )
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success(), "the injected failure must fail the apply");
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected failure"));
    assert_eq!(policy_seq(&pair), 1, "the old rule set is still the active one");
    assert_eq!(reachable(&pair), (true, false), "traffic still follows v1, whole");
    assert!(stats_mention(&pair, "tcp 8080"), "state still describes v1");
    // The next apply overwrites the half-written generation and succeeds.
    pair.sgctl_ok(Side::A, &["apply", v2.to_str().unwrap()]);
    assert_eq!(policy_seq(&pair), 2);
    assert_eq!(reachable(&pair), (false, true), "v2 allows 9090 only");
}

/// Every interface's `policy_seq`, by name.
fn seqs(pair: &NetnsPair) -> Vec<(String, u64)> {
    let st = pair.status_json();
    let mut v: Vec<(String, u64)> = st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["iface"].as_str().unwrap().to_string(), i["policy_seq"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_flip_failing_on_the_second_interface_flips_the_first_back() {
    if !require_bpf("a_flip_failing_on_the_second_interface_flips_the_first_back") {
        return;
    }
    let pair = NetnsPair::new();
    let _l = listeners(&pair);
    // A second interface in A: one end of a second veth pair whose both ends stay in A (it
    // carries nothing; the kernel has no dummy driver here).
    let dummy = "sgflip0";
    for args in [
        &["link", "add", dummy, "type", "veth", "peer", "name", "sgflip1"][..],
        &["link", "set", dummy, "up"],
    ] {
        let out = pair.cmd(Side::A, "ip", args);
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let both = |port| format!("{}[interfaces.{dummy}]\ngroups = [\"g\"]\n", rules(&pair.if_a, port));
    let v1 = write_temp(&format!("{}-f1.toml", pair.if_a), &both(8080));
    let v2 = write_temp(&format!("{}-f2.toml", pair.if_a), &both(9090));
    pair.sgctl_ok(Side::A, &["apply", v1.to_str().unwrap()]);
    let at = |seq| {
        let mut v = vec![(pair.if_a.clone(), seq), (dummy.to_string(), seq)];
        v.sort();
        v
    };
    assert_eq!(seqs(&pair), at(1), "both interfaces enforce v1");
    assert_eq!(reachable(&pair), (true, false));
    // The first interface flips to v2, the second fails: the first must go back to v1.
    let out = spawn_sgctl(&pair, Some(("SGCTL_FAILPOINT", "flip#2=fail")), &["apply", v2.to_str().unwrap()])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the failed flip must fail the apply");
    assert!(err.contains("failpoint flip#2: injected failure"), "{err}");
    assert!(err.contains("flipped back to rule set #1"), "the first interface was flipped back: {err}");
    assert_eq!(seqs(&pair), at(1), "no interface is left on v2");
    assert_eq!(reachable(&pair), (true, false), "traffic still follows v1, whole");
    assert!(
        stats_mention(&pair, "tcp 8080") && !stats_mention(&pair, "tcp 9090"),
        "the state file describes v1 again"
    );
    // The next apply (no failpoint) flips both.
    pair.sgctl_ok(Side::A, &["apply", v2.to_str().unwrap()]);
    assert_eq!(seqs(&pair), at(2));
    assert_eq!(reachable(&pair), (false, true), "v2 allows 9090 only");
}

#[test]
fn kill_9_in_the_middle_of_an_apply_leaves_the_old_or_the_new_policy() {
    if !require_bpf("kill_9_in_the_middle_of_an_apply_leaves_the_old_or_the_new_policy") {
        return;
    }
    let pair = NetnsPair::new();
    let _l = listeners(&pair);
    let v1 = write_temp(&format!("{}-k1.toml", pair.if_a), &rules(&pair.if_a, 8080));
    let v2 = write_temp(&format!("{}-k2.toml", pair.if_a), &rules(&pair.if_a, 9090));
    pair.sgctl_ok(Side::A, &["apply", v1.to_str().unwrap()]);
    // Killed while writing the inactive generation, then killed after saving its state but
    // before the flip: both times the datapath and what sgctl reports stay on v1.
    for failpoint in ["write_generation=pause:20000", "before_flip=pause:20000"] {
        let mut child =
            spawn_sgctl(&pair, Some(("SGCTL_FAILPOINT", failpoint)), &["apply", v2.to_str().unwrap()]);
        // Wait (bounded) until it reports the pause, then kill it.
        let t = Instant::now();
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        while !seen.contains("pausing") && t.elapsed() < Duration::from_secs(10) {
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut stderr, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("pausing"), "{failpoint}: never reached the failpoint: {seen}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(policy_seq(&pair), 1, "{failpoint}: the datapath still enforces v1");
        assert_eq!(reachable(&pair), (true, false), "{failpoint}: v1 whole");
        assert!(
            stats_mention(&pair, "tcp 8080") && !stats_mention(&pair, "tcp 9090"),
            "{failpoint}: reported rules = v1"
        );
    }
    pair.sgctl_ok(Side::A, &["apply", v2.to_str().unwrap()]);
    assert_eq!(reachable(&pair), (false, true), "a clean apply after the kills works");
    assert!(stats_mention(&pair, "tcp 9090"));
}

#[test]
fn concurrent_applies_serialise_on_the_lock() {
    if !require_bpf("concurrent_applies_serialise_on_the_lock") {
        return;
    }
    let pair = NetnsPair::new();
    let v1 = write_temp(&format!("{}-c1.toml", pair.if_a), &rules(&pair.if_a, 8080));
    let v2 = write_temp(&format!("{}-c2.toml", pair.if_a), &rules(&pair.if_a, 9090));
    pair.sgctl_ok(Side::A, &["apply", v1.to_str().unwrap()]);
    // While one apply holds the lock (paused before its flip), a second one waits for it.
    let first = spawn_sgctl(
        &pair,
        Some(("SGCTL_FAILPOINT", "before_flip=pause:1500")),
        &["apply", v2.to_str().unwrap()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let second = spawn_sgctl(&pair, None, &["apply", v1.to_str().unwrap()]).wait_with_output().unwrap();
    let waited = t.elapsed();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success() && second.status.success());
    assert!(waited >= Duration::from_millis(900), "the second apply did not wait for the lock ({waited:?})");
    assert_eq!(policy_seq(&pair), 3, "both applied, one after the other");
    assert!(stats_mention(&pair, "tcp 8080"), "the second (v1) was applied last");
    // Ten applies at once: all succeed, numbered 4..=13, nothing lost.
    let kids: Vec<_> = (0..10)
        .map(|i| {
            spawn_sgctl(
                &pair,
                None,
                &["apply", if i % 2 == 0 { v1.to_str().unwrap() } else { v2.to_str().unwrap() }],
            )
        })
        .collect();
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(policy_seq(&pair), 13);
}

#[test]
fn private_state_and_no_path_traversal() {
    use std::os::unix::fs::PermissionsExt as _;
    if !require_bpf("private_state_and_no_path_traversal") {
        return;
    }
    let pair = NetnsPair::new();
    let v1 = write_temp(&format!("{}-p1.toml", pair.if_a), &rules(&pair.if_a, 8080));
    pair.sgctl_ok(Side::A, &["apply", v1.to_str().unwrap()]);
    let pins = pair.pin_dir(Side::A).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&pins), 0o700, "pin directory of the namespace");
    assert_eq!(mode(&pins.join(&pair.if_a)), 0o700, "pin directory of the interface");
    assert_eq!(mode(&pins.join(&pair.if_a).join("SG_CONFIG")) & 0o077, 0, "pinned maps are root-only");
    let cookie = pair.cookie(Side::A).unwrap();
    let state = sg_userspace::state::state_dir_for(cookie);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("state.json")), 0o600);
    // Interface names cannot climb out of the pin directory.
    for bad in ["..", "../..", "a/b", "."] {
        let out = pair.sgctl(Side::A, &["detach", bad]);
        assert!(!out.status.success(), "detach {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid interface name"), "{bad}");
    }
    assert!(pins.join(&pair.if_a).join("SG_CONFIG").exists(), "nothing removed by the bad detaches");
    // A rules file naming a bad interface is rejected before anything is touched.
    let bad = write_temp("bad-iface.toml", "[groups.g]\n[interfaces.\"../x\"]\ngroups = [\"g\"]\n");
    let out = pair.sgctl(Side::A, &["apply", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid interface name '../x'"));
    // Not root: one line, nothing changed.
    let bin = sg_tests::sgctl_path();
    let before = policy_seq(&pair);
    let out = pair.run(Side::A, move || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["apply", v1.to_str().unwrap()])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert_eq!(policy_seq(&pair), before);
}

/// A fleet file (interfaces bound per host) is refused by a plain apply, which would detach
/// every interface, and nothing changes; `--host NAME` applies that host's bindings.
#[test]
fn a_fleet_file_needs_host_and_host_picks_its_bindings() {
    if !require_bpf("a_fleet_file_needs_host_and_host_picks_its_bindings") {
        return;
    }
    let pair = NetnsPair::new();
    let _l = listeners(&pair);
    let first = write_temp("fleet-apply-first.toml", &rules(&pair.if_a, 8080));
    pair.sgctl_ok(Side::A, &["apply", first.to_str().unwrap()]);
    let seq = policy_seq(&pair);
    let fleet = format!(
        "[groups.g]\ningress = [ {{ proto = \"tcp\", ports = \"9090\", from = \"192.0.2.2/32\" }} ]\n\
         [hosts.h1.interfaces.{0}]\ngroups = [\"g\"]\n[hosts.h2.interfaces.{0}]\ngroups = []\n",
        pair.if_a
    );
    let file = write_temp("fleet-apply.toml", &fleet);
    let file = file.to_str().unwrap();
    let out = pair.sgctl(Side::A, &["apply", file]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--host NAME") && err.contains("h1, h2"), "{err}");
    assert_eq!(
        (policy_seq(&pair), reachable(&pair)),
        (seq, (true, false)),
        "a refused apply changed something"
    );
    let out = pair.sgctl(Side::A, &["apply", file, "--host", "h9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no [hosts.h9]"), "{err}");
    pair.sgctl_ok(Side::A, &["apply", file, "--host", "h1"]);
    assert_eq!(reachable(&pair), (false, true), "h1's bindings are not enforced");
}
