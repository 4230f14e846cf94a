//! Security groups end to end in network namespaces: hot apply of 1,000-rule sets under a live
//! TCP stream, all-or-nothing applies, AWS JSON apply/export, interfaces following the file.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sg_tests::{
    netns::{NetnsPair, Side, run_in_ns},
    require_bpf, write_temp,
};
use sg_userspace::rules::aws_export;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

fn status(pair: &NetnsPair) -> serde_json::Value {
    pair.status_json()
}

/// A 1,000-rule set for interface `iface`: 999 rules that do not match the stream (other
/// ports, other peers, both families), and the rule allowing the stream (tcp 7000 from the
/// peer) at position `at`. `variant` changes the other rules' ports and peers.
fn thousand_rules(iface: &str, variant: u16, at: usize) -> String {
    let mut rules = Vec::new();
    for i in 0..999u16 {
        let port = 10_000 + (i * 7 + variant * 13) % 50_000;
        let rule = match i % 4 {
            0 => format!("{{ proto = \"tcp\", ports = \"{port}\", from = \"198.51.100.{}/32\" }}", i % 256),
            1 => format!(
                "{{ proto = \"udp\", ports = \"{port}-{}\", from = \"203.0.113.0/{}\" }}",
                port + 5,
                24 + i % 9
            ),
            2 => format!(
                "{{ proto = \"tcp\", ports = \"{port}\", from = \"2001:db8:{:x}::/48\" }}",
                i + variant
            ),
            _ => format!(
                "{{ proto = \"icmp\", icmp_type = {}, from = \"192.0.2.{}/32\" }}",
                i % 40,
                100 + i % 100
            ),
        };
        rules.push(rule);
    }
    rules.insert(
        at,
        "{ proto = \"tcp\", ports = \"7000\", from = \"192.0.2.2/32\", description = \"the stream\" }".into(),
    );
    let mut t = String::from("[quotas]\nrules_per_group = 1000\n[groups.bulk]\ningress = [\n");
    for r in rules {
        t.push_str("  ");
        t.push_str(&r);
        t.push_str(",\n");
    }
    t.push_str("]\n[interfaces.");
    t.push_str(iface);
    t.push_str("]\ngroups = [\"bulk\"]\n");
    t
}

/// RTO and retransmissions of a TCP socket (TCP_INFO).
fn tcp_info(s: &TcpStream) -> (Duration, u32) {
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid socket, pointer and length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO");
    (Duration::from_micros(u64::from(info.tcpi_rto)), info.tcpi_total_retrans)
}

