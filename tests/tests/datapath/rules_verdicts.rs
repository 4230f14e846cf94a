//! Security-group verdict tables through BPF_PROG_TEST_RUN: every rule field (each protocol,
//! port edges, ICMP type/code with -1, v4/v6 CIDRs from /0 to /32 and /128, overlapping
//! rules and which one is counted, group references, prefix lists, two groups on one
//! interface), against the real programs and maps with an applied policy.

use std::net::IpAddr;

use sg_common::{
    Direction::{Egress, Ingress},
    Reason,
};
use sg_tests::{
    packet::{Pkt, arp_frame},
    policy::{apply, recording_instance, recording_instance_at, ruleset},
    require_bpf,
    verdict::{Row, run_table},
};
use sg_userspace::loader::IngressHook;

const RULES: &str = r#"
[groups.web]
ingress = [
  { proto = "tcp", ports = "80", from = "0.0.0.0/0" },                         # 0
  { proto = "tcp", ports = "1000-2000", from = "198.51.100.0/24" },            # 1
  { proto = "udp", ports = "53", from = ["192.0.2.0/24", "2001:db8:1::/48"] }, # 2, 3
  { proto = "icmp", icmp_type = 8, from = "0.0.0.0/0" },                       # 4: any code
  { proto = "icmp", icmp_type = 3, icmp_code = 4, from = "192.0.2.0/24" },     # 5
  { proto = "icmpv6", icmp_type = -1, from = "2001:db8:aaaa::/48" },           # 6: any type
  { proto = 47, from = "203.0.113.0/24" },                                     # 7: GRE
  { proto = "tcp", ports = "22", from = "203.0.113.7/32" },                    # 8
  { proto = "tcp", ports = "22-23", from = "203.0.113.0/24" },                 # 9: overlaps 8
  { proto = "tcp", ports = "443", from = "::/0" },                             # 10
  { proto = "tcp", ports = "8443", from = "2001:db8::42/128" },                # 11
  { proto = "tcp", ports = "5432", from_group = "app" },                       # 12
  { proto = "tcp", ports = "9100", from_prefix_list = "office" },              # 13
]
egress = [
  { proto = "udp", ports = "123", to = "0.0.0.0/0" },                          # 14
  { proto = "tcp", ports = "0-65535", to = "198.51.100.0/24" },                # 15
]

[groups.admin]
ingress = [ { proto = "all", from = "198.51.100.200/32" } ]                    # 16
egress = []

[groups.app]
members = ["198.51.100.10", "2001:db8::10"]

[prefix_lists.office]
entries = ["203.0.113.0/28", "2001:db8:ffff::/48"]

[interfaces.eth0]
groups = ["web", "admin"]
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host(v6: bool) -> IpAddr {
    if v6 { ip("2001:db8::1") } else { ip("192.0.2.1") }
}

fn tcp_in(src: &str, dport: u16) -> Vec<u8> {
    let src = ip(src);
    Pkt::tcp(src, host(src.is_ipv6()), 40000, dport).syn().build()
}

fn udp_in(src: &str, dport: u16) -> Vec<u8> {
    let src = ip(src);
    Pkt::udp(src, host(src.is_ipv6()), 40000, dport).build()
}

fn icmp_in(src: &str, t: u8, c: u8) -> Vec<u8> {
    let src = ip(src);
    Pkt::icmp(src, host(src.is_ipv6()), t, c).build()
}

/// An ICMP error from `src` to the host quoting a packet the host sent to `src`.
fn icmp_err_in(src: &str, t: u8, c: u8) -> Vec<u8> {
    let src = ip(src);
    let quoted = Pkt::udp(host(src.is_ipv6()), src, 40000, 33434);
    Pkt::icmp_error(src, host(src.is_ipv6()), t, c, &quoted, 64).build()
}

fn raw_in(src: &str, proto: u8) -> Vec<u8> {
    let src = ip(src);
    Pkt::raw(src, host(src.is_ipv6()), proto, &[0; 16]).build()
}

