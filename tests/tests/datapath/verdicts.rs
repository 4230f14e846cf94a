//! Verdict tables through BPF_PROG_TEST_RUN against the real programs and maps: postures,
//! non-IP frames, the parser (VLAN, IPv4 options, IPv6 extension headers) and malformed input.

use std::net::IpAddr;

use sg_common::{
    Direction::{self, Egress, Ingress},
    IfaceConfig, PacketSummary, Posture, Reason,
    config::CONFIG_RECORD_PARSE,
    packet::{FAMILY_IPV4, FAMILY_IPV6, PKT_FRAGMENT, PKT_HAS_L4, PKT_LATER_FRAGMENT},
};
use sg_tests::{
    packet::{Ext, Pkt, TCP_SYN, arp_frame, legal_chain},
    require_bpf,
    verdict::{Row, run_table},
};
use sg_userspace::loader::PrivateInstance;

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn peer4() -> (IpAddr, IpAddr) {
    (v4("192.0.2.2"), v4("192.0.2.1"))
}

fn peer6() -> (IpAddr, IpAddr) {
    (v4("2001:db8::2"), v4("2001:db8::1"))
}

fn instance(ingress: Posture, egress: Posture) -> PrivateInstance {
    PrivateInstance::load(&IfaceConfig {
        flags: CONFIG_RECORD_PARSE,
        ingress_posture: ingress as u8,
        egress_posture: egress as u8,
        ..IfaceConfig::default()
    })
    .expect("load a private instance of the datapath")
}

/// The well-formed traffic of every protocol and family, in a direction.
fn protocol_frames(dir: Direction) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (fam, (peer, host)) in [("v4", peer4()), ("v6", peer6())] {
        let (src, dst) = if dir == Ingress { (peer, host) } else { (host, peer) };
        let echo = if fam == "v4" { 8 } else { 128 };
        out.push((format!("{fam} tcp syn"), Pkt::tcp(src, dst, 40000, 22).syn().build()));
        out.push((format!("{fam} tcp ack"), Pkt::tcp(src, dst, 40000, 443).build()));
        out.push((format!("{fam} udp"), Pkt::udp(src, dst, 5353, 53).payload(b"q").build()));
        out.push((format!("{fam} icmp echo"), Pkt::icmp(src, dst, echo, 0).build()));
        out.push((format!("{fam} other proto (gre)"), Pkt::raw(src, dst, 47, &[0; 8]).build()));
    }
    out
}

#[test]
fn postures_decide_every_protocol_both_directions() {
    if !require_bpf("postures_decide_every_protocol_both_directions") {
        return;
    }
    let mut total = 0;
    for (ingress, egress) in [
        (Posture::Deny, Posture::Allow),
        (Posture::Allow, Posture::Deny),
        (Posture::Allow, Posture::Allow),
        (Posture::Deny, Posture::Deny),
    ] {
        let mut inst = instance(ingress, egress);
        let mut rows = Vec::new();
        for (dir, posture) in [(Ingress, ingress), (Egress, egress)] {
            let reason = match posture {
                Posture::Allow => Reason::PostureAllow,
                Posture::Deny => Reason::PostureDeny,
            };
            for (desc, frame) in protocol_frames(dir) {
                // A denied TCP packet that is not a SYN has its own reason (no flow, no SYN).
                let reason = if desc.contains("tcp ack") && posture == Posture::Deny {
                    Reason::TcpNotSyn
                } else {
                    reason
                };
                rows.push(Row::new(format!("{desc} under {}", posture.as_str()), dir, frame, reason));
            }
            rows.push(Row::new("arp passes whatever the posture", dir, arp_frame(), Reason::PassNonIp));
        }
        let name = format!("postures ingress={} egress={}", ingress.as_str(), egress.as_str());
        total += run_table(&mut inst, &name, &rows);
    }
    assert_eq!(total, 4 * 2 * 11);
}