#[test]
fn thousand_rules_change_under_a_live_tcp_stream() {
    if !require_bpf("thousand_rules_change_under_a_live_tcp_stream") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    let first = write_temp(&format!("{if_a}-0.toml"), &thousand_rules(&if_a, 0, 500));
    let t0 = Instant::now();
    pair.sgctl_ok(Side::A, &["apply", first.to_str().unwrap()]);
    println!("first apply of 1,000 rules (attach included): {:?}", t0.elapsed());
    let before = status(&pair)["interfaces"][0].clone();
    assert_eq!(before["policy"], "groups");

    // Echo server in A (bounded: one connection, 60 s at most).
    let addr = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let ns_a = pair.ns_a.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        run_in_ns(&ns_a, move || {
            let l = TcpListener::bind(addr).unwrap();
            ready_tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_mins(1);
            while Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    // Client in B: 1 KiB every 5 ms, each echoed back; measures the longest wait for an echo.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_c = stop.clone();
    let client = pair.run_spawn(Side::B, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = [0x5au8; 1024];
        let mut buf = [0u8; 1024];
        let (mut rounds, mut worst) = (0u64, Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(45);
        while !stop_c.load(Ordering::Relaxed) && Instant::now() < deadline {
            let t = Instant::now();
            s.write_all(&msg).map_err(|e| format!("write after {rounds} rounds: {e}"))?;
            s.read_exact(&mut buf).map_err(|e| format!("read after {rounds} rounds: {e}"))?;
            worst = worst.max(t.elapsed());
            rounds += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        let (rto, retrans) = tcp_info(&s);
        Ok::<_, String>((rounds, worst, rto, retrans))
    });

    std::thread::sleep(Duration::from_millis(300));
    let mut apply_times = Vec::new();
    for v in 1..=10u16 {
        // The stream's rule moves around; everything else changes.
        let text = thousand_rules(&if_a, v, (usize::from(v) * 97) % 1000);
        let f = write_temp(&format!("{if_a}-{v}.toml"), &text);
        let t = Instant::now();
        let out = pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
        apply_times.push(t.elapsed());
        assert!(out.contains(&format!("applied rule set #{}", v + 1)), "{out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (rounds, worst, rto, retrans) = client.join().unwrap().expect("stream broken (reset or stall)");
    server.join().unwrap();
    apply_times.sort();
    println!(
        "10 applies of 1,000 rules: median {:?}, max {:?}; stream: {rounds} round trips, worst {worst:?}, RTO {rto:?}, {retrans} retransmissions",
        apply_times[5], apply_times[9]
    );
    assert!(rounds > 50, "the stream barely ran: {rounds} round trips");
    assert!(worst < rto, "a stall of {worst:?} exceeds one RTO ({rto:?})");
    let after = status(&pair)["interfaces"][0].clone();
    assert_eq!(after["ingress_prog_id"], before["ingress_prog_id"], "programs must not be reloaded");
    assert_eq!(after["egress_prog_id"], before["egress_prog_id"]);
    assert_eq!(after["policy_seq"], 11);
    // The stream's rule was counted (its hit carried across the applies).
    let stats: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["stats", "--json"])).unwrap();
    let stream_rule = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["description"] == "the stream")
        .expect("stream rule in stats");
    // Hits count flows: the stream is one flow, counted once when its SYN was allowed, and the
    // count survives the ten applies.
    assert_eq!(stream_rule["hits"].as_u64(), Some(1), "{stream_rule}");
}

#[test]
fn a_bad_file_changes_nothing_and_dry_run_changes_nothing() {
    if !require_bpf("a_bad_file_changes_nothing_and_dry_run_changes_nothing") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    let good = format!(
        "[groups.g]\ningress = [{{ proto = \"tcp\", ports = \"22\", from = \"192.0.2.0/24\" }}]\n[interfaces.{if_a}]\ngroups = [\"g\"]\n"
    );
    let good_f = write_temp(&format!("{if_a}-good.toml"), &good);
    pair.sgctl_ok(Side::A, &["apply", good_f.to_str().unwrap()]);
    let bad = format!(
        "[groups.g]\ningress = [{{ proto = \"tcp\", ports = \"90-80\", from = \"192.0.2.0/24\" }}]\n[interfaces.{if_a}]\ngroups = [\"g\"]\n"
    );
    let bad_f = write_temp(&format!("{if_a}-bad.toml"), &bad);
    let out = pair.sgctl(Side::A, &["apply", bad_f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", bad_f.display())) && err.contains("port range 90-80 is reversed"),
        "{err}"
    );
    let st = status(&pair);
    assert_eq!(st["interfaces"][0]["policy_seq"], 1, "a rejected file must not be applied");
    let dry = pair.sgctl_ok(
        Side::A,
        &[
            "apply",
            "--dry-run",
            write_temp("dry.toml", &good.replace("ports = \"22\"", "ports = \"2222\"")).to_str().unwrap(),
        ],
    );
    assert!(
        dry.contains("+ ingress tcp 2222") && dry.contains("- ingress tcp 22 ") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(status(&pair)["interfaces"][0]["policy_seq"], 1, "dry run applied something");
    let explain = pair.sgctl_ok(
        Side::A,
        &[
            "explain",
            "--iface",
            &if_a,
            "--dir",
            "ingress",
            "--proto",
            "tcp",
            "--src",
            "192.0.2.2",
            "--dst",
            "192.0.2.1",
            "--dport",
            "22",
        ],
    );
    assert!(explain.starts_with("pass: allowed by group g, ingress rule #0"), "{explain}");
}

#[test]
fn aws_json_applies_and_exports_equivalently_and_interfaces_follow_the_file() {
    if !require_bpf("aws_json_applies_and_exports_equivalently_and_interfaces_follow_the_file") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    // A second interface in A (a veth pair kept inside A) to show detach when the file drops it.
    let dummy = format!("{}d", &if_a[..if_a.len().min(13)]);
    let dummy_peer = format!("{}e", &if_a[..if_a.len().min(13)]);
    let out = pair.cmd(Side::A, "ip", &["link", "add", &dummy, "type", "veth", "peer", "name", &dummy_peer]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = fixture("aws/describe-security-groups.json");
    let members = fixture("aws/members.toml");
    let bind_a = format!("{if_a}=web,sg-0db0000000000001");
    let bind_d = format!("{dummy}=bastion");
    pair.sgctl_ok(
        Side::A,
        &[
            "apply",
            "--format",
            "aws",
            json.to_str().unwrap(),
            "--members",
            members.to_str().unwrap(),
            "--bind",
            &bind_a,
            "--bind",
            &bind_d,
        ],
    );
    let exported: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["export", "aws"])).unwrap();
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        aws_export::meaning(&exported),
        aws_export::meaning(&original),
        "export of the applied AWS JSON differs"
    );
    assert_eq!(status(&pair)["interfaces"].as_array().unwrap().len(), 2);

    // import -> TOML -> apply -> export: equivalent again.
    let toml = pair.sgctl_ok(
        Side::A,
        &["import", "aws", json.to_str().unwrap(), "--members", members.to_str().unwrap(), "--bind", &bind_a],
    );
    let toml_f = write_temp(&format!("{if_a}-imported.toml"), &toml);
    let out = pair.sgctl_ok(Side::A, &["apply", toml_f.to_str().unwrap()]);
    assert!(out.contains(&format!("detached {dummy}")), "the dropped interface is detached: {out}");
    let exported: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["export", "aws"])).unwrap();
    assert_eq!(
        aws_export::meaning(&exported),
        aws_export::meaning(&original),
        "import -> apply -> export differs"
    );
    let st = status(&pair);
    let ifaces: Vec<&str> =
        st["interfaces"].as_array().unwrap().iter().map(|i| i["iface"].as_str().unwrap()).collect();
    assert_eq!(ifaces, vec![if_a.as_str()]);

    // rule add / remove on the live set, and the file edited in place.
    let out = pair.sgctl_ok(
        Side::A,
        &[
            "rule",
            "add",
            "web",
            "ingress",
            "--proto",
            "tcp",
            "--ports",
            "8080",
            "--cidr",
            "192.0.2.0/24",
            "--file",
            toml_f.to_str().unwrap(),
        ],
    );
    assert!(out.contains("group web: + ingress tcp 8080 from 192.0.2.0/24"), "{out}");
    assert!(std::fs::read_to_string(&toml_f).unwrap().contains("8080"));
    let out = pair.sgctl_ok(Side::A, &["rule", "remove", "web", "ingress", "0"]);
    assert!(out.contains("group web: - ingress tcp 443 from 0.0.0.0/0"), "{out}");
}
