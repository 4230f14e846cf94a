//! An attacker's checklist as verdict tables (BPF_PROG_TEST_RUN against the real programs and
//! maps). Every row is named for the attack it models. The policy allows TCP 80 and UDP 53
//! from anywhere and nothing else, so a pass on any other port is an evasion.
//!
//! Not testable here: a frame shorter than an Ethernet header (`eth_truncated`): the kernel's
//! test harness refuses to run it, as drivers refuse to deliver it.

use std::net::IpAddr;

use sg_common::{
    Direction::{Egress, Ingress},
    Reason,
    config::{CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6, CONFIG_NO_IMPLICIT_NDP},
    conntrack::FragEntry,
};
use sg_tests::{
    packet::{Ext, Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, arp_frame, legal_chain},
    policy::{apply, recording_instance, ruleset},
    require_bpf,
    verdict::{Row, run_sequence, run_table},
};
use sg_userspace::{loader::PrivateInstance, maps::ct_now_ns};

const RULES: &str = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "80", from = ["0.0.0.0/0", "::/0"] },
  { proto = "udp", ports = "53", from = ["0.0.0.0/0", "::/0"] },
]
egress = []
[interfaces.eth0]
groups = ["g"]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4() -> (IpAddr, IpAddr) {
    (ip("198.51.100.66"), ip("192.0.2.1"))
}

fn v6() -> (IpAddr, IpAddr) {
    (ip("2001:db8:66::66"), ip("2001:db8::1"))
}

fn instance() -> PrivateInstance {
    let mut inst = recording_instance();
    apply(&mut inst, &ruleset(RULES), "eth0", 1);
    inst
}

fn row(desc: &str, frame: Vec<u8>, reason: Reason) -> Row {
    Row::new(desc, Ingress, frame, reason)
}

/// Sets the IPv4 total length (or IPv6 payload length) to what the frame holds.
fn fix_len(mut f: Vec<u8>, l3: usize) -> Vec<u8> {
    if f[l3] >> 4 == 4 {
        let n = (f.len() - l3) as u16;
        f[l3 + 2..l3 + 4].copy_from_slice(&n.to_be_bytes());
    } else {
        let n = (f.len() - l3 - 40) as u16;
        f[l3 + 4..l3 + 6].copy_from_slice(&n.to_be_bytes());
    }
    f
}

#[test]
fn malformed_headers() {
    if !require_bpf("malformed_headers") {
        return;
    }
    let mut inst = instance();
    let (src, dst) = v4();
    let (src6, dst6) = v6();
    let good = Pkt::tcp(src, dst, 40000, 80).syn().build();
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    let mut ihl_beyond = good.clone();
    ihl_beyond[14] = 0x4f;
    ihl_beyond.truncate(14 + 40);
    let mut tot_small = good.clone();
    tot_small[16..18].copy_from_slice(&19u16.to_be_bytes());
    let mut tot_big = good.clone();
    tot_big[16..18].copy_from_slice(&9000u16.to_be_bytes());
    let mut udp_long = Pkt::udp(src, dst, 5353, 53).payload(b"abcd").build();
    udp_long[14 + 24..14 + 26].copy_from_slice(&200u16.to_be_bytes());
    let mut udp_short = Pkt::udp(src, dst, 5353, 53).payload(b"abcd").build();
    udp_short[14 + 24..14 + 26].copy_from_slice(&8u16.to_be_bytes());
    let mut udp_tiny = Pkt::udp(src6, dst6, 5353, 53).payload(b"abcd").build();
    udp_tiny[14 + 44..14 + 46].copy_from_slice(&4u16.to_be_bytes());
    let quoted = Pkt::udp(dst, src, 40000, 53);
    let mut quote_cut = Pkt::icmp_error(src, dst, 3, 3, &quoted, 20).build();
    quote_cut = fix_len(quote_cut, 14);
    let rows = vec![
        row("IPv4 IHL below 5 (header overlaps payload)", ihl4, Reason::Ipv4BadIhl),
        row("IPv4 IHL pointing past the frame", ihl_beyond, Reason::Ipv4BadIhl),
        row("IPv4 total length smaller than its header", tot_small, Reason::Ipv4BadLength),
        row("IPv4 total length larger than the frame", tot_big, Reason::Ipv4BadLength),
        row(
            "TCP data offset 4 (header shorter than 20)",
            Pkt::tcp(src, dst, 1, 80).syn().tcp_doff(4).build(),
            Reason::TcpBadDoff,
        ),
        row(
            "TCP data offset past the datagram",
            fix_len(Pkt::tcp(src, dst, 1, 80).syn().tcp_doff(15).build()[..14 + 20 + 28].to_vec(), 14),
            Reason::TcpBadDoff,
        ),
        row("UDP length larger than the datagram", udp_long, Reason::UdpBadLength),
        row("UDP length smaller than the datagram (hidden trailer)", udp_short, Reason::UdpBadLength),
        row("UDP length below the UDP header (v6)", udp_tiny, Reason::UdpBadLength),
        row("ICMP error whose quoted ports are cut off", quote_cut, Reason::IcmpQuoteTruncated),
    ];
    run_table(&mut inst, "malformed headers", &rows);
}