fn out(dst: &str, tcp: bool, dport: u16) -> Vec<u8> {
    let dst = ip(dst);
    let src = host(dst.is_ipv6());
    if tcp {
        Pkt::tcp(src, dst, 40000, dport).syn().build()
    } else {
        Pkt::udp(src, dst, 40000, dport).build()
    }
}

#[test]
fn every_rule_field_through_the_datapath() {
    if !require_bpf("every_rule_field_through_the_datapath") {
        return;
    }
    every_rule_field(IngressHook::Xdp);
}

/// The same table with ingress decided by the TC program (`--ingress-hook tcx`).
#[test]
fn every_rule_field_through_the_datapath_with_ingress_at_tcx() {
    if !require_bpf("every_rule_field_through_the_datapath_with_ingress_at_tcx") {
        return;
    }
    every_rule_field(IngressHook::Tcx);
}

fn every_rule_field(hook: IngressHook) {
    let rs = ruleset(RULES);
    assert_eq!(rs.iface_rules("eth0").len(), 17, "rule ids in this table assume 17 rules");
    let mut inst = recording_instance_at(hook);
    apply(&mut inst, &rs, "eth0", 1);
    let a = Row::allow;
    let d = Row::deny;
    let rows = vec![
        // tcp port edges
        a("tcp 80 from anywhere (/0)", Ingress, tcp_in("192.0.2.9", 80), 0),
        d("tcp 79: one below", Ingress, tcp_in("192.0.2.9", 79)),
        d("tcp 81: one above", Ingress, tcp_in("192.0.2.9", 81)),
        a("tcp 1000: first port of range", Ingress, tcp_in("198.51.100.5", 1000), 1),
        a("tcp 2000: last port of range", Ingress, tcp_in("198.51.100.5", 2000), 1),
        d("tcp 999: below range", Ingress, tcp_in("198.51.100.5", 999)),
        d("tcp 2001: above range", Ingress, tcp_in("198.51.100.5", 2001)),
        d("tcp 1500 from outside the /24", Ingress, tcp_in("192.0.2.9", 1500)),
        // udp, two CIDRs of one line (two rules), protocol mismatch
        a("udp 53 from the v4 /24", Ingress, udp_in("192.0.2.9", 53), 2),
        a("udp 53 from the v6 /48", Ingress, udp_in("2001:db8:1::5", 53), 3),
        d("udp 53 from outside the v6 /48", Ingress, udp_in("2001:db8:2::5", 53)),
        d("tcp 53 where only udp is allowed", Ingress, tcp_in("192.0.2.9", 53)),
        d("udp 52", Ingress, udp_in("192.0.2.9", 52)),
        // icmp type and code, -1
        a("icmp echo request (type 8 code 0)", Ingress, icmp_in("203.0.113.99", 8, 0), 4),
        a("icmp type 8 code 1 (code -1 = any)", Ingress, icmp_in("203.0.113.99", 8, 1), 4),
        d("icmp echo reply (type 0) not allowed", Ingress, icmp_in("203.0.113.99", 0, 0)),
        a("icmp 3/4 frag-needed from the /24", Ingress, icmp_err_in("192.0.2.9", 3, 4), 5),
        d("icmp 3/3 (other code)", Ingress, icmp_err_in("192.0.2.9", 3, 3)),
        d("icmp 3/4 from outside the /24", Ingress, icmp_err_in("198.51.100.5", 3, 4)),
        a("icmpv6 echo (type -1 = any)", Ingress, icmp_in("2001:db8:aaaa::9", 128, 0), 6),
        a("icmpv6 dest-unreachable", Ingress, icmp_err_in("2001:db8:aaaa::9", 1, 4), 6),
        d("icmpv6 from outside the /48", Ingress, icmp_in("2001:db8:bbbb::9", 128, 0)),
        // other protocols by number
        a("gre (47) from the /24", Ingress, raw_in("203.0.113.50", 47), 7),
        d("gre from elsewhere", Ingress, raw_in("192.0.2.9", 47)),
        d("esp (50): no rule", Ingress, raw_in("203.0.113.50", 50)),
        // overlapping rules: the first in file order is counted
        a("tcp 22 from the /32: rule 8 first", Ingress, tcp_in("203.0.113.7", 22), 8),
        a("tcp 23 from the /32: only rule 9", Ingress, tcp_in("203.0.113.7", 23), 9),
        a("tcp 22 from a neighbour: rule 9", Ingress, tcp_in("203.0.113.8", 22), 9),
        d("tcp 24 from the /32", Ingress, tcp_in("203.0.113.7", 24)),
        // v6 /0 and /128
        a("tcp 443 from ::/0", Ingress, tcp_in("2001:db8:5::5", 443), 10),
        d("tcp 443 over v4: ::/0 does not cover v4", Ingress, tcp_in("192.0.2.9", 443)),
        a("tcp 8443 from the /128", Ingress, tcp_in("2001:db8::42", 8443), 11),
        d("tcp 8443 from the next address", Ingress, tcp_in("2001:db8::43", 8443)),
        d("ipv4-mapped v6 source does not match 0.0.0.0/0", Ingress, tcp_in("::ffff:192.0.2.9", 80)),
        // group reference and prefix list
        a("tcp 5432 from app member (v4)", Ingress, tcp_in("198.51.100.10", 5432), 12),
        a("tcp 5432 from app member (v6)", Ingress, tcp_in("2001:db8::10", 5432), 12),
        d("tcp 5432 from a non-member", Ingress, tcp_in("198.51.100.11", 5432)),
        a("tcp 9100 from office (v4)", Ingress, tcp_in("203.0.113.3", 9100), 13),
        a("tcp 9100 from office (v6)", Ingress, tcp_in("2001:db8:ffff::1", 9100), 13),
        d("tcp 9100 from outside office", Ingress, tcp_in("203.0.113.200", 9100)),
        // second group on the interface (union)
        a("udp 9999 from the admin host", Ingress, udp_in("198.51.100.200", 9999), 16),
        a("tcp 80 from the admin host: web's rule 0 comes first", Ingress, tcp_in("198.51.100.200", 80), 0),
        a("sctp (132) from the admin host", Ingress, raw_in("198.51.100.200", 132), 16),
        // egress: peer is the destination
        a("udp 123 out to anywhere", Egress, out("192.0.2.9", false, 123), 14),
        d("udp 124 out", Egress, out("192.0.2.9", false, 124)),
        a("tcp 0 out to the /24 (first port)", Egress, out("198.51.100.7", true, 0), 15),
        a("tcp 65535 out to the /24 (last port)", Egress, out("198.51.100.7", true, 65535), 15),
        d("tcp 80 out elsewhere", Egress, out("192.0.2.9", true, 80)),
        d("v6 out: no v6 egress rule", Egress, out("2001:db8::9", true, 443)),
        // not matched on ports
        Row::new(
            "non-first fragment",
            Ingress,
            Pkt::raw(ip("192.0.2.9"), host(false), 17, &[0; 16]).ipv4_fragment(false, 3, 9).build(),
            Reason::FragmentNoFirst,
        ),
        Row::new("arp", Ingress, arp_frame(), Reason::PassNonIp),
    ];
    let n = run_table(&mut inst, "security groups", &rows);
    assert_eq!(n, 51);

    // Hit counters: the allowed rows above, per rule, in the active generation.
    let cfg = inst.maps().config().unwrap();
    let hits: Vec<u64> = (0..17)
        .map(|id| inst.maps().hits(sg_userspace::layer::Layer::Rules, cfg.active_gen, id).unwrap())
        .collect();
    assert_eq!(hits, vec![2, 2, 1, 1, 2, 1, 2, 1, 1, 2, 1, 1, 2, 2, 1, 2, 2]);
}

