//! Stateful enforcement end to end with real sockets in network namespaces: return paths both
//! ways for TCP (1 MiB each way), UDP and ICMP echo, v4 and v6; path-MTU discovery through a
//! router with a smaller MTU; tracked flows surviving rule removal and ending with --revoke.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use nix::sys::socket::{
    MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, recv, sendto, setsockopt, socket,
    sockopt,
};
use sg_tests::{
    netns::{NetnsPair, Routed, Side, run_in_ns, spawn_in_ns},
    reason_count, require_bpf, write_temp,
};

const MIB: usize = 1 << 20;

fn rules(iface: &str, ingress: &str, egress: &str) -> String {
    format!(
        "[groups.g]\ningress = [{ingress}]\negress = [{egress}]\n[interfaces.{iface}]\ngroups = [\"g\"]\n"
    )
}

fn pattern(i: usize) -> u8 {
    (i * 7 % 251) as u8
}

/// Server side: accept one connection, read `MIB` bytes (checked), write `MIB` back. Bounded.
fn serve_bulk(listener: &TcpListener) -> Result<(), String> {
    listener.set_nonblocking(false).unwrap();
    let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; MIB];
    s.read_exact(&mut buf).map_err(|e| format!("server read: {e}"))?;
    if buf.iter().enumerate().any(|(i, b)| *b != pattern(i)) {
        return Err("server received corrupted data".into());
    }
    s.write_all(&buf).map_err(|e| format!("server write: {e}"))?;
    Ok(())
}

/// Client side: connect, send `MIB`, read `MIB` back and check it.
fn client_bulk(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let data: Vec<u8> = (0..MIB).map(pattern).collect();
    s.write_all(&data).map_err(|e| format!("client write: {e}"))?;
    let mut back = vec![0u8; MIB];
    s.read_exact(&mut back).map_err(|e| format!("client read: {e}"))?;
    if back != data {
        return Err("client received corrupted data".into());
    }
    Ok(())
}

/// A TCP connect that must fail within `ms`.
fn connect_fails(ns: &str, addr: SocketAddr, ms: u64) -> bool {
    run_in_ns(ns, move || TcpStream::connect_timeout(&addr, Duration::from_millis(ms)).is_err())
}

/// One UDP request/response: `Ok(answer)` or the error.
fn udp_ask(ns: &str, local: IpAddr, to: SocketAddr) -> Result<Vec<u8>, String> {
    run_in_ns(ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        s.send_to(b"what is 192.0.2.1?", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf[..n].to_vec())
    })
}

/// Answers UDP requests on `addr` for `secs` seconds.
fn udp_server(ns: &str, addr: SocketAddr, secs: u64) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in_ns(ns, move || {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// One ICMP echo through a ping socket (the kernel fills id and checksum): answered or not.
fn ping(ns: &str, to: IpAddr) -> bool {
    // Ping sockets need the caller's group in net.ipv4.ping_group_range (per namespace).
    let nsn = ns.to_string();
    run_in_ns(&nsn, move || {
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
        let (family, proto, echo) = match to {
            IpAddr::V4(_) => (nix::sys::socket::AddressFamily::Inet, SockProtocol::Icmp, 8u8),
            IpAddr::V6(_) => (nix::sys::socket::AddressFamily::Inet6, SockProtocol::IcmpV6, 128u8),
        };
        let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, proto).expect("ping socket");
        setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 800_000)).unwrap();
        let msg = [echo, 0, 0, 0, 0, 0, 0, 1, b's', b'g'];
        let sent = match to {
            IpAddr::V4(a) => sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &msg,
                &SockaddrIn::from(std::net::SocketAddrV4::new(a, 0)),
                MsgFlags::empty(),
            ),
            IpAddr::V6(a) => sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &msg,
                &SockaddrIn6::from(std::net::SocketAddrV6::new(a, 0, 0, 0)),
                MsgFlags::empty(),
            ),
        };
        if sent.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(recv(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf, MsgFlags::empty()), Ok(n) if n >= 8)
    })
}

