//! Attacks on conntrack's state, packet by packet through BPF_PROG_TEST_RUN (issue 36): each
//! test sends what an attacker sends and checks the verdicts and what the tables hold after.
//! Every one of them failed on the datapath of commit 47437fc.
//!
//! 1. SYN then RST from the same side (and unanswered flows) never reach `SG_CT`; a full
//!    `SG_CT` gives back its expired flows without a userspace sweep.
//! 2. A blind RST or FIN (outside the flow's sequence space) changes nothing.
//! 3. A packet from outside with one of the interface's own addresses as its source creates
//!    no state.
//! 4. A peer's own echo request does not ride the host's ping.
//! 5. An ICMP error quoting an ICMP error is never related.
//! 6. The IPv6 Mobility Header is an upper-layer protocol, judged as itself.

use std::net::IpAddr;

use sg_common::{
    Direction::{Egress, Ingress},
    Reason,
    conntrack::{CT_TCP_CLOSED, CT_TCP_ESTABLISHED, CtEntry},
};
use sg_tests::{
    packet::{Pkt, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    policy::{apply, recording_instance, ruleset},
    require_bpf,
    verdict::{Row, run_sequence},
};
use sg_userspace::{
    loader::{PrivateInstance, Sizes},
    maps::{CtTable, ct_now_ns},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const HOST4: &str = "192.0.2.1";
const PEER4: &str = "192.0.2.2";
const HOST6: &str = "2001:db8::1";
const PEER6: &str = "2001:db8::2";

/// Ingress: tcp 8080 from the peers; egress: udp 53, echo requests, tcp 443.
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
"#;

fn instance_sized(sizes: Sizes) -> PrivateInstance {
    let cfg = sg_common::IfaceConfig {
        flags: sg_common::config::CONFIG_RECORD_PARSE,
        ..sg_common::IfaceConfig::default()
    };
    let mut inst = PrivateInstance::load_sized(&cfg, sizes).expect("load");
    apply(&mut inst, &ruleset(RULES), "eth0", 1);
    inst
}

fn instance() -> PrivateInstance {
    let mut inst = recording_instance();
    apply(&mut inst, &ruleset(RULES), "eth0", 1);
    inst
}

/// A TCP segment `src:sport -> dst:dport` with `flags`, `seq` and `ack`.
fn seg(src: &str, sport: u16, dst: &str, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    Pkt::tcp(ip(src), ip(dst), sport, dport).flags(flags).seq(seq).ack(ack).build()
}

fn tables(inst: &PrivateInstance, proto: u8) -> Vec<(CtTable, CtEntry)> {
    inst.maps()
        .ct_entries()
        .unwrap()
        .into_iter()
        .filter(|(_, k, _)| k.proto == proto)
        .map(|(t, _, e)| (t, e))
        .collect()
}

#[test]
fn syn_then_rst_never_fills_the_table_that_is_never_evicted() {
    if !require_bpf("syn_then_rst_never_fills_the_table_that_is_never_evicted") {
        return;
    }
    let mut inst = instance_sized(Sizes { established: 32, new: 4096, ..Sizes::default() });
    // 48 SYN+RST pairs from the attacker's own address, to the open port.
    for p in 0..48u16 {
        run_sequence(
            &mut inst,
            "syn+rst",
            &[
                Row::new(
                    "SYN",
                    Ingress,
                    seg(PEER4, 20000 + p, HOST4, 8080, TCP_SYN, 7000, 0),
                    Reason::RuleAllow,
                ),
                Row::new(
                    "RST from the same side",
                    Ingress,
                    seg(PEER4, 20000 + p, HOST4, 8080, TCP_RST, 7001, 0),
                    Reason::CtEstablished,
                ),
            ],
        );
    }
    let flows = tables(&inst, 6);
    assert!(flows.iter().all(|(t, e)| *t == CtTable::New && e.state == CT_TCP_CLOSED), "{flows:?}");
    // A real handshake still joins SG_CT.
    run_sequence(
        &mut inst,
        "a real connection",
        &[
            Row::new("SYN", Ingress, seg(PEER4, 30000, HOST4, 8080, TCP_SYN, 100, 0), Reason::RuleAllow),
            Row::new(
                "SYN-ACK",
                Egress,
                seg(HOST4, 8080, PEER4, 30000, TCP_SYN | TCP_ACK, 900, 101),
                Reason::CtReply,
            ),
            Row::new(
                "ACK",
                Ingress,
                seg(PEER4, 30000, HOST4, 8080, TCP_ACK, 101, 901),
                Reason::CtEstablished,
            ),
        ],
    );
    let est: Vec<_> = tables(&inst, 6).into_iter().filter(|(t, _)| *t == CtTable::Established).collect();
    assert_eq!(est.len(), 1, "only the answered connection is in SG_CT: {est:?}");
    // A UDP flow nobody answers stays evictable too.
    inst.run(Egress, &Pkt::udp(ip(HOST4), ip(PEER4), 41000, 53).payload(b"q").build()).unwrap();
    assert!(tables(&inst, 17).iter().all(|(t, _)| *t == CtTable::New));
}

#[test]
fn a_full_table_gives_back_expired_flows_without_a_sweep() {
    if !require_bpf("a_full_table_gives_back_expired_flows_without_a_sweep") {
        return;
    }
    let mut inst = instance_sized(Sizes { established: 4, new: 64, ..Sizes::default() });
    let udp =
        |src: &str, sport, dst: &str, dport| Pkt::udp(ip(src), ip(dst), sport, dport).payload(b"q").build();
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
    // The four flows expire (idle beyond the UDP stream timeout), nobody sweeps.
    let old = ct_now_ns() - 3_600 * 1_000_000_000;
    for (t, k, e) in inst.maps().ct_entries().unwrap() {
        inst.maps_mut().ct_put(t, &k, &CtEntry { last_seen_ns: old, ..e }).unwrap();
    }
    run_sequence(
        &mut inst,
        "full of expired flows",
        &[
            Row::new("a new question", Egress, udp(HOST4, 42000, PEER4, 53), Reason::RuleAllow),
            Row::new(
                "its answer meets the full table, which gives back what expired",
                Ingress,
                udp(PEER4, 53, HOST4, 42000),
                Reason::CtFull,
            ),
            Row::new("the next answer joins it", Ingress, udp(PEER4, 53, HOST4, 42000), Reason::CtReply),
        ],
    );
    let est: Vec<_> = tables(&inst, 17).into_iter().filter(|(t, _)| *t == CtTable::Established).collect();
    assert_eq!(est.len(), 1, "the expired flows were given back: {est:?}");
}

fn blind_resets(host: &str, peer: &str) {
    let mut inst = instance();
    // A connection in: the peer's ISN 5000, the host's 9000.
    run_sequence(
        &mut inst,
        "handshake",
        &[
            Row::new("SYN", Ingress, seg(peer, 40000, host, 8080, TCP_SYN, 5000, 0), Reason::RuleAllow),
            Row::new(
                "SYN-ACK",
                Egress,
                seg(host, 8080, peer, 40000, TCP_SYN | TCP_ACK, 9000, 5001),
                Reason::CtReply,
            ),
            Row::new(
                "ACK",
                Ingress,
                seg(peer, 40000, host, 8080, TCP_ACK, 5001, 9001),
                Reason::CtEstablished,
            ),
        ],
    );
    run_sequence(
        &mut inst,
        "blind",
        &[
            Row::new(
                "an RST far outside the host's sequence space",
                Ingress,
                seg(peer, 40000, host, 8080, TCP_RST, 123_456_789, 0),
                Reason::TcpSeqInvalid,
            ),
            Row::new(
                "a FIN far outside it",
                Ingress,
                seg(peer, 40000, host, 8080, TCP_FIN | TCP_ACK, 2_000_000_000, 9001),
                Reason::TcpSeqInvalid,
            ),
            Row::new(
                "a SYN from the initiator does not tear the flow down",
                Ingress,
                seg(peer, 40000, host, 8080, TCP_SYN, 77, 0),
                Reason::CtEstablished,
            ),
            Row::new(
                "the connection goes on",
                Egress,
                seg(host, 8080, peer, 40000, TCP_ACK, 9001, 5001),
                Reason::CtReply,
            ),
        ],
    );
    let flows = tables(&inst, 6);
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].0, flows[0].1.state), (CtTable::Established, CT_TCP_ESTABLISHED), "{flows:?}");
    // An RST at the sequence number the peer is at is the real end.
    run_sequence(
        &mut inst,
        "real",
        &[Row::new(
            "an RST in the window",
            Ingress,
            seg(peer, 40000, host, 8080, TCP_RST, 5001, 0),
            Reason::CtEstablished,
        )],
    );
    assert_eq!(tables(&inst, 6)[0].1.state, CT_TCP_CLOSED);
}