#[test]
fn posture_change_takes_effect_without_reload() {
    if !require_bpf("posture_change_takes_effect_without_reload") {
        return;
    }
    let mut inst = instance(Posture::Deny, Posture::Allow);
    let (src, dst) = peer4();
    let syn = Pkt::tcp(src, dst, 40000, 80).syn().build();
    run_table(&mut inst, "before", &[Row::new("syn denied", Ingress, syn.clone(), Reason::PostureDeny)]);
    let mut cfg = inst.maps().config().unwrap();
    cfg.ingress_posture = Posture::Allow as u8;
    inst.maps_mut().set_config(&cfg).unwrap();
    run_table(&mut inst, "after", &[Row::new("syn allowed", Ingress, syn, Reason::PostureAllow)]);
}

#[test]
fn invalid_config_fails_closed() {
    if !require_bpf("invalid_config_fails_closed") {
        return;
    }
    let mut inst = instance(Posture::Allow, Posture::Allow);
    let (src, dst) = peer4();
    // An out-of-range posture value must not be read as allow.
    let mut cfg = inst.maps().config().unwrap();
    cfg.ingress_posture = 7;
    inst.maps_mut().set_config(&cfg).unwrap();
    // An entry without the valid flag (as after a failed write) drops everything IP.
    let rows =
        [Row::new("unknown posture value", Ingress, Pkt::tcp(src, dst, 1, 2).build(), Reason::NoConfig)];
    run_table(&mut inst, "bad posture", &rows);
    inst.maps_mut().set_config(&IfaceConfig::default()).unwrap();
    let rows = [
        Row::new("config not valid: ip dropped", Egress, Pkt::udp(dst, src, 1, 2).build(), Reason::NoConfig),
        Row::new(
            "config not valid: ingress ip dropped",
            Ingress,
            Pkt::udp(src, dst, 1, 2).build(),
            Reason::NoConfig,
        ),
    ];
    run_table(&mut inst, "invalid config", &rows);
}