#[test]
fn headers_that_try_to_hide_ports() {
    if !require_bpf("headers_that_try_to_hide_ports") {
        return;
    }
    let mut inst = instance();
    let (src, dst) = v4();
    let (src6, dst6) = v6();
    let options = [1u8; 40];
    let t6 = |port| Pkt::tcp(src6, dst6, 40000, port).syn();
    let rows = vec![
        Row::allow(
            "allowed port behind 40 bytes of IPv4 options",
            Ingress,
            Pkt::tcp(src, dst, 1, 80).syn().ipv4_options(&options).build(),
            0,
        ),
        row(
            "denied port behind 40 bytes of IPv4 options",
            Pkt::tcp(src, dst, 1, 22).syn().ipv4_options(&options).build(),
            Reason::NoRule,
        ),
        Row::allow("allowed port behind a legal v6 chain of 6", Ingress, legal_chain(t6(80), 6).build(), 1),
        row("denied port behind a legal v6 chain of 6", legal_chain(t6(22), 6).build(), Reason::NoRule),
        row(
            "v6 chain of 7, beyond the parser's bound",
            legal_chain(t6(80), 7).build(),
            Reason::Ipv6ExtTooLong,
        ),
        row(
            "hop-by-hop not first",
            t6(80).ext(Ext::DestOpts { len8: 0 }).ext(Ext::HopByHop { len8: 0 }).build(),
            Reason::Ipv6ExtBadOrder,
        ),
        row(
            "two routing headers",
            t6(80)
                .ext(Ext::Routing { rtype: 2, segments_left: 0, len8: 2 })
                .ext(Ext::Routing { rtype: 2, segments_left: 0, len8: 2 })
                .build(),
            Reason::Ipv6ExtBadOrder,
        ),
        row(
            "two fragment headers",
            t6(80)
                .ext(Ext::Fragment { offset8: 0, more: true, id: 1 })
                .ext(Ext::Fragment { offset8: 0, more: true, id: 2 })
                .build(),
            Reason::Ipv6ExtBadOrder,
        ),
        row(
            "three destination-options headers",
            t6(80)
                .ext(Ext::DestOpts { len8: 0 })
                .ext(Ext::DestOpts { len8: 0 })
                .ext(Ext::DestOpts { len8: 0 })
                .build(),
            Reason::Ipv6ExtBadOrder,
        ),
        row(
            "routing header type 0 (source routing, RFC 5095)",
            t6(80).ext(Ext::Routing { rtype: 0, segments_left: 1, len8: 2 }).build(),
            Reason::Ipv6RoutingType0,
        ),
        Row::allow("one VLAN tag", Ingress, Pkt::tcp(src, dst, 1, 80).syn().vlan(10).build(), 0),
        Row::allow(
            "two VLAN tags (QinQ)",
            Ingress,
            Pkt::tcp(src, dst, 1, 80).syn().vlan_ad(10).vlan(20).build(),
            0,
        ),
        row(
            "denied port behind two VLAN tags",
            Pkt::tcp(src, dst, 1, 22).syn().vlan_ad(10).vlan(20).build(),
            Reason::NoRule,
        ),
        row(
            "three VLAN tags, beyond the bound",
            Pkt::tcp(src, dst, 1, 80).syn().vlan_ad(1).vlan(2).vlan(3).build(),
            Reason::VlanTooDeep,
        ),
        // ::ffff:a.b.c.d is an IPv6 address: it matches IPv6 rules only (here ::/0 for port 80).
        Row::allow(
            "IPv4-mapped IPv6 source matches v6 rules only",
            Ingress,
            Pkt::tcp(ip("::ffff:198.51.100.66"), dst6, 1, 80).syn().build(),
            1,
        ),
    ];
    run_table(&mut inst, "hiding ports", &rows);
}