#[test]
fn a_blind_rst_or_fin_changes_nothing_v4() {
    if !require_bpf("a_blind_rst_or_fin_changes_nothing_v4") {
        return;
    }
    blind_resets(HOST4, PEER4);
}

#[test]
fn a_blind_rst_or_fin_changes_nothing_v6() {
    if !require_bpf("a_blind_rst_or_fin_changes_nothing_v6") {
        return;
    }
    blind_resets(HOST6, PEER6);
}

#[test]
fn a_handshake_is_reset_only_by_a_refusal_of_its_syn() {
    if !require_bpf("a_handshake_is_reset_only_by_a_refusal_of_its_syn") {
        return;
    }
    let mut inst = instance();
    run_sequence(
        &mut inst,
        "handshake reset",
        &[
            Row::new(
                "the host's SYN",
                Egress,
                seg(HOST4, 41000, PEER4, 443, TCP_SYN, 3000, 0),
                Reason::RuleAllow,
            ),
            Row::new(
                "an RST not acknowledging it",
                Ingress,
                seg(PEER4, 443, HOST4, 41000, TCP_RST | TCP_ACK, 0, 55),
                Reason::TcpSeqInvalid,
            ),
            Row::new(
                "the peer's refusal",
                Ingress,
                seg(PEER4, 443, HOST4, 41000, TCP_RST | TCP_ACK, 0, 3001),
                Reason::CtReply,
            ),
        ],
    );
}