/// Frames the parser must refuse, each with its own reason, in both directions.
fn malformed_rows(dir: Direction) -> Vec<Row> {
    let (src, dst) = peer4();
    let (src6, dst6) = peer6();
    let tcp4 = Pkt::tcp(src, dst, 40000, 22).syn();
    let good4 = tcp4.build();
    let mut rows = Vec::new();
    let mut push = |desc: &str, frame: Vec<u8>, reason: Reason| {
        rows.push(Row::new(desc, dir, frame, reason));
    };

    // BPF_PROG_TEST_RUN refuses (EINVAL) skbs whose IP header is cut short, so the two
    // truncated-IP-header rows run at ingress only; the parser code is the same both ways.
    let harness_accepts = dir == Ingress;
    if harness_accepts {
        push("ipv4 header cut at 10 bytes", good4[..14 + 10].to_vec(), Reason::Ipv4Truncated);
    }
    let mut f = good4.clone();
    f[14] = 0x44; // IHL 4 (< 5)
    push("ipv4 ihl 4", f, Reason::Ipv4BadIhl);
    let mut f = good4.clone();
    f[14] = 0x4f; // IHL 15 = 60 bytes, beyond this 54-byte frame's IP part
    f.truncate(14 + 40);
    push("ipv4 ihl beyond frame", f, Reason::Ipv4BadIhl);
    let mut f = good4.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    push("ipv4 total length < header", f, Reason::Ipv4BadLength);
    let mut f = good4.clone();
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    push("ipv4 total length > frame", f, Reason::Ipv4BadLength);
    let mut f = good4.clone();
    f[14] = 0x65;
    push("ipv4 ethertype with version 6", f, Reason::IpBadVersion);
    let mut f = good4.clone();
    f.truncate(14 + 20 + 10);
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    push("tcp header cut at 10 bytes", f, Reason::L4Truncated);
    push("tcp data offset 4", tcp4.clone().tcp_doff(4).build(), Reason::TcpBadDoff);
    let mut f = tcp4.clone().tcp_doff(15).build();
    f.truncate(14 + 20 + 24);
    let len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&len.to_be_bytes());
    push("tcp data offset beyond packet", f, Reason::TcpBadDoff);
    let udp = Pkt::udp(src, dst, 1, 2).build();
    let mut f = udp[..14 + 20 + 4].to_vec();
    f[16..18].copy_from_slice(&24u16.to_be_bytes());
    push("udp header cut at 4 bytes", f, Reason::L4Truncated);

    let good6 = Pkt::udp(src6, dst6, 1, 53).build();
    if harness_accepts {
        push("ipv6 header cut at 30 bytes", good6[..14 + 30].to_vec(), Reason::Ipv6Truncated);
    }
    let mut f = good6.clone();
    f[18..20].copy_from_slice(&1000u16.to_be_bytes());
    push("ipv6 payload length > frame", f, Reason::Ipv6BadLength);
    let mut f = good6.clone();
    f[14] = 0x40;
    push("ipv6 ethertype with version 4", f, Reason::IpBadVersion);
    let long = legal_chain(Pkt::tcp(src6, dst6, 1, 22), 7);
    push("ipv6 legal chain of 7 extension headers (bound 6)", long.build(), Reason::Ipv6ExtTooLong);
    let mut f = Pkt::tcp(src6, dst6, 1, 22).ext(Ext::HopByHop { len8: 2 }).build();
    let cut = 14 + 40 + 12;
    f.truncate(cut);
    let payload = (cut - 54) as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    push("ipv6 hop-by-hop cut short", f, Reason::Ipv6ExtTruncated);
    let big = Pkt::tcp(src6, dst6, 1, 22).ext(Ext::HopByHop { len8: 60 }).build();
    push("ipv6 headers beyond 512 bytes", big, Reason::HeadersTooLong);

    let vlan3 = Pkt::tcp(src, dst, 1, 22).vlan_ad(1).vlan(2).vlan(3).build();
    push("three vlan tags (bound 2)", vlan3, Reason::VlanTooDeep);
    let vlan_cut = Pkt::tcp(src, dst, 1, 22).vlan(5).build()[..16].to_vec();
    push("vlan tag cut short", vlan_cut, Reason::VlanTruncated);
    rows
}

#[test]
fn malformed_packets_are_dropped_with_their_own_reason() {
    if !require_bpf("malformed_packets_are_dropped_with_their_own_reason") {
        return;
    }
    // Allow postures: a drop here can only come from the parser.
    let mut inst = instance(Posture::Allow, Posture::Allow);
    let n = run_table(&mut inst, "malformed ingress", &malformed_rows(Ingress))
        + run_table(&mut inst, "malformed egress", &malformed_rows(Egress));
    assert_eq!(n, 18 + 16);
}

fn parsed(inst: &mut PrivateInstance, dir: Direction, frame: &[u8]) -> PacketSummary {
    let before = inst.maps().last_parse().unwrap().seq;
    inst.run(dir, frame).unwrap();
    let s = inst.maps().last_parse().unwrap();
    assert_eq!(s.seq, before + 1, "the program did not record this packet's summary");
    s
}

