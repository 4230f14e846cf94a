//! Enabling sgctl on a host that already has connections (issue 30): a connection the policy
//! would have allowed in its true direction keeps working in both directions and is tracked
//! from then on; one it would not have allowed is cut. Real sockets in two namespaces, IPv4
//! and IPv6; A is the host sgctl is enabled on, B its peer.
//!
//! Each kept connection is one that dies without adoption: its next packet into A is not a
//! flow start (a TCP segment without SYN, a UDP datagram pushed by the server).

use std::{net::SocketAddr, time::Duration};

use sg_tests::{
    netns::{NetnsPair, Side},
    probes::{TcpPing, UdpPush},
    require_bpf, write_temp,
};

const EVERY: Duration = Duration::from_millis(50);

/// The policy: AWS default egress (allow all), ingress only tcp 7000 from the peers.
fn rules(iface: &str) -> String {
    format!(
        "[groups.web]\ningress = [ {{ proto = \"tcp\", ports = \"7000\", from = [\"192.0.2.0/24\", \"2001:db8::/64\"] }} ]\n\n\
         [interfaces.{iface}]\ngroups = [\"web\"]\n"
    )
}

fn addr(pair: &NetnsPair, side: Side, v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(pair.addr(side, v6), port)
}

fn enable_keeps_what_the_policy_allows(v6: bool) {
    let pair = NetnsPair::new();
    // Outbound TCP (A opened it) and outbound UDP (A said hello, B pushes).
    let out_tcp = TcpPing::start(&pair.ns_b, addr(&pair, Side::B, v6, 9000), &pair.ns_a, None, EVERY);
    let out_udp = UdpPush::start(&pair.ns_b, addr(&pair, Side::B, v6, 9053), &pair.ns_a, EVERY);
    // Inbound sessions (B opened them): to the allowed port 7000, and to 7001 which no rule opens.
    let in_allowed = TcpPing::start(&pair.ns_a, addr(&pair, Side::A, v6, 7000), &pair.ns_b, None, EVERY);
    let in_denied = TcpPing::start(&pair.ns_a, addr(&pair, Side::A, v6, 7001), &pair.ns_b, None, EVERY);

    // Every connection is up and has made round trips before sgctl is enabled (on a loaded
    // machine a probe's thread may not have connected yet, and its socket would not be there
    // to adopt).
    for (what, p) in [
        ("outbound TCP", &out_tcp),
        ("inbound TCP to 7000", &in_allowed),
        ("inbound TCP to 7001", &in_denied),
    ] {
        assert!(p.wait_rounds(3, Duration::from_secs(10)), "{what} never started");
    }
    assert!(
        sg_tests::wait_until(Duration::from_secs(10), || out_udp.received() >= 3).is_some(),
        "the outbound UDP stream never started"
    );
    let f = write_temp(&format!("{}-enable.toml", pair.if_a), &rules(&pair.if_a));
    let out = pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
    let denied_rounds = in_denied.rounds();

    // Each kept one goes on for a while under enforcement.
    for (what, p) in [("outbound TCP", &out_tcp), ("inbound TCP to 7000", &in_allowed)] {
        assert!(p.wait_rounds(10, Duration::from_secs(10)), "{what} stopped after the enable");
    }
    let before = out_udp.received();
    assert!(
        sg_tests::wait_until(Duration::from_secs(5), || out_udp.received() >= before + 10).is_some(),
        "the outbound UDP stream stopped after the enable"
    );
    // The connection to 7001 made no round trip since (one may have been in flight).
    assert!(
        in_denied.rounds() <= denied_rounds + 1,
        "the inbound connection to a port no rule allows went on"
    );
    let (tcp, udp, kept, cut) = (out_tcp.finish(), out_udp.finish(), in_allowed.finish(), in_denied.finish());
    assert_eq!(tcp.error, None, "outbound TCP: {tcp:?}");
    assert_eq!(kept.error, None, "inbound TCP to an allowed port: {kept:?}");
    assert!(udp.1 > 10, "outbound UDP: {udp:?}");
    assert!(cut.error.is_some(), "the inbound connection to a port no rule allows was not cut: {cut:?}");
    assert!(out.contains("existing connections: 3 adopted"), "{out}");
    assert!(out.contains("1 not (the policy would not have allowed them"), "{out}");

    // Tracked from then on, and shown as adopted.
    let st = pair.status_json();
    let ct = &st["interfaces"][0]["conntrack"];
    assert!(ct["adopted"].as_u64().expect("adopted") >= 2, "{ct}");
    let list = pair.sgctl_ok(Side::A, &["conntrack", "list", "--json"]);
    let flows: serde_json::Value = serde_json::from_str(&list).expect("json");
    let ports: Vec<u64> =
        flows.as_array().expect("flows").iter().filter_map(|f| f["dport"].as_u64()).collect();
    for p in [9000, 9053, 7000] {
        assert!(ports.contains(&p), "no tracked flow to port {p}: {list}");
    }
    assert!(!ports.contains(&7001), "the refused connection is tracked: {list}");
}

#[test]
fn enable_keeps_allowed_connections_v4() {
    if !require_bpf("enable_keeps_allowed_connections_v4") {
        return;
    }
    enable_keeps_what_the_policy_allows(false);
}

#[test]
fn enable_keeps_allowed_connections_v6() {
    if !require_bpf("enable_keeps_allowed_connections_v6") {
        return;
    }
    enable_keeps_what_the_policy_allows(true);
}

/// `sgctl attach` (postures, no rules) adopts too: ingress deny, egress allow keeps the
/// outbound connection and cuts the inbound one.
#[test]
fn attach_with_postures_adopts_by_posture() {
    if !require_bpf("attach_with_postures_adopts_by_posture") {
        return;
    }
    let pair = NetnsPair::new();
    let out_tcp = TcpPing::start(&pair.ns_b, addr(&pair, Side::B, false, 9000), &pair.ns_a, None, EVERY);
    let in_tcp = TcpPing::start(&pair.ns_a, addr(&pair, Side::A, false, 7000), &pair.ns_b, None, EVERY);
    let out = pair.sgctl_ok(Side::A, &["attach", &pair.if_a]);
    let in_rounds = in_tcp.rounds();
    assert!(out_tcp.wait_rounds(10, Duration::from_secs(10)), "outbound TCP stopped after attach");
    assert!(in_tcp.rounds() <= in_rounds + 1, "the inbound connection went on under ingress deny");
    let (kept, cut) = (out_tcp.finish(), in_tcp.finish());
    assert_eq!(kept.error, None, "{kept:?}");
    assert!(cut.error.is_some(), "the inbound connection survived an ingress deny: {cut:?}");
    assert!(out.contains("existing connections: 1 adopted"), "{out}");
}