#[test]
fn fragments_v4_and_v6() {
    if !require_bpf("fragments_v4_and_v6") {
        return;
    }
    let mut inst = instance();
    let (src, dst) = v4();
    let (src6, dst6) = v6();
    let first4 =
        |port, id| Pkt::udp(src, dst, 5353, port).payload(&[7; 32]).ipv4_fragment(true, 0, id).build();
    let later4 = |id| Pkt::raw(src, dst, 17, &[7; 16]).ipv4_fragment(false, 5, id).build();
    let first6 = |port, id| {
        Pkt::udp(src6, dst6, 5353, port)
            .ext(Ext::Fragment { offset8: 0, more: true, id })
            .payload(&[7; 32])
            .build()
    };
    let later6 =
        |id| Pkt::raw(src6, dst6, 17, &[7; 16]).ext(Ext::Fragment { offset8: 5, more: false, id }).build();
    let rows = vec![
        row("v4 non-first fragment before its first", later4(100), Reason::FragmentNoFirst),
        Row::allow("v4 first fragment to an allowed port", Ingress, first4(53, 100), 2),
        row("v4 its second fragment", later4(100), Reason::FragmentAllowed),
        row("v4 the early fragment again, now admitted", later4(100), Reason::FragmentAllowed),
        row("v4 fragment of another datagram (id)", later4(101), Reason::FragmentNoFirst),
        row("v4 first fragment to a denied port", first4(54, 102), Reason::NoRule),
        row("v4 its second fragment", later4(102), Reason::FragmentNoFirst),
        row("v6 non-first fragment without its first", later6(200), Reason::FragmentNoFirst),
        Row::allow("v6 first fragment to an allowed port", Ingress, first6(53, 200), 3),
        row("v6 its second fragment", later6(200), Reason::FragmentAllowed),
        row("v6 first fragment to a denied port", first6(54, 201), Reason::NoRule),
        row("v6 its second fragment", later6(201), Reason::FragmentNoFirst),
    ];
    run_sequence(&mut inst, "fragments", &rows);

    // The admission is short-lived: age it past its lifetime.
    let (k, _) = inst.maps().frag_entries().unwrap().into_iter().find(|(k, _)| k.id == 100).unwrap();
    inst.maps_mut().frag_put(&k, &FragEntry { expires_ns: ct_now_ns() - 1 }).unwrap();
    run_sequence(
        &mut inst,
        "expired",
        &[row("v4 fragment after the admission expired", later4(100), Reason::FragmentNoFirst)],
    );

    // Evasions.
    let tcp_first = Pkt::tcp(src, dst, 1, 80).syn().ipv4_fragment(true, 0, 300).build();
    let tiny = fix_len(tcp_first[..14 + 20 + 8].to_vec(), 14);
    let overlap = Pkt::raw(src, dst, 6, &[0x12; 16]).ipv4_fragment(false, 1, 301).build();
    let overlap6 =
        Pkt::raw(src6, dst6, 6, &[0x12; 16]).ext(Ext::Fragment { offset8: 1, more: false, id: 302 }).build();
    let chain6 = Pkt::tcp(src6, dst6, 1, 80)
        .syn()
        .ext(Ext::Fragment { offset8: 0, more: true, id: 303 })
        .ext(Ext::DestOpts { len8: 2 })
        .build();
    let chain6_cut = fix_len(chain6[..14 + 40 + 8 + 16].to_vec(), 14);
    let tcp6_first =
        Pkt::tcp(src6, dst6, 1, 80).syn().ext(Ext::Fragment { offset8: 0, more: true, id: 304 }).build();
    let tcp6_cut = fix_len(tcp6_first[..14 + 40 + 8 + 10].to_vec(), 14);
    let rows = vec![
        row("tiny first fragment: TCP header split (RFC 1858)", tiny, Reason::TinyFragment),
        row("TCP fragment at offset 8 bytes overwriting flags (RFC 1858)", overlap, Reason::FragmentOverlap),
        row("v6 TCP fragment at offset 8 bytes", overlap6, Reason::FragmentOverlap),
        row(
            "v6 first fragment with the header chain cut (RFC 7112)",
            chain6_cut,
            Reason::Ipv6IncompleteChain,
        ),
        row("v6 first fragment with the TCP header cut (RFC 7112)", tcp6_cut, Reason::Ipv6IncompleteChain),
    ];
    run_table(&mut inst, "fragment evasions", &rows);
}