fn status(pair: &NetnsPair) -> serde_json::Value {
    pair.status_json()
}

fn counter(st: &serde_json::Value, dir: &str, reason: &str) -> u64 {
    reason_count(&st["interfaces"][0], dir, reason, "packets")
}

/// Bytes counted for a reason (segmentation offload makes packet counts small).
fn bytes(st: &serde_json::Value, dir: &str, reason: &str) -> u64 {
    reason_count(&st["interfaces"][0], dir, reason, "bytes")
}

#[test]
fn inbound_tcp_8080_only_one_mib_each_way_and_no_outbound() {
    if !require_bpf("inbound_tcp_8080_only_one_mib_each_way_and_no_outbound") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(
        &format!("{}-in.toml", pair.if_a),
        &rules(
            &pair.if_a,
            r#"{ proto = "tcp", ports = "8080", from = ["192.0.2.0/24", "2001:db8::/64"] }"#,
            "",
        ),
    );
    pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
    for v6 in [false, true] {
        let addr = SocketAddr::new(pair.addr(Side::A, v6), 8080);
        let listener = run_in_ns(&pair.ns_a, move || TcpListener::bind(addr).unwrap());
        let server = spawn_in_ns(&pair.ns_a, move || serve_bulk(&listener));
        let client = pair.run(Side::B, move || client_bulk(addr));
        client.expect("1 MiB each way over the tracked inbound flow");
        server.join().unwrap().expect("server side");
        let out = SocketAddr::new(pair.addr(Side::B, v6), 8080);
        assert!(connect_fails(&pair.ns_a, out, 800), "outbound connect must fail: egress is empty (v6={v6})");
    }
    let st = status(&pair);
    assert!(
        bytes(&st, "egress", "ct_reply") >= 2 * MIB as u64,
        "the 1 MiB replies (v4 + v6) left as ct_reply"
    );
    assert!(counter(&st, "egress", "no_rule") >= 2, "the outbound SYNs were refused");
    let flows: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["conntrack", "list", "--json", "--all"])).unwrap();
    assert!(
        flows.as_array().unwrap().iter().any(|f| f["direction"] == "ingress" && f["dport"] == 8080),
        "conntrack list shows the inbound flow: {flows}"
    );
}

#[test]
fn outbound_tcp_443_only_replies_in_and_no_unsolicited_inbound() {
    if !require_bpf("outbound_tcp_443_only_replies_in_and_no_unsolicited_inbound") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(
        &format!("{}-out.toml", pair.if_a),
        &rules(
            &pair.if_a,
            "",
            r#"{ proto = "tcp", ports = "443", to = ["192.0.2.2/32", "2001:db8::2/128"] }"#,
        ),
    );
    pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
    for v6 in [false, true] {
        let addr = SocketAddr::new(pair.addr(Side::B, v6), 443);
        let listener = run_in_ns(&pair.ns_b, move || TcpListener::bind(addr).unwrap());
        let server = spawn_in_ns(&pair.ns_b, move || serve_bulk(&listener));
        pair.run(Side::A, move || client_bulk(addr)).expect("outbound flow and its replies");
        server.join().unwrap().expect("server side");
        let inbound = SocketAddr::new(pair.addr(Side::A, v6), 443);
        let _l = run_in_ns(&pair.ns_a, move || TcpListener::bind(inbound).unwrap());
        assert!(connect_fails(&pair.ns_b, inbound, 800), "unsolicited inbound connect must fail (v6={v6})");
    }
    let st = status(&pair);
    assert!(
        bytes(&st, "ingress", "ct_reply") >= 2 * MIB as u64,
        "the 1 MiB replies (v4 + v6) came in as ct_reply"
    );
}