#[test]
fn generation_flip_replaces_the_policy_whole() {
    if !require_bpf("generation_flip_replaces_the_policy_whole") {
        return;
    }
    let mut inst = recording_instance();
    let v1 = ruleset(
        "[groups.g]\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"192.0.2.0/24\" }]\n[interfaces.eth0]\ngroups = [\"g\"]\n",
    );
    let v2 = ruleset(
        "[groups.g]\ningress = [{ proto = \"tcp\", ports = \"443\", from = \"2001:db8::/32\" }]\negress = []\n[interfaces.eth0]\ngroups = [\"g\"]\n",
    );
    for round in 0..3 {
        apply(&mut inst, &v1, "eth0", 2 * round + 1);
        let gen_after_v1 = inst.maps().config().unwrap().active_gen;
        run_table(
            &mut inst,
            "v1",
            &[
                Row::allow("80 allowed in v1", Ingress, tcp_in("192.0.2.9", 80), 0),
                Row::deny("443 denied in v1", Ingress, tcp_in("2001:db8::9", 443)),
                Row::allow("egress default in v1", Egress, out("192.0.2.9", true, 80), 1),
            ],
        );
        apply(&mut inst, &v2, "eth0", 2 * round + 2);
        assert_ne!(inst.maps().config().unwrap().active_gen, gen_after_v1, "each apply flips the generation");
        run_table(
            &mut inst,
            "v2",
            &[
                Row::deny("80 denied in v2", Ingress, tcp_in("192.0.2.9", 80)),
                Row::allow("443 allowed in v2", Ingress, tcp_in("2001:db8::9", 443), 0),
                Row::deny("no egress in v2", Egress, out("192.0.2.9", true, 80)),
            ],
        );
    }
}