#[test]
fn a_packet_with_the_hosts_own_source_creates_no_state() {
    if !require_bpf("a_packet_with_the_hosts_own_source_creates_no_state") {
        return;
    }
    let mut inst = instance();
    inst.maps_mut().set_local_addrs(&[ip(HOST4), ip(HOST6)]).unwrap();
    let rows = [
        Row::new(
            "a SYN from outside claiming the host's address",
            Ingress,
            seg(HOST4, 443, HOST4, 8080, TCP_SYN, 1, 0),
            Reason::SrcIsLocal,
        ),
        Row::new(
            "a UDP answer from outside claiming the host's address",
            Ingress,
            Pkt::udp(ip(HOST6), ip(HOST6), 53, 41000).payload(b"a").build(),
            Reason::SrcIsLocal,
        ),
    ];
    run_sequence(&mut inst, "own address", &rows);
    assert!(inst.maps().ct_entries().unwrap().is_empty(), "state was created");
    // The host's own connection on that tuple is then its own.
    run_sequence(
        &mut inst,
        "the host's connection",
        &[
            Row::new(
                "the host's SYN",
                Egress,
                seg(HOST4, 8080, PEER4, 443, TCP_SYN, 10, 0),
                Reason::RuleAllow,
            ),
            Row::new(
                "the answer",
                Ingress,
                seg(PEER4, 443, HOST4, 8080, TCP_SYN | TCP_ACK, 20, 11),
                Reason::CtReply,
            ),
        ],
    );
}

fn echo(src: &str, dst: &str, icmp_type: u8) -> Vec<u8> {
    Pkt::icmp(ip(src), ip(dst), icmp_type, 0).build()
}

#[test]
fn a_peers_echo_request_does_not_ride_the_hosts_ping() {
    if !require_bpf("a_peers_echo_request_does_not_ride_the_hosts_ping") {
        return;
    }
    let mut inst = instance();
    for (host, peer, request, reply) in [(HOST4, PEER4, 8, 0), (HOST6, PEER6, 128, 129)] {
        run_sequence(
            &mut inst,
            "ping",
            &[
                Row::new("the host pings the peer", Egress, echo(host, peer, request), Reason::RuleAllow),
                Row::new(
                    "the peer's own echo request with the same identifier",
                    Ingress,
                    echo(peer, host, request),
                    Reason::NoRule,
                ),
                Row::new("the peer's echo reply", Ingress, echo(peer, host, reply), Reason::CtReply),
            ],
        );
    }
}

#[test]
fn an_icmp_error_quoting_an_icmp_error_is_not_related() {
    if !require_bpf("an_icmp_error_quoting_an_icmp_error_is_not_related") {
        return;
    }
    let mut inst = instance();
    inst.run(Egress, &echo(HOST4, PEER4, 8)).unwrap();
    // An unreachable quoting an unreachable whose bytes 4-5 equal the ping's identifier.
    let inner_error = Pkt::icmp(ip(HOST4), ip(PEER4), 3, 1);
    let outer = Pkt::icmp_error(ip("198.51.100.1"), ip(HOST4), 3, 1, &inner_error, 28).build();
    // The quoted echo request itself is related.
    let ping = Pkt::icmp(ip(HOST4), ip(PEER4), 8, 0);
    let related = Pkt::icmp_error(ip("198.51.100.1"), ip(HOST4), 3, 1, &ping, 28).build();
    run_sequence(
        &mut inst,
        "quoted",
        &[
            Row::new("an error quoting an error", Ingress, outer, Reason::NoRule),
            Row::new("an error quoting the ping", Ingress, related, Reason::CtRelated),
        ],
    );
}

#[test]
fn the_mobility_header_is_judged_as_itself() {
    if !require_bpf("the_mobility_header_is_judged_as_itself") {
        return;
    }
    let mut inst = instance();
    // A Mobility Header (next header 135) with a TCP port 8080 header behind it.
    let mut mh = vec![6u8, 0, 0, 0, 0, 0, 0, 0];
    mh.extend(Pkt::tcp(ip(PEER6), ip(HOST6), 40000, 8080).syn().build()[54..74].iter());
    run_sequence(
        &mut inst,
        "mobility",
        &[Row::new(
            "MH with TCP 8080 behind",
            Ingress,
            Pkt::raw(ip(PEER6), ip(HOST6), 135, &mh).build(),
            Reason::NoRule,
        )],
    );
    // A rule for protocol 135 matches it.
    let rs = ruleset(&RULES.replace(
        r#"ingress = [ { proto = "tcp", ports = "8080", from = ["0.0.0.0/0", "::/0"] } ]"#,
        r#"ingress = [ { proto = "135", from = "::/0" } ]"#,
    ));
    apply(&mut inst, &rs, "eth0", 2);
    run_sequence(
        &mut inst,
        "mobility allowed",
        &[Row::new("MH", Ingress, Pkt::raw(ip(PEER6), ip(HOST6), 135, &mh).build(), Reason::RuleAllow)],
    );
}