#[test]
fn udp_and_icmp_echo_both_ways_v4_v6() {
    if !require_bpf("udp_and_icmp_echo_both_ways_v4_v6") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(
        &format!("{}-udp.toml", pair.if_a),
        &rules(
            &pair.if_a,
            r#"{ proto = "udp", ports = "5353", from = ["192.0.2.0/24", "2001:db8::/64"] }"#,
            r#"{ proto = "udp", ports = "53", to = ["192.0.2.0/24", "2001:db8::/64"] },
               { proto = "icmp", icmp_type = 8, to = "192.0.2.0/24" },
               { proto = "icmpv6", icmp_type = 128, to = "2001:db8::/64" }"#,
        ),
    );
    pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
    for v6 in [false, true] {
        let (a, b) = (pair.addr(Side::A, v6), pair.addr(Side::B, v6));
        // Outbound DNS-like request: allowed by egress, the answer is a reply.
        let srv = udp_server(&pair.ns_b, SocketAddr::new(b, 53), 3);
        assert_eq!(
            udp_ask(&pair.ns_a, a, SocketAddr::new(b, 53)).expect("DNS-like answer"),
            b"what is 192.0.2.1?"
        );
        // Inbound to 5353: allowed by ingress; A's answer leaves although egress has no rule for it.
        let srv_a = udp_server(&pair.ns_a, SocketAddr::new(a, 5353), 3);
        udp_ask(&pair.ns_b, b, SocketAddr::new(a, 5353)).expect("answer of an inbound UDP flow");
        // Unsolicited inbound UDP to another port: dropped.
        let srv_a2 = udp_server(&pair.ns_a, SocketAddr::new(a, 9999), 2);
        assert!(udp_ask(&pair.ns_b, b, SocketAddr::new(a, 9999)).is_err(), "unsolicited UDP (v6={v6})");
        // ICMP echo out is allowed and answered; echo in is not allowed.
        assert!(ping(&pair.ns_a, b), "ping from A (v6={v6})");
        assert!(!ping(&pair.ns_b, a), "ping to A must fail (v6={v6})");
        for h in [srv, srv_a, srv_a2] {
            h.join().unwrap();
        }
    }
    // The table: ICMP echo flows by their identifier, IPv4 rows within 120 columns; JSON has
    // the identifier as `icmp_id` and no ports.
    let text = pair.sgctl_ok(Side::A, &["conntrack", "list"]);
    let echo = text
        .lines()
        .find(|l| l.contains("icmp id ") && l.contains("192.0.2."))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!echo.contains("192.0.2.1:"), "an echo flow has no ports: {echo}");
    for l in text.lines().filter(|l| !l.contains("2001:db8")) {
        assert!(l.len() <= 120, "{} columns: {l}", l.len());
    }
    let list: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["conntrack", "list", "--json"])).unwrap();
    let icmp = list.as_array().unwrap().iter().find(|f| f["proto"] == "icmp").expect("the echo flow");
    assert!(icmp["icmp_id"].is_u64() && icmp["sport"].is_null() && icmp["dport"].is_null(), "{icmp}");
}