/// An instance attached with a small `--prefix-capacity` refuses a rule set whose prefix
/// tables do not fit, before its generation flips: the rules applied before still decide.
#[test]
fn rules_beyond_the_prefix_capacity_are_refused_and_change_nothing() {
    if !require_bpf("rules_beyond_the_prefix_capacity_are_refused_and_change_nothing") {
        return;
    }
    let cfg = sg_common::IfaceConfig {
        flags: sg_common::config::CONFIG_RECORD_PARSE,
        ingress_posture: sg_common::Posture::Allow as u8,
        egress_posture: sg_common::Posture::Allow as u8,
        ..sg_common::IfaceConfig::default()
    };
    let sizes = sg_userspace::loader::Sizes { prefixes: 64, ..sg_userspace::loader::Sizes::default() };
    let mut inst = sg_userspace::loader::PrivateInstance::load_sized(&cfg, sizes).unwrap();
    let small = ruleset(
        "[groups.g]\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"192.0.2.0/24\" }]\n[interfaces.eth0]\ngroups = [\"g\"]\n",
    );
    apply(&mut inst, &small, "eth0", 1);
    // 65 /64s that differ in the fifth byte: one node for that byte, a tip below each of its
    // slots: 65 tips for 64.
    let hosts: Vec<String> = (0..65u32).map(|i| format!("\"2001:db8:{i:02x}00:1::/64\"")).collect();
    let big = ruleset(&format!(
        "[groups.g]\ningress = [{{ proto = \"tcp\", ports = \"80\", from = [{}] }}]\n[interfaces.eth0]\ngroups = [\"g\"]\n",
        hosts.join(", ")
    ));
    let plan = sg_userspace::rules::compile::compile_iface(&big, "eth0").unwrap();
    let before = inst.maps().config().unwrap();
    let err = inst.apply_plan(&plan, 2).unwrap_err().to_string();
    assert!(
        err.contains("65 prefix tips") && err.contains("hold 64") && err.contains("--prefix-capacity"),
        "{err}"
    );
    assert_eq!(inst.maps().config().unwrap(), before, "no flip");
    run_table(
        &mut inst,
        "kept",
        &[
            Row::allow("the rules applied before still allow", Ingress, tcp_in("192.0.2.9", 80), 0),
            Row::deny("and still deny", Ingress, tcp_in("198.51.100.9", 80)),
        ],
    );
}