#[test]
fn tcp_flag_abuse_on_new_flows() {
    if !require_bpf("tcp_flag_abuse_on_new_flows") {
        return;
    }
    let mut inst = instance();
    let (src, dst) = v4();
    let (src6, dst6) = v6();
    let mut rows = Vec::new();
    for (name, flags) in [
        ("SYN+FIN", TCP_SYN | TCP_FIN),
        ("SYN+RST", TCP_SYN | TCP_RST),
        ("no flags (NULL scan)", 0),
        ("FIN alone (FIN scan)", TCP_FIN),
        ("FIN+PSH+URG (XMAS scan)", TCP_FIN | TCP_PSH | 0x20),
        ("all flags", 0xff),
    ] {
        for (s, d, fam) in [(src, dst, "v4"), (src6, dst6, "v6")] {
            rows.push(row(
                &format!("{name} to an allowed port ({fam})"),
                Pkt::tcp(s, d, 40000, 80).flags(flags).build(),
                Reason::TcpBadFlags,
            ));
        }
    }
    rows.push(Row::allow(
        "a plain SYN to the same port",
        Ingress,
        Pkt::tcp(src, dst, 40000, 80).syn().build(),
        0,
    ));
    rows.push(Row::allow(
        "a lone ACK to an allowed port passes statelessly",
        Ingress,
        Pkt::tcp(src, dst, 40001, 80).flags(TCP_ACK).build(),
        0,
    ));
    rows.push(row(
        "a lone ACK to a denied port",
        Pkt::tcp(src, dst, 40001, 22).flags(TCP_ACK).build(),
        Reason::TcpNotSyn,
    ));
    run_table(&mut inst, "tcp flags", &rows);
}

#[test]
fn implicit_allowances_on_and_off() {
    if !require_bpf("implicit_allowances_on_and_off") {
        return;
    }
    let mut inst = instance();
    let (_, host6) = v6();
    let router6 = ip("fe80::1");
    let ndp = |t: u8, hop: u8| Pkt::icmp(router6, host6, t, 0).ttl(hop).build();
    let offer = Pkt::udp(ip("192.0.2.254"), ip("255.255.255.255"), 67, 68).payload(&[0; 32]).build();
    let discover = Pkt::udp(ip("0.0.0.0"), ip("255.255.255.255"), 68, 67).payload(&[0; 32]).build();
    let advertise6 = Pkt::udp(ip("fe80::2"), ip("fe80::1234"), 547, 546).payload(&[0; 16]).build();
    let solicit6 = Pkt::udp(ip("fe80::1234"), ip("ff02::1:2"), 546, 547).payload(&[0; 16]).build();
    let on = |inst: &mut PrivateInstance, label: &str, reason_ndp: Reason, reason_dhcp: Reason| {
        let mut rows = Vec::new();
        for (t, name) in [
            (133, "router solicitation"),
            (134, "router advertisement"),
            (135, "neighbour solicitation"),
            (136, "neighbour advertisement"),
            (137, "redirect"),
        ] {
            rows.push(row(&format!("{name} (hop limit 255)"), ndp(t, 255), reason_ndp));
        }
        rows.push(row(
            "neighbour advertisement with hop limit 64 (off-link forgery)",
            ndp(136, 64),
            Reason::NoRule,
        ));
        rows.push(row("DHCPv4 offer, broadcast", offer.clone(), reason_dhcp));
        rows.push(Row::new("DHCPv4 discover out", Egress, discover.clone(), reason_dhcp));
        rows.push(row("DHCPv6 advertise", advertise6.clone(), reason_dhcp));
        rows.push(Row::new("DHCPv6 solicit out", Egress, solicit6.clone(), reason_dhcp));
        rows.push(row(
            "DHCP-like ports the other way round",
            Pkt::udp(ip("192.0.2.254"), ip("192.0.2.1"), 68, 67).build(),
            Reason::NoRule,
        ));
        rows.push(row("ARP (non-IP) passes at L2", arp_frame(), Reason::PassNonIp));
        run_table(inst, label, &rows);
    };
    on(&mut inst, "implicit allowances on (default)", Reason::ImplicitNdp, Reason::ImplicitDhcp);
    let mut cfg = inst.maps().config().unwrap();
    cfg.flags |= CONFIG_NO_IMPLICIT_NDP | CONFIG_NO_IMPLICIT_DHCP | CONFIG_NO_IMPLICIT_DHCPV6;
    inst.maps_mut().set_config(&cfg).unwrap();
    on(&mut inst, "implicit allowances off", Reason::NoRule, Reason::NoRule);
}