#[test]
fn path_mtu_discovery_through_a_smaller_middle_hop() {
    if !require_bpf("path_mtu_discovery_through_a_smaller_middle_hop") {
        return;
    }
    let net = Routed::new();
    net.set_middle_mtu(1280);
    // A may only open TCP to B's 8080; nothing may come in but replies (and RELATED ICMP).
    let f = write_temp(
        &format!("{}-pmtu.toml", net.if_a),
        &rules(
            &net.if_a,
            "",
            r#"{ proto = "tcp", ports = "8080", to = ["198.51.100.2/32", "2001:db8:2::2/128"] }"#,
        ),
    );
    net.sgctl_a(&["apply", f.to_str().unwrap()]);
    for b in ["198.51.100.2", "2001:db8:2::2"] {
        let addr = SocketAddr::new(b.parse().unwrap(), 8080);
        let listener = run_in_ns(&net.ns_b, move || TcpListener::bind(addr).unwrap());
        let server = spawn_in_ns(&net.ns_b, move || serve_bulk(&listener));
        let t = Instant::now();
        run_in_ns(&net.ns_a, move || client_bulk(addr))
            .unwrap_or_else(|e| panic!("transfer to {b} through MTU 1280: {e}"));
        server.join().unwrap().expect("server");
        println!("1 MiB each way to {b} through a 1280-byte middle hop: {:?}", t.elapsed());
    }
    let st: serde_json::Value = serde_json::from_str(&net.sgctl_a(&["status", "--json"])).unwrap();
    let related = counter(&st, "ingress", "ct_related");
    assert!(related >= 2, "frag-needed and packet-too-big must have been accepted as related ({related})");
}

