//! Stateful verdict tables through BPF_PROG_TEST_RUN: replies accepted only after the forward
//! packet created the flow, spoofed replies dropped, RELATED ICMP only for tracked flows,
//! expiry (by ageing entries, not sleeping), revoke, and a full table.

use std::net::IpAddr;

use sg_common::{
    Direction::{Egress, Ingress},
    IfaceConfig, Reason,
    config::CONFIG_RECORD_PARSE,
    conntrack::{CT_NEW, CT_STREAM, CT_TCP_ESTABLISHED, CT_TCP_SYN_RECV, CtEntry, CtKey},
    packet::FAMILY_IPV4,
};
use sg_tests::{
    packet::{Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
    policy::{apply, recording_instance, recording_instance_at, ruleset},
    require_bpf,
    verdict::{Row, run_sequence},
};
use sg_userspace::{
    loader::{IngressHook, PrivateInstance, Sizes},
    maps::{CtTable, FlowItem, ct_now_ns},
    rules::compile,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const HOST4: &str = "192.0.2.1";
const PEER4: &str = "192.0.2.2";
const HOST6: &str = "2001:db8::1";
const PEER6: &str = "2001:db8::2";

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Vec<u8> {
    Pkt::tcp(ip(src), ip(dst), sport, dport).flags(flags).build()
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    Pkt::udp(ip(src), ip(dst), sport, dport).payload(b"q").build()
}

/// Ingress allows tcp/8080 only; egress allows udp/53, icmp echo and tcp/443 to the peers.
const RULES: &str = r#"
[groups.g]
ingress = [ { proto = "tcp", ports = "8080", from = ["0.0.0.0/0", "::/0"] } ]
egress = [
  { proto = "udp", ports = "53", to = ["192.0.2.0/24", "2001:db8::/64"] },
  { proto = "icmp", icmp_type = 8, to = "192.0.2.0/24" },
  { proto = "icmpv6", icmp_type = 128, to = "2001:db8::/64" },
  { proto = "tcp", ports = "443", to = ["192.0.2.0/24", "2001:db8::/64"] },
]
[interfaces.eth0]
groups = ["g"]
timeouts = { tcp_established = 60, udp = 30 }
"#;

fn instance() -> PrivateInstance {
    instance_at(IngressHook::Xdp)
}

fn instance_at(hook: IngressHook) -> PrivateInstance {
    let mut inst = recording_instance_at(hook);
    apply(&mut inst, &ruleset(RULES), "eth0", 1);
    inst
}

fn entry(inst: &PrivateInstance, proto: u8) -> Vec<(CtTable, CtKey, CtEntry)> {
    inst.maps().ct_entries().unwrap().into_iter().filter(|(_, k, _)| k.proto == proto).collect()
}

#[test]
fn tcp_inbound_replies_only_after_the_forward_packet() {
    if !require_bpf("tcp_inbound_replies_only_after_the_forward_packet") {
        return;
    }
    tcp_inbound_replies(IngressHook::Xdp);
}

/// The same story with ingress decided by the TC program (`--ingress-hook tcx`).
#[test]
fn tcp_inbound_replies_only_after_the_forward_packet_with_ingress_at_tcx() {
    if !require_bpf("tcp_inbound_replies_only_after_the_forward_packet_with_ingress_at_tcx") {
        return;
    }
    tcp_inbound_replies(IngressHook::Tcx);
}

fn tcp_inbound_replies(hook: IngressHook) {
    let mut inst = instance_at(hook);
    for (peer, host) in [(PEER4, HOST4), (PEER6, HOST6)] {
        let rows = vec![
            Row::new(
                "SYN-ACK out before any SYN came in",
                Egress,
                tcp(host, 8080, peer, 40000, TCP_SYN | TCP_ACK),
                Reason::TcpNotSyn,
            ),
            Row::allow(
                "SYN in to 8080",
                Ingress,
                tcp(peer, 40000, host, 8080, TCP_SYN),
                u32::from(peer.contains(':')),
            ),
            Row::new(
                "SYN-ACK out: reply of the tracked flow",
                Egress,
                tcp(host, 8080, peer, 40000, TCP_SYN | TCP_ACK),
                Reason::CtReply,
            ),
            Row::new(
                "spoofed reply: wrong source port",
                Egress,
                tcp(host, 8081, peer, 40000, TCP_SYN | TCP_ACK),
                Reason::TcpNotSyn,
            ),
            Row::new(
                "spoofed reply: wrong destination port",
                Egress,
                tcp(host, 8080, peer, 40001, TCP_ACK),
                Reason::TcpNotSyn,
            ),
            Row::new(
                "ACK in completes the handshake",
                Ingress,
                tcp(peer, 40000, host, 8080, TCP_ACK),
                Reason::CtEstablished,
            ),
            Row::new("data out", Egress, tcp(host, 8080, peer, 40000, TCP_ACK | TCP_PSH), Reason::CtReply),
            Row::new(
                "data in",
                Ingress,
                tcp(peer, 40000, host, 8080, TCP_ACK | TCP_PSH),
                Reason::CtEstablished,
            ),
            // The initiator's tuple arriving from the wrong side (our address as source, from outside).
            Row::new(
                "the flow's reply tuple arriving at ingress",
                Ingress,
                tcp(host, 8080, peer, 40000, TCP_ACK),
                Reason::TcpNotSyn,
            ),
        ];
        run_sequence(&mut inst, "tcp inbound", &rows);
    }
    let flows = entry(&inst, 6);
    assert_eq!(flows.len(), 2, "one v4 and one v6 flow");
    for (table, k, e) in flows {
        assert_eq!((table, e.state), (CtTable::Established, CT_TCP_ESTABLISHED), "{e:?}");
        assert_eq!(e.rule, u32::from(k.family == 6), "ids: 0 = 8080 from 0.0.0.0/0, 1 = from ::/0");
        assert_eq!(e.packets, [3, 2]);
    }
}

#[test]
fn handshake_states_and_tables() {
    if !require_bpf("handshake_states_and_tables") {
        return;
    }
    let mut inst = instance();
    run_sequence(
        &mut inst,
        "syn",
        &[Row::allow("SYN out to 443", Egress, tcp(HOST4, 50000, PEER4, 443, TCP_SYN), 6)],
    );
    run_sequence(
        &mut inst,
        "syn-ack",
        &[Row::new("SYN-ACK in", Ingress, tcp(PEER4, 443, HOST4, 50000, TCP_SYN | TCP_ACK), Reason::CtReply)],
    );
    let f = entry(&inst, 6);
    assert_eq!(
        (f[0].0, f[0].2.state),
        (CtTable::New, CT_TCP_SYN_RECV),
        "half-open flows stay in the LRU table"
    );
    run_sequence(
        &mut inst,
        "ack",
        &[Row::new("ACK out", Egress, tcp(HOST4, 50000, PEER4, 443, TCP_ACK), Reason::CtEstablished)],
    );
    let f = entry(&inst, 6);
    assert_eq!(
        (f.len(), f[0].0, f[0].2.state),
        (1, CtTable::Established, CT_TCP_ESTABLISHED),
        "moved, not copied"
    );
    run_sequence(
        &mut inst,
        "close",
        &[
            Row::new(
                "FIN out",
                Egress,
                tcp(HOST4, 50000, PEER4, 443, TCP_FIN | TCP_ACK),
                Reason::CtEstablished,
            ),
            Row::new("FIN in", Ingress, tcp(PEER4, 443, HOST4, 50000, TCP_FIN | TCP_ACK), Reason::CtReply),
            Row::new("last ACK out", Egress, tcp(HOST4, 50000, PEER4, 443, TCP_ACK), Reason::CtEstablished),
            // A new connection on the same ports after the close is a new flow (and allowed).
            Row::allow(
                "new SYN on the closed flow's ports",
                Egress,
                tcp(HOST4, 50000, PEER4, 443, TCP_SYN),
                6,
            ),
            Row::new(
                "unsolicited SYN in to 443",
                Ingress,
                tcp(PEER4, 50001, HOST4, 443, TCP_SYN),
                Reason::NoRule,
            ),
        ],
    );
}

#[test]
fn udp_and_icmp_echo_outbound_v4_v6() {
    if !require_bpf("udp_and_icmp_echo_outbound_v4_v6") {
        return;
    }
    let mut inst = instance();
    for (peer, host) in [(PEER4, HOST4), (PEER6, HOST6)] {
        let (req, rep) = if peer.contains(':') { (128, 129) } else { (8, 0) };
        let rows = vec![
            Row::new("answer before the question", Ingress, udp(peer, 53, host, 40000), Reason::NoRule),
            Row::allow(
                "DNS question out",
                Egress,
                udp(host, 40000, peer, 53),
                if peer.contains(':') { 3 } else { 2 },
            ),
            Row::new("answer in", Ingress, udp(peer, 53, host, 40000), Reason::CtReply),
            Row::new("answer from another port", Ingress, udp(peer, 54, host, 40000), Reason::NoRule),
            Row::new("answer to another port", Ingress, udp(peer, 53, host, 40001), Reason::NoRule),
            Row::new(
                "answer from another host",
                Ingress,
                udp(if peer.contains(':') { "2001:db8::9" } else { "192.0.2.9" }, 53, host, 40000),
                Reason::NoRule,
            ),
            Row::new("second question", Egress, udp(host, 40000, peer, 53), Reason::CtEstablished),
            Row::new(
                "echo reply before the request",
                Ingress,
                Pkt::icmp(ip(peer), ip(host), rep, 0).build(),
                Reason::NoRule,
            ),
            Row::new(
                "echo request out",
                Egress,
                Pkt::icmp(ip(host), ip(peer), req, 0).build(),
                Reason::RuleAllow,
            ),
            Row::new(
                "echo reply in",
                Ingress,
                Pkt::icmp(ip(peer), ip(host), rep, 0).build(),
                Reason::CtReply,
            ),
        ];
        run_sequence(&mut inst, "udp + icmp", &rows);
    }
    let udp_flows = entry(&inst, 17);
    assert_eq!(udp_flows.len(), 2);
    assert!(udp_flows.iter().all(|(t, _, e)| *t == CtTable::Established && e.state == CT_STREAM));
}

#[test]
fn related_icmp_only_for_tracked_flows() {
    if !require_bpf("related_icmp_only_for_tracked_flows") {
        return;
    }
    let mut inst = instance();
    let router4 = ip("198.51.100.1");
    let router6 = ip("2001:db8:ffff::1");
    let sent4 = Pkt::tcp(ip(HOST4), ip(PEER4), 50000, 443).flags(TCP_ACK).payload(&[0; 64]);
    let sent6 = Pkt::tcp(ip(HOST6), ip(PEER6), 50000, 443).flags(TCP_ACK).payload(&[0; 64]);
    let frag_needed = |q: &Pkt| Pkt::icmp_error(router4, ip(HOST4), 3, 4, q, 28).build();
    let too_big = |q: &Pkt| Pkt::icmp_error(router6, ip(HOST6), 2, 0, q, 48).build();
    run_sequence(
        &mut inst,
        "before the flow",
        &[
            Row::new("frag-needed quoting an untracked flow", Ingress, frag_needed(&sent4), Reason::NoRule),
            Row::new("packet-too-big quoting an untracked flow", Ingress, too_big(&sent6), Reason::NoRule),
        ],
    );
    for (host, peer) in [(HOST4, PEER4), (HOST6, PEER6)] {
        run_sequence(
            &mut inst,
            "handshake",
            &[
                Row::new("SYN out", Egress, tcp(host, 50000, peer, 443, TCP_SYN), Reason::RuleAllow),
                Row::new(
                    "SYN-ACK in",
                    Ingress,
                    tcp(peer, 443, host, 50000, TCP_SYN | TCP_ACK),
                    Reason::CtReply,
                ),
            ],
        );
    }
    let other_port = Pkt::tcp(ip(HOST4), ip(PEER4), 50000, 444).flags(TCP_ACK);
    let to_elsewhere = Pkt::icmp_error(router4, ip("192.0.2.77"), 3, 4, &sent4, 28).build();
    let time_exceeded = Pkt::icmp_error(router4, ip(HOST4), 11, 0, &sent4, 28).build();
    let mut cut = frag_needed(&sent4);
    cut.truncate(cut.len() - 6);
    let l3 = 14;
    let ip_len = (cut.len() - l3) as u16;
    cut[l3 + 2..l3 + 4].copy_from_slice(&ip_len.to_be_bytes());
    run_sequence(
        &mut inst,
        "related",
        &[
            Row::new("frag-needed quoting the tracked flow", Ingress, frag_needed(&sent4), Reason::CtRelated),
            Row::new("time-exceeded quoting the tracked flow", Ingress, time_exceeded, Reason::CtRelated),
            Row::new(
                "packet-too-big quoting the tracked v6 flow",
                Ingress,
                too_big(&sent6),
                Reason::CtRelated,
            ),
            Row::new("frag-needed quoting another port", Ingress, frag_needed(&other_port), Reason::NoRule),
            Row::new("frag-needed not addressed to the quoted sender", Ingress, to_elsewhere, Reason::NoRule),
            Row::new("frag-needed with the quoted ports cut off", Ingress, cut, Reason::IcmpQuoteTruncated),
        ],
    );
}

#[test]
fn expired_flows_are_new_again() {
    if !require_bpf("expired_flows_are_new_again") {
        return;
    }
    let mut inst = instance();
    let s = 1_000_000_000u64;
    run_sequence(
        &mut inst,
        "udp question",
        &[Row::new("question out", Egress, udp(HOST4, 40000, PEER4, 53), Reason::RuleAllow)],
    );
    // Age the one-way flow: 29 s idle (udp timeout 30 s) is alive.
    let age = |inst: &mut PrivateInstance, proto: u8, idle: u64| {
        let (t, k, mut e) = entry(inst, proto)[0];
        e.last_seen_ns = ct_now_ns() - idle;
        inst.maps_mut().ct_put(t, &k, &e).unwrap();
    };
    age(&mut inst, 17, 29 * s);
    run_sequence(
        &mut inst,
        "alive",
        &[Row::new("answer after 29 s", Ingress, udp(PEER4, 53, HOST4, 40000), Reason::CtReply)],
    );
    run_sequence(
        &mut inst,
        "udp question",
        &[Row::new("question again", Egress, udp(HOST4, 40001, PEER4, 53), Reason::RuleAllow)],
    );
    let (t, k, mut e) =
        entry(&inst, 17).into_iter().find(|(_, k, _)| k.port_lo == 40001 || k.port_hi == 40001).unwrap();
    assert_eq!(e.state, CT_NEW);
    e.last_seen_ns = ct_now_ns() - 31 * s;
    inst.maps_mut().ct_put(t, &k, &e).unwrap();
    run_sequence(
        &mut inst,
        "expired",
        &[Row::new("answer after 31 s: flow gone", Ingress, udp(PEER4, 53, HOST4, 40001), Reason::NoRule)],
    );
    assert!(
        entry(&inst, 17).iter().all(|(_, k, _)| k.port_lo != 40001 && k.port_hi != 40001),
        "expired entry removed on lookup"
    );

    // TCP established with tcp_established = 60 s (set in the rules file).
    run_sequence(
        &mut inst,
        "tcp",
        &[
            Row::new("SYN in", Ingress, tcp(PEER4, 40000, HOST4, 8080, TCP_SYN), Reason::RuleAllow),
            Row::new(
                "SYN-ACK out",
                Egress,
                tcp(HOST4, 8080, PEER4, 40000, TCP_SYN | TCP_ACK),
                Reason::CtReply,
            ),
            Row::new("ACK in", Ingress, tcp(PEER4, 40000, HOST4, 8080, TCP_ACK), Reason::CtEstablished),
        ],
    );
    age(&mut inst, 6, 61 * s);
    run_sequence(
        &mut inst,
        "tcp expired",
        &[Row::new(
            "data out after 61 s idle",
            Egress,
            tcp(HOST4, 8080, PEER4, 40000, TCP_ACK),
            Reason::TcpNotSyn,
        )],
    );
}

#[test]
fn rule_removal_keeps_flows_and_revoke_ends_them() {
    if !require_bpf("rule_removal_keeps_flows_and_revoke_ends_them") {
        return;
    }
    let mut inst = instance();
    let handshake = |inst: &mut PrivateInstance, sport: u16| {
        run_sequence(
            inst,
            "handshake",
            &[
                Row::new("SYN in", Ingress, tcp(PEER4, sport, HOST4, 8080, TCP_SYN), Reason::RuleAllow),
                Row::new(
                    "SYN-ACK out",
                    Egress,
                    tcp(HOST4, 8080, PEER4, sport, TCP_SYN | TCP_ACK),
                    Reason::CtReply,
                ),
                Row::new("ACK in", Ingress, tcp(PEER4, sport, HOST4, 8080, TCP_ACK), Reason::CtEstablished),
            ],
        );
    };
    handshake(&mut inst, 40000);
    let without = ruleset(&RULES.replace(
        "ingress = [ { proto = \"tcp\", ports = \"8080\", from = [\"0.0.0.0/0\", \"::/0\"] } ]",
        "ingress = []",
    ));
    let with_other = ruleset(&RULES.replace("\"8080\"", "\"9090\""));
    let plan = |rs| compile::compile_iface(rs, "eth0").unwrap();
    // AWS: removing the rule does not cut the tracked flow; new flows are refused.
    inst.apply_plan_with(&plan(&without), 2, false).unwrap();
    run_sequence(
        &mut inst,
        "after removal",
        &[
            Row::new(
                "tracked flow survives the removal",
                Ingress,
                tcp(PEER4, 40000, HOST4, 8080, TCP_ACK),
                Reason::CtEstablished,
            ),
            Row::new("its replies too", Egress, tcp(HOST4, 8080, PEER4, 40000, TCP_ACK), Reason::CtReply),
            Row::new(
                "a new flow is refused",
                Ingress,
                tcp(PEER4, 40001, HOST4, 8080, TCP_SYN),
                Reason::NoRule,
            ),
        ],
    );
    // --revoke: the flow is checked against the new rules on its next packet, and ends.
    inst.apply_plan_with(&plan(&with_other), 3, true).unwrap();
    run_sequence(
        &mut inst,
        "after revoke",
        &[
            Row::new(
                "revoked flow: its next packet is new, not a SYN",
                Ingress,
                tcp(PEER4, 40000, HOST4, 8080, TCP_ACK),
                Reason::TcpNotSyn,
            ),
            Row::new("and stays gone", Egress, tcp(HOST4, 8080, PEER4, 40000, TCP_ACK), Reason::TcpNotSyn),
        ],
    );
    assert!(entry(&inst, 6).is_empty(), "the revoked flow's entry is deleted");
    // A flow the new rules still allow survives a revoke.
    let back = ruleset(RULES);
    inst.apply_plan_with(&plan(&back), 4, false).unwrap();
    handshake(&mut inst, 40002);
    inst.apply_plan_with(&plan(&back), 5, true).unwrap();
    run_sequence(
        &mut inst,
        "still allowed",
        &[Row::new(
            "re-validated flow continues",
            Ingress,
            tcp(PEER4, 40002, HOST4, 8080, TCP_ACK),
            Reason::CtEstablished,
        )],
    );
    let e = entry(&inst, 6)[0].2;
    assert_eq!(e.policy_seq, 5, "re-validation stamps the flow with the new rule set");
}

/// A revoke re-checks a tracked flow with the key a new packet of it would get: an ICMPv6
/// echo carried over IPv4 (protocol 58 in an IPv4 header) has no ICMPv6 type in its key (the
/// type means something only in its own family), so a rule for ICMPv6 type 128 does not keep
/// it, as it would not admit it.
#[test]
fn revoke_rechecks_with_the_key_a_new_packet_gets() {
    if !require_bpf("revoke_rechecks_with_the_key_a_new_packet_gets") {
        return;
    }
    let mut inst = recording_instance();
    let rules = |ingress: &str| {
        ruleset(&format!("[groups.g]\ningress = [ {ingress} ]\n[interfaces.eth0]\ngroups = [\"g\"]\n"))
    };
    apply(&mut inst, &rules(r#"{ proto = "58", from = "192.0.2.0/24" }"#), "eth0", 1);
    // An ICMPv6 echo request (type 128, id 0x4242) as the payload of protocol 58 over IPv4.
    let echo_id = |src: &str, dst: &str, ty: u8, id: u8| {
        Pkt::raw(ip(src), ip(dst), 58, &[ty, 0, 0, 0, 0x42, id, 0, 1]).build()
    };
    let echo = |src: &str, dst: &str, ty: u8| echo_id(src, dst, ty, 0x42);
    run_sequence(
        &mut inst,
        "protocol 58 over IPv4, allowed by protocol",
        &[
            Row::new("request in", Ingress, echo(PEER4, HOST4, 128), Reason::RuleAllow),
            Row::new("reply out", Egress, echo(HOST4, PEER4, 129), Reason::CtReply),
        ],
    );
    let typed = rules(r#"{ proto = "icmpv6", icmp_type = 128, from = "192.0.2.0/24" }"#);
    inst.apply_plan_with(&compile::compile_iface(&typed, "eth0").unwrap(), 2, true).unwrap();
    run_sequence(
        &mut inst,
        "after a revoke to icmpv6 type 128",
        &[
            Row::new("a new one is not admitted", Ingress, echo_id(PEER4, HOST4, 128, 0x43), Reason::NoRule),
            Row::new("so the tracked one is not kept", Ingress, echo(PEER4, HOST4, 128), Reason::NoRule),
        ],
    );
}

#[test]
fn full_table_drops_new_flows_and_keeps_established_ones() {
    if !require_bpf("full_table_drops_new_flows_and_keeps_established_ones") {
        return;
    }
    let cfg = IfaceConfig { flags: CONFIG_RECORD_PARSE, ..IfaceConfig::default() };
    let mut inst =
        PrivateInstance::load_sized(&cfg, Sizes { established: 4, new: 8, ..Sizes::default() }).unwrap();
    apply(&mut inst, &ruleset(RULES), "eth0", 1);
    // Four UDP streams fill the established table.
    for p in 0..4u16 {
        run_sequence(
            &mut inst,
            "fill",
            &[
                Row::new("question", Egress, udp(HOST4, 41000 + p, PEER4, 53), Reason::RuleAllow),
                Row::new("answer", Ingress, udp(PEER4, 53, HOST4, 41000 + p), Reason::CtReply),
            ],
        );
    }
    run_sequence(
        &mut inst,
        "full",
        &[
            Row::new(
                "fifth question: one-way flows go to the LRU table",
                Egress,
                udp(HOST4, 42000, PEER4, 53),
                Reason::RuleAllow,
            ),
            Row::new(
                "its answer cannot join the full table",
                Ingress,
                udp(PEER4, 53, HOST4, 42000),
                Reason::CtFull,
            ),
        ],
    );
    // A flood of new flows (SYNs out, never answered) churns only the LRU table.
    for p in 0..200u16 {
        inst.run(Egress, &tcp(HOST4, 30000 + p, PEER4, 443, TCP_SYN)).unwrap();
    }
    for p in 0..4u16 {
        run_sequence(
            &mut inst,
            "kept",
            &[Row::new(
                "established flow still works",
                Ingress,
                udp(PEER4, 53, HOST4, 41000 + p),
                Reason::CtReply,
            )],
        );
    }
    let all = inst.maps().ct_entries().unwrap();
    let est = all.iter().filter(|(t, _, _)| *t == CtTable::Established).count();
    let new = all.len() - est;
    println!("full table: {est} established kept, {new} of 201 unanswered flows in the 8-entry LRU table");
    assert_eq!(est, 4);
    assert!(new <= 8 + 2, "LRU table overfull: {new}");
    assert_eq!(FAMILY_IPV4, all[0].1.family);
}

/// Measures what the kernel's LRU does in `SG_CT_NEW` under a flood: 256 slots per CPU (the
/// table keeps one LRU list per CPU, each holding its share), 64 "hot" one-way flows that keep
/// sending, 2,000 new flows arriving. The kernel LRU (a reference bit set on lookup, eviction
/// from the inactive tail first) tends to keep recently used entries; it is approximate, which
/// is why flows that saw both directions live in `SG_CT`, where nothing is evicted.
#[test]
fn lru_eviction_under_a_flood_is_measured() {
    if !require_bpf("lru_eviction_under_a_flood_is_measured") {
        return;
    }
    let cfg = IfaceConfig { flags: CONFIG_RECORD_PARSE, ..IfaceConfig::default() };
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    let mut inst =
        PrivateInstance::load_sized(&cfg, Sizes { established: 1024, new: 256 * cpus, ..Sizes::default() })
            .unwrap();
    let open = ruleset(&RULES.replace("\"tcp\", ports = \"443\"", "\"all\""));
    apply(&mut inst, &open, "eth0", 1);
    let hot: Vec<u16> = (0..64).collect();
    for p in &hot {
        inst.run(Egress, &udp(HOST4, 20000 + p, PEER4, 53)).unwrap();
    }
    for round in 0..20u16 {
        for p in 0..100u16 {
            inst.run(Egress, &tcp(HOST4, 1000 + round * 100 + p, PEER4, 9, TCP_SYN)).unwrap();
        }
        for p in &hot {
            inst.run(Egress, &udp(HOST4, 20000 + p, PEER4, 53)).unwrap();
        }
    }
    let all = inst.maps().ct_entries().unwrap();
    // A hot flow never evicted counted all its 21 packets; an evicted one was re-created by a
    // later packet (the rules admit it again) and counts fewer.
    let never_evicted = all.iter().filter(|(_, k, e)| k.proto == 17 && e.packets[0] == 21).count();
    let flood_left = all.iter().filter(|(_, k, _)| k.proto == 6).count();
    println!(
        "LRU measurement: 256 slots per CPU, 2,000 new flows: {never_evicted} of 64 active flows never evicted, {flood_left} flood entries resident"
    );
    assert!(all.len() <= 256 * cpus as usize, "LRU table holds at most its size: {}", all.len());
    assert_eq!(
        all.iter().filter(|(_, k, _)| k.proto == 17).count(),
        64,
        "every hot flow is tracked at the end"
    );
}

/// The presence filter (`SG_CT_SEEN`): the datapath marks a flow when it inserts it; a
/// rebuild keeps live flows marked and clears the slots of ended ones; a flow whose slot was
/// wrongly cleared is not let through by mistake (its packets go to the rules, which drop the
/// reply: the filter can only cost lookups or drop, never admit).
#[test]
fn presence_filter_marks_flows_and_rebuild_keeps_live_ones() {
    if !require_bpf("presence_filter_marks_flows_and_rebuild_keeps_live_ones") {
        return;
    }
    let mut inst = instance();
    inst.maps_mut().ct_flush().unwrap();
    inst.maps_mut().seen_rebuild().unwrap();
    run_sequence(
        &mut inst,
        "question",
        &[Row::allow("question out", Egress, udp(HOST4, 41000, PEER4, 53), 2)],
    );
    let (_, k, _) = entry(&inst, 17)[0];
    assert_eq!(inst.maps().seen_banks(&k), [true, true], "an inserted flow is marked in both banks");
    // A rebuild zeroed bank 1 and its enumeration missed the flow as it moved from SG_CT_NEW
    // to SG_CT: the move marks it again, or the next rebuild's zeroing of bank 0 would hide it.
    inst.maps_mut().seen_zero_bank(1);
    let rows = vec![
        Row::new("answer in", Ingress, udp(PEER4, 53, HOST4, 41000), Reason::CtReply),
        Row::allow("second flow out", Egress, udp(HOST4, 41001, PEER4, 53), 2),
    ];
    run_sequence(&mut inst, "flows to mark", &rows);
    let (t, _, _) = *entry(&inst, 17).iter().find(|(_, key, _)| *key == k).unwrap();
    assert_eq!(t, CtTable::Established, "the answer moved the flow");
    assert_eq!(inst.maps().seen_banks(&k), [true, true], "the move marks both banks");
    let flows = entry(&inst, 17);
    assert_eq!(flows.len(), 2);
    assert!(flows.iter().all(|(_, k, _)| inst.maps().seen_marked(k)), "inserted flows are marked");

    // End the second flow; the rebuild clears its slot and keeps the first one's.
    let (t, gone, _) = *flows.iter().find(|(_, k, _)| k.port_lo == 41001 || k.port_hi == 41001).unwrap();
    inst.maps_mut().ct_remove(t, &gone).unwrap();
    let st = inst.maps_mut().seen_rebuild().unwrap();
    assert_eq!(st.flows, 1);
    assert!(st.filled[0] >= 1 && st.filled[1] >= 1 && st.filled[0] <= 2);
    assert!(!inst.maps().seen_marked(&gone), "an ended flow's slot is cleared");
    let (_, live, _) = entry(&inst, 17)[0];
    assert!(inst.maps().seen_marked(&live));
    run_sequence(
        &mut inst,
        "after the rebuild",
        &[Row::new("answer of the live flow", Ingress, udp(PEER4, 53, HOST4, 41000), Reason::CtReply)],
    );

    // ct_put (how tests age entries) marks like the datapath.
    let (t, k, e) = entry(&inst, 17)[0];
    inst.maps_mut().ct_remove(t, &k).unwrap();
    inst.maps_mut().seen_rebuild().unwrap();
    assert!(!inst.maps().seen_marked(&k));
    run_sequence(
        &mut inst,
        "flow unknown to table and filter",
        &[Row::new("answer of no flow", Ingress, udp(PEER4, 53, HOST4, 41000), Reason::NoRule)],
    );
    inst.maps_mut().ct_put(t, &k, &e).unwrap();
    assert!(inst.maps().seen_marked(&k));
    run_sequence(
        &mut inst,
        "flow put back",
        &[Row::new("answer again", Ingress, udp(PEER4, 53, HOST4, 41000), Reason::CtReply)],
    );
}

/// The `EV_END` items of the instance's flow-log ring buffer (accept and reject events are
/// skipped).
fn ends(inst: &mut PrivateInstance) -> Vec<sg_common::flowlog::FlowEnd> {
    inst.flow_items()
        .into_iter()
        .filter_map(|it| match it {
            FlowItem::End(e) => Some(e),
            FlowItem::Event(_) => None,
        })
        .collect()
}

#[test]
fn flows_the_datapath_ends_are_flow_log_events() {
    if !require_bpf("flows_the_datapath_ends_are_flow_log_events") {
        return;
    }
    use sg_common::flowlog::{END_EXPIRED, END_REUSED, EV_END, FlowLogConfig};
    let mut inst = instance();
    let handshake = |inst: &mut PrivateInstance, sport: u16| {
        run_sequence(
            inst,
            "handshake",
            &[
                Row::new("SYN in", Ingress, tcp(PEER4, sport, HOST4, 8080, TCP_SYN), Reason::RuleAllow),
                Row::new(
                    "SYN-ACK out",
                    Egress,
                    tcp(HOST4, 8080, PEER4, sport, TCP_SYN | TCP_ACK),
                    Reason::CtReply,
                ),
                Row::new("ACK in", Ingress, tcp(PEER4, sport, HOST4, 8080, TCP_ACK), Reason::CtEstablished),
            ],
        );
        let (t, k, e) =
            *entry(inst, 6).iter().find(|(_, k, _)| k.port_lo == sport || k.port_hi == sport).unwrap();
        assert_eq!((t, e.packets), (CtTable::Established, [2, 1]));
        (k, e)
    };
    let age = |inst: &mut PrivateInstance, k: &CtKey, e: &CtEntry, idle_s: u64| {
        let e = CtEntry { last_seen_ns: ct_now_ns() - idle_s * 1_000_000_000, ..*e };
        inst.maps_mut().ct_put(CtTable::Established, k, &e).unwrap();
        e
    };
    let late_ack = |sport| {
        Row::new("ACK after the timeout", Ingress, tcp(PEER4, sport, HOST4, 8080, TCP_ACK), Reason::RuleAllow)
    };

    // (The rules allow tcp/8080 in, so the late ACK passes untracked, as `rule_allow`.)
    // Flow logs off: an expired flow is deleted on lookup and nothing is emitted.
    let (k, e) = handshake(&mut inst, 41000);
    age(&mut inst, &k, &e, 61);
    run_sequence(&mut inst, "flow logs off", &[late_ack(41000)]);
    assert!(entry(&inst, 6).is_empty(), "deleted on lookup");
    assert!(inst.flow_items().is_empty(), "no event without CONFIG_FLOW_LOG");

    // Flow logs on: the deletion is an EV_END with the flow's last counters.
    inst.set_flow_log(&FlowLogConfig::new(0, 0, 0, 0)).unwrap();
    let (k, e) = handshake(&mut inst, 41001);
    let aged = age(&mut inst, &k, &e, 61);
    run_sequence(&mut inst, "flow logs on", &[late_ack(41001)]);
    let got = ends(&mut inst);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].kind, got[0].cause, got[0].dir), (EV_END, END_EXPIRED, Ingress as u8));
    assert_eq!((got[0].key, got[0].entry), (k, aged), "the key and the entry as they were deleted");

    // A SYN on the ports of a reset connection ends it (and starts the new one).
    let (k, _) = handshake(&mut inst, 41002);
    run_sequence(
        &mut inst,
        "reset and reuse",
        &[
            Row::new(
                "RST in",
                Ingress,
                tcp(PEER4, 41002, HOST4, 8080, TCP_RST | TCP_ACK),
                Reason::CtEstablished,
            ),
            Row::new("SYN again", Ingress, tcp(PEER4, 41002, HOST4, 8080, TCP_SYN), Reason::RuleAllow),
        ],
    );
    let got = ends(&mut inst);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].cause, got[0].key, got[0].entry.packets), (END_REUSED, k, [3, 1]));
    assert_eq!(got[0].entry.state, sg_common::conntrack::CT_TCP_CLOSED);
}
