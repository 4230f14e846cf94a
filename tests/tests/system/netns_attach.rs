//! End to end in network namespaces: attach, real TCP through the veth pair, posture switch
//! without re-attach, detach leaves nothing behind; CLI errors.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sg_tests::{
    netns::{NetnsPair, Side},
    require_bpf,
    tcx::{ConstantProgram, TC_ACT_SHOT},
};

/// Status of the one attached interface, as JSON.
fn status(pair: &NetnsPair) -> serde_json::Value {
    pair.status_json()["interfaces"][0].clone()
}

fn counter(iface: &serde_json::Value, dir: &str, reason: &str) -> u64 {
    sg_tests::reason_count(iface, dir, reason, "packets")
}

/// Starts an echo server in A (bounded: serves `conns` connections, stops after 20 s).
fn echo_server(pair: &NetnsPair, v6: bool, conns: usize) -> std::thread::JoinHandle<()> {
    let addr = SocketAddr::new(pair.addr(Side::A, v6), 7000);
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = pair.ns_a.clone();
    let handle = std::thread::spawn(move || {
        sg_tests::netns::run_in_ns(&ns, move || {
            let listener = TcpListener::bind(addr).expect("bind");
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut served = 0;
            while served < conns && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = [0u8; 64];
                        if let Ok(n) = s.read(&mut buf) {
                            let _ = s.write_all(&buf[..n]);
                        }
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server ready");
    handle
}

/// From B: connect to A:7000 and exchange one message. `Ok` only if the echo came back.
fn try_echo(pair: &NetnsPair, v6: bool) -> Result<(), String> {
    let addr = SocketAddr::new(pair.addr(Side::A, v6), 7000);
    pair.run(Side::B, move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"hello sgctl").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if &buf == b"hello sgctl" { Ok(()) } else { Err("bad echo".into()) }
    })
}

#[test]
fn deny_then_allow_without_reattach_then_detach_leaves_nothing() {
    if !require_bpf("deny_then_allow_without_reattach_then_detach_leaves_nothing") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    let server = echo_server(&pair, false, 1);

    let out = pair.sgctl_ok(Side::A, &["attach", &if_a, "--ingress", "deny"]);
    assert!(out.contains("attached"), "{out}");
    let before = status(&pair);
    assert_eq!(before["state"], "attached");
    assert_eq!(before["xdp_mode"], "generic", "auto mode picks generic on veth");
    assert_eq!(before["tc_kind"], "tcx");
    let prog_id = before["ingress_prog_id"].as_u64().expect("ingress prog id");
    let egress_id = before["egress_prog_id"].as_u64().expect("egress prog id");

    let err = try_echo(&pair, false).expect_err("connect must fail under ingress deny");
    assert!(err.contains("timed out") || err.contains("Resource temporarily"), "{err}");
    let denied = counter(&status(&pair), "ingress", "posture_deny");
    assert!(denied >= 1, "posture_deny counter did not move");

    // Switch to allow while attached: same programs, no re-attach.
    let out = pair.sgctl_ok(Side::A, &["attach", &if_a, "--ingress", "allow"]);
    assert!(out.contains("already attached"), "{out}");
    try_echo(&pair, false).expect("connect must succeed under ingress allow");
    let after = status(&pair);
    assert_eq!(after["ingress_prog_id"].as_u64(), Some(prog_id), "program replaced");
    assert_eq!(after["egress_prog_id"].as_u64(), Some(egress_id), "program replaced");
    assert!(counter(&after, "ingress", "posture_allow") >= 1, "the SYN is decided by the posture");
    assert!(counter(&after, "ingress", "ct_established") >= 2, "the rest of the flow is tracked");
    assert!(counter(&after, "egress", "ct_reply") >= 2, "replies leave as ct_reply");
    server.join().unwrap();

    pair.sgctl_ok(Side::A, &["detach", &if_a]);
    assert!(!pair.pin_dir(Side::A).unwrap().join(&if_a).exists(), "pins left behind");
    let link = pair.cmd(Side::A, "ip", &["-d", "link", "show", "dev", &if_a]);
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("xdp"), "XDP still attached: {link}");
    let net = pair.cmd(Side::A, "bpftool", &["net", "show", "dev", &if_a]);
    assert!(net.status.success(), "bpftool net: {}", String::from_utf8_lossy(&net.stderr));
    let net = String::from_utf8_lossy(&net.stdout);
    assert!(!net.contains("sg_"), "a program still attached: {net}");
    // Program teardown is asynchronous (RCU): wait a bounded time for the ids to disappear.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let progs = std::process::Command::new("bpftool").args(["prog", "show"]).output().unwrap();
        let progs = String::from_utf8_lossy(&progs.stdout).into_owned();
        let left: Vec<&str> = progs
            .lines()
            .filter(|l| l.starts_with(&format!("{prog_id}:")) || l.starts_with(&format!("{egress_id}:")))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "programs still loaded after detach: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = pair.sgctl_ok(Side::A, &["status"]);
    assert!(st.contains("no interface attached"), "{st}");
}

#[test]
fn ipv6_tcp_follows_the_posture_statefully() {
    if !require_bpf("ipv6_tcp_follows_the_posture_statefully") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    let server = echo_server(&pair, true, 1);
    pair.sgctl_ok(Side::A, &["attach", &if_a, "--ingress", "allow", "--egress", "deny"]);
    // Inbound is allowed: the SYN-ACK and the echo leave as replies of the tracked flow,
    // although egress is denied.
    try_echo(&pair, true).expect("v6 echo: replies of an allowed inbound flow pass egress deny");
    server.join().unwrap();
    // Outbound from A is denied at egress: its SYN never leaves.
    let to_b = SocketAddr::new(pair.addr(Side::B, true), 9);
    let out = pair.run(Side::A, move || TcpStream::connect_timeout(&to_b, Duration::from_millis(800)));
    assert!(out.is_err(), "outbound connect must fail under egress deny");
    let st = status(&pair);
    assert!(counter(&st, "egress", "ct_reply") >= 2, "SYN-ACK and echo counted as replies");
    assert!(counter(&st, "egress", "posture_deny") >= 1, "the outbound SYN was denied");
    for reason in ["ipv6_truncated", "ipv6_ext_truncated", "l4_truncated"] {
        assert_eq!(counter(&st, "ingress", reason), 0, "{reason}");
    }
}

#[test]
fn attach_is_idempotent_and_refuses_mode_change() {
    if !require_bpf("attach_is_idempotent_and_refuses_mode_change") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    pair.sgctl_ok(Side::A, &["attach", &if_a, "--mode", "generic"]);
    let first = status(&pair);
    let again = pair.sgctl_ok(Side::A, &["attach", &if_a]);
    assert!(again.contains("already attached"), "{again}");
    assert_eq!(status(&pair)["ingress_prog_id"], first["ingress_prog_id"]);
    assert_eq!(first["ingress"], "deny", "AWS default: ingress deny");
    assert_eq!(first["egress"], "allow", "AWS default: egress allow");
    let out = pair.sgctl(Side::A, &["attach", &if_a, "--mode", "native"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("detach") && err.contains("generic"), "{err}");
    pair.sgctl_ok(Side::A, &["detach", &if_a]);
    let out = pair.sgctl(Side::A, &["detach", &if_a]);
    assert!(!out.status.success(), "detach of a detached interface must say so");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached"));
}

#[test]
fn native_mode_on_veth_works_too() {
    if !require_bpf("native_mode_on_veth_works_too") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    let server = echo_server(&pair, false, 1);
    pair.sgctl_ok(Side::A, &["attach", &if_a, "--mode", "native", "--ingress", "allow"]);
    assert_eq!(status(&pair)["xdp_mode"], "native");
    let link = pair.cmd(Side::A, "ip", &["-d", "link", "show", "dev", &if_a]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("xdp "), "ip link shows native xdp");
    try_echo(&pair, false).expect("echo through native XDP");
    server.join().unwrap();
    pair.sgctl_ok(Side::A, &["detach", &if_a]);
}

#[test]
fn classic_clsact_egress_attach_and_detach() {
    if !require_bpf("classic_clsact_egress_attach_and_detach") {
        return;
    }
    let pair = NetnsPair::new();
    let if_a = pair.if_a.clone();
    pair.sgctl_ok(Side::A, &["attach", &if_a, "--tc", "clsact", "--egress", "deny", "--ingress", "allow"]);
    assert_eq!(status(&pair)["tc_kind"], "clsact");
    let filters = pair.cmd(Side::A, "tc", &["filter", "show", "dev", &if_a, "egress"]);
    assert!(String::from_utf8_lossy(&filters.stdout).contains("sg_egress"));
    let server = echo_server(&pair, false, 1);
    try_echo(&pair, false).expect("inbound flow: its replies pass the clsact egress program");
    server.join().unwrap();
    let to_b = SocketAddr::new(pair.addr(Side::B, false), 9);
    let out = pair.run(Side::A, move || TcpStream::connect_timeout(&to_b, Duration::from_millis(800)));
    assert!(out.is_err(), "outbound SYN denied by egress deny through clsact");
    let st = status(&pair);
    assert!(counter(&st, "egress", "posture_deny") >= 1);
    assert!(counter(&st, "egress", "ct_reply") >= 2);
    pair.sgctl_ok(Side::A, &["detach", &if_a]);
    let filters = pair.cmd(Side::A, "tc", &["filter", "show", "dev", &if_a, "egress"]);
    assert!(!String::from_utf8_lossy(&filters.stdout).contains("sg_egress"), "filter left behind");
}

/// A reader (status, conntrack list) running while an attach is half done (maps pinned, no
/// link yet) neither fails nor removes the attach's pins.
#[test]
fn readers_leave_an_attach_in_progress_alone() {
    if !require_bpf("readers_leave_an_attach_in_progress_alone") {
        return;
    }
    let pair = NetnsPair::new();
    let (bin, iface) = (sg_tests::sgctl_path(), pair.if_a.clone());
    let mut child = pair.run(Side::A, move || {
        std::process::Command::new(bin)
            .args(["attach", &iface])
            .env("SGCTL_FAILPOINT", "attach_link=pause:2000")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sgctl attach")
    });
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains("pausing") && t.elapsed() < Duration::from_secs(10) {
        let mut buf = [0u8; 256];
        let n = stderr.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("pausing"), "never reached the failpoint: {seen}");
    let st = pair.status_json();
    assert_eq!(st["interfaces"].as_array().unwrap().len(), 0, "not listed until attached: {st}");
    let flows = pair.sgctl_ok(Side::A, &["conntrack", "list"]);
    assert!(flows.contains("0 flows"), "{flows}");
    assert!(child.wait().unwrap().success(), "the attach finished");
    let s = status(&pair);
    assert_eq!(s["state"], "attached", "{s}");
    assert!(s["xdp_link_id"].as_u64().is_some(), "its pins are all there: {s}");
}

#[test]
fn clear_errors() {
    if !require_bpf("clear_errors") {
        return;
    }
    let pair = NetnsPair::new();
    let out = pair.sgctl(Side::A, &["attach", "nosuchif0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such interface: nosuchif0"));

    // Another XDP program on the interface (held by this test process): sgctl names it.
    let if_a = pair.if_a.clone();
    let holder = pair.run(Side::A, move || {
        let mut ebpf = sg_userspace::loader::load_object().expect("load");
        let xdp: &mut aya::programs::Xdp = ebpf.program_mut("sg_ingress").unwrap().try_into().unwrap();
        let idx = sg_userspace::iface::ifindex(&if_a).unwrap();
        xdp.attach_to_if_index(idx, aya::programs::XdpMode::Skb).expect("attach holder");
        ebpf
    });
    let out = pair.sgctl(Side::A, &["attach", &pair.if_a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already has an XDP program") && err.contains("sg_ingress"), "{err}");
    assert!(!pair.pin_dir(Side::A).unwrap().join(&pair.if_a).exists(), "failed attach left pins");
    drop(holder);

    // Not root: one line, nothing changed.
    let bin = sg_tests::sgctl_path();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["attach", "lo"])
        .output()
        .expect("setpriv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// 20 datagrams A -> B:9300 (from one socket: one tracked flow); how many `rx` received.
fn udp_burst(pair: &NetnsPair, rx: &UdpSocket) -> u32 {
    let (a, b) = (pair.addr(Side::A, false), rx.local_addr().unwrap());
    pair.run(Side::A, move || {
        let s = UdpSocket::bind(SocketAddr::new(a, 0)).expect("bind");
        for _ in 0..20 {
            let _ = s.send_to(b"x", b);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut buf = [0u8; 16];
    let mut n = 0;
    while rx.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// sgctl's egress passes with TCX_NEXT (`TC_ACT_UNSPEC`), not TC_ACT_OK: a TCX program attached
/// after it still runs. Here the later program drops every packet: datagrams sgctl passes
/// (its counters say so) stop arriving while it is attached and arrive again once it is gone,
/// sgctl untouched. Were sgctl's pass final, they would arrive throughout.
#[test]
fn a_tcx_program_after_sgctls_egress_still_runs() {
    if !require_bpf("a_tcx_program_after_sgctls_egress_still_runs") {
        return;
    }
    let pair = NetnsPair::new();
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--tc", "tcx", "--ingress", "allow", "--egress", "allow"]);
    assert_eq!(status(&pair)["tc_kind"], "tcx");
    let b = SocketAddr::new(pair.addr(Side::B, false), 9300);
    let rx = pair.run(Side::B, move || {
        let s = UdpSocket::bind(b).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s
    });
    udp_burst(&pair, &rx); // neighbour resolution
    assert!(udp_burst(&pair, &rx) >= 18, "sgctl alone does not pass A's datagrams");

    let ifindex = status(&pair)["ifindex"].as_u64().expect("ifindex") as u32;
    let later = pair
        .run(Side::A, move || ConstantProgram::attach(ifindex, true, TC_ACT_SHOT))
        .expect("second TCX program");
    let passed = |st: &serde_json::Value| {
        counter(st, "egress", "posture_allow") + counter(st, "egress", "ct_established")
    };
    let before = passed(&status(&pair));
    let got = udp_burst(&pair, &rx);
    let after = passed(&status(&pair));
    assert_eq!(got, 0, "the TCX program after sgctl's did not run: {got} datagrams arrived");
    assert!(after >= before + 20, "sgctl did not pass the datagrams itself ({before} -> {after})");

    drop(later);
    udp_burst(&pair, &rx); // the neighbour entry may need resolving again
    assert!(udp_burst(&pair, &rx) >= 18, "datagrams do not arrive once the later program is gone");
    assert_eq!(status(&pair)["tc_kind"], "tcx", "sgctl's egress went with the other program");
}