#[test]
fn tracked_flow_survives_rule_removal_and_ends_with_revoke() {
    if !require_bpf("tracked_flow_survives_rule_removal_and_ends_with_revoke") {
        return;
    }
    let pair = NetnsPair::new();
    let allow = rules(&pair.if_a, r#"{ proto = "tcp", ports = "8080", from = "192.0.2.0/24" }"#, "");
    let none = rules(&pair.if_a, "", "");
    let f_allow = write_temp(&format!("{}-allow.toml", pair.if_a), &allow);
    let f_none = write_temp(&format!("{}-none.toml", pair.if_a), &none);
    pair.sgctl_ok(Side::A, &["apply", f_allow.to_str().unwrap()]);
    let addr = SocketAddr::new(pair.addr(Side::A, false), 8080);
    let listener = run_in_ns(&pair.ns_a, move || TcpListener::bind(addr).unwrap());
    // Server: echo each message, until the peer closes (bounded).
    let server = spawn_in_ns(&pair.ns_a, move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut client =
        pair.run(Side::B, move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap());
    client.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let echo = |c: &mut TcpStream| -> bool {
        let mut buf = [0u8; 4];
        c.write_all(b"ping").is_ok() && c.read_exact(&mut buf).is_ok()
    };
    assert!(echo(&mut client), "echo before any change");
    pair.sgctl_ok(Side::A, &["apply", f_none.to_str().unwrap()]);
    assert!(echo(&mut client), "the tracked flow survives the removal of its rule (AWS)");
    assert!(connect_fails(&pair.ns_b, addr, 800), "but a new connection is refused");
    let out = pair.sgctl_ok(Side::A, &["apply", "--revoke", f_none.to_str().unwrap()]);
    assert!(out.contains("applied"), "{out}");
    assert!(!echo(&mut client), "after --revoke the flow is cut");
    let st = status(&pair);
    assert!(counter(&st, "ingress", "tcp_not_syn") >= 1, "the revoked flow's next packet was dropped as new");
    drop(client);
    server.join().unwrap();
}

#[test]
fn conntrack_cli_lists_ages_flushes_and_collects() {
    if !require_bpf("conntrack_cli_lists_ages_flushes_and_collects") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(
        &format!("{}-cli.toml", pair.if_a),
        &rules(&pair.if_a, "", r#"{ proto = "udp", ports = "53", to = "192.0.2.0/24" }"#),
    );
    pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
    let (a, b) = (pair.addr(Side::A, false), pair.addr(Side::B, false));
    // Two one-way flows (no server answers).
    for _ in 0..2 {
        let _ = udp_ask(&pair.ns_a, a, SocketAddr::new(b, 53));
    }
    let list: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["conntrack", "list", "--json"])).unwrap();
    let flows = list.as_array().unwrap();
    assert_eq!(flows.len(), 2, "{list}");
    assert!(flows.iter().all(|f| f["state"] == "new"
        && f["direction"] == "egress"
        && f["rule"].as_str().unwrap().contains("udp 53")));
    let st = status(&pair);
    assert_eq!(st["interfaces"][0]["conntrack"]["new"], 2);
    assert_eq!(st["interfaces"][0]["conntrack"]["established_capacity"], 262_144);
    // Age one flow past the UDP timeout through the pinned map (no sleeping), then gc.
    let dir = pair.pin_dir(Side::A).unwrap().join(&pair.if_a);
    pair.run(Side::A, move || {
        let mut maps = sg_userspace::maps::InstanceMaps::from_pins(&dir).unwrap();
        let (t, k, mut e) = maps.ct_entries().unwrap()[0];
        e.last_seen_ns = sg_userspace::maps::ct_now_ns() - 31_000_000_000;
        maps.ct_put(t, &k, &e).unwrap();
    });
    let all: serde_json::Value =
        serde_json::from_str(&pair.sgctl_ok(Side::A, &["conntrack", "list", "--json", "--all"])).unwrap();
    assert_eq!(all.as_array().unwrap().iter().filter(|f| f["expired"] == true).count(), 1);
    let out = pair.sgctl_ok(Side::A, &["conntrack", "gc"]);
    assert!(out.contains("removed 1 expired"), "{out}");
    let out = pair.sgctl_ok(Side::A, &["conntrack", "flush", "--proto", "tcp"]);
    assert!(out.contains("flushed 0"), "{out}");
    let out = pair.sgctl_ok(Side::A, &["conntrack", "flush", "--addr", &b.to_string()]);
    assert!(out.contains("flushed 1"), "{out}");
    assert_eq!(status(&pair)["interfaces"][0]["conntrack"]["new"], 0);
}

#[test]
fn every_connection_closed_both_ways_ends_closing() {
    if !require_bpf("every_connection_closed_both_ways_ends_closing") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(
        &format!("{}-close.toml", pair.if_a),
        &rules(&pair.if_a, r#"{ proto = "tcp", ports = "7100", from = "192.0.2.0/24" }"#, ""),
    );
    pair.sgctl_ok(Side::A, &["apply", f.to_str().unwrap()]);
    // Short connections B -> A that close at once both ways: B writes and closes; A reads to
    // the end and closes. A's ACK of B's FIN leaves from the softirq that received the FIN
    // while A's own FIN leaves from the server thread, often on the other CPU, at the same
    // moment: both update the flow's entry, and the ACK must not undo the FIN's state change
    // (the flow would stay half-closed, with the 5-day established timeout).
    const CONNS: usize = 200;
    let a = SocketAddr::new(pair.addr(Side::A, false), 7100);
    let l = pair.run(Side::A, move || TcpListener::bind(a).expect("bind"));
    let server = std::thread::spawn(move || {
        let t = Instant::now();
        let mut served = 0;
        while served < CONNS && t.elapsed() < Duration::from_secs(30) {
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).expect("read");
            assert_eq!(buf, b"bye");
            served += 1;
        }
        served
    });
    pair.run(Side::B, move || {
        for _ in 0..CONNS {
            let mut c = TcpStream::connect_timeout(&a, Duration::from_secs(2)).expect("connect");
            c.write_all(b"bye").unwrap();
        }
    });
    assert_eq!(server.join().unwrap(), CONNS);
    // The last final ACKs (B -> A) are on their way; then every flow must be closing.
    let mut states = std::collections::BTreeMap::new();
    let settled = sg_tests::wait_until(Duration::from_secs(5), || {
        let list: serde_json::Value =
            serde_json::from_str(&pair.sgctl_ok(Side::A, &["conntrack", "list", "--json"])).unwrap();
        states.clear();
        for f in list.as_array().unwrap().iter().filter(|f| f["proto"] == "tcp") {
            *states.entry(f["state"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        }
        states.get("closing") == Some(&CONNS)
    });
    assert!(settled.is_some(), "flows per state after {CONNS} closed connections: {states:?}");
}