#[test]
fn parser_reads_ports_behind_vlan_options_and_extension_headers() {
    if !require_bpf("parser_reads_ports_behind_vlan_options_and_extension_headers") {
        return;
    }
    let mut inst = instance(Posture::Allow, Posture::Allow);
    let (src, dst) = peer4();
    let (src6, dst6) = peer6();
    let nop_options = [1u8; 40]; // maximal IPv4 options: IHL 15
    let cases: Vec<(&str, Pkt, u8, u8, u16, u16)> = vec![
        // (description, packet, family, proto, sport, dport)
        ("vlan 802.1Q tcp", Pkt::tcp(src, dst, 40001, 8080).vlan(100), FAMILY_IPV4, 6, 40001, 8080),
        (
            "qinq 802.1ad+802.1Q udp",
            Pkt::udp(src, dst, 5000, 53).vlan_ad(7).vlan(8),
            FAMILY_IPV4,
            17,
            5000,
            53,
        ),
        (
            "ipv4 with 40 bytes of options",
            Pkt::tcp(src, dst, 1234, 443).ipv4_options(&nop_options),
            FAMILY_IPV4,
            6,
            1234,
            443,
        ),
        (
            "ipv6 hop-by-hop + routing + dest-opts",
            Pkt::udp(src6, dst6, 7000, 4789)
                .ext(Ext::HopByHop { len8: 1 })
                .ext(Ext::Routing { rtype: 2, segments_left: 0, len8: 2 })
                .ext(Ext::DestOpts { len8: 0 }),
            FAMILY_IPV6,
            17,
            7000,
            4789,
        ),
        (
            "ipv6 legal chain of 6 (the bound) then tcp",
            legal_chain(Pkt::tcp(src6, dst6, 999, 22), 6),
            FAMILY_IPV6,
            6,
            999,
            22,
        ),
        ("vlan ipv6 tcp", Pkt::tcp(src6, dst6, 3333, 3306).vlan(9), FAMILY_IPV6, 6, 3333, 3306),
    ];
    for (desc, pkt, family, proto, sport, dport) in cases {
        let s = parsed(&mut inst, Ingress, &pkt.build());
        assert_eq!(
            (s.family, s.proto, s.sport, s.dport, s.flags & PKT_HAS_L4),
            (family, proto, sport, dport, PKT_HAS_L4),
            "{desc}: parsed {s:?}"
        );
        assert_eq!(usize::from(s.l3_off), pkt.l3_offset(), "{desc}");
        assert_eq!(usize::from(s.vlan_depth), pkt.vlans.len(), "{desc}");
        assert_eq!(usize::from(s.ext_count), pkt.ipv6_ext.len(), "{desc}");
    }

    let s = parsed(&mut inst, Egress, &Pkt::tcp(dst, src, 22, 40000).syn().build());
    assert_eq!((s.sport, s.dport, s.tcp_flags), (22, 40000, TCP_SYN), "egress tcp: {s:?}");
    assert_eq!(&s.src[..4], &[192, 0, 2, 1]);
    assert_eq!(&s.dst[..4], &[192, 0, 2, 2]);

    let s = parsed(&mut inst, Ingress, &Pkt::icmp(src6, dst6, 128, 0).build());
    assert_eq!((s.proto, s.icmp_type, s.icmp_code, s.sport), (58, 128, 0, 0x4242), "icmpv6: {s:?}");

    let first = Pkt::udp(src, dst, 1111, 2222).ipv4_fragment(true, 0, 77).payload(&[0; 16]);
    let s = parsed(&mut inst, Ingress, &first.build());
    assert_eq!(s.flags & (PKT_FRAGMENT | PKT_LATER_FRAGMENT | PKT_HAS_L4), PKT_FRAGMENT | PKT_HAS_L4);
    assert_eq!((s.dport, s.frag_id), (2222, 77));
    let later = Pkt::raw(src, dst, 17, &[0xaa; 16]).ipv4_fragment(false, 3, 77);
    let s = parsed(&mut inst, Ingress, &later.build());
    assert_eq!(s.flags & (PKT_LATER_FRAGMENT | PKT_HAS_L4), PKT_LATER_FRAGMENT, "{s:?}");
    assert_eq!((s.frag_off, s.dport), (3, 0));
    let frag6 = Pkt::tcp(src6, dst6, 5, 6).ext(Ext::Fragment { offset8: 0, more: true, id: 0xdead });
    let s = parsed(&mut inst, Ingress, &frag6.build());
    assert_eq!((s.frag_id, s.dport, s.flags & PKT_FRAGMENT), (0xdead, 6, PKT_FRAGMENT));
}
