//! Generated, realistic rule sets for the benchmark: `n` rules spread over several groups,
//! mixed prefix lengths (v4 /8../32, v6 /32../128), single ports, port ranges, whole
//! protocols, ICMP types, TCP and UDP, v4 and v6. Deterministic for a seed.
//!
//! The benchmark's own packets use sources no generated rule covers: denied packets come from
//! [`DENIED_V4`] / [`DENIED_V6`]; allowed packets from [`ALLOWED_V4`] / [`ALLOWED_V6`] to UDP
//! [`ALLOWED_PORT`], which the first rule of the first group allows (rule 0).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The interface name the generated rule sets bind their groups to (unless told another).
pub const IFACE: &str = "bench0";
pub const ALLOWED_PORT: u16 = 5201;
pub const DENIED_PORT: u16 = 9;
pub const ALLOWED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const DENIED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
pub const ALLOWED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 2);
pub const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 9);
/// The protected host's addresses (destination of the benchmark's packets).
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 1);

/// True when `net` covers one of the benchmark's packet sources (such a prefix is redrawn).
fn covers_bench_source(net: &IpNet) -> bool {
    [IpAddr::V4(ALLOWED_V4), IpAddr::V4(DENIED_V4), IpAddr::V6(ALLOWED_V6), IpAddr::V6(DENIED_V6)]
        .iter()
        .any(|a| net.contains(a))
}

fn random_v4(rng: &mut StdRng) -> IpNet {
    let len = match rng.random_range(0..100) {
        0..5 => rng.random_range(8..16),
        5..25 => 16,
        25..60 => 24,
        60..70 => rng.random_range(17..32),
        _ => 32,
    };
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(rng.random::<u32>()), len).expect("len <= 32").trunc())
}

fn random_v6(rng: &mut StdRng) -> IpNet {
    let len = match rng.random_range(0..100) {
        0..10 => rng.random_range(32..48),
        10..40 => 48,
        40..70 => 64,
        70..80 => rng.random_range(65..128),
        _ => 128,
    };
    // Inside 2001:db8::/32, like every address of this project.
    let low: u128 = rng.random::<u128>() >> 32;
    let addr = Ipv6Addr::from((0x2001_0db8u128 << 96) | low);
    IpNet::V6(Ipv6Net::new(addr, len).expect("len <= 128").trunc())
}

fn peer(rng: &mut StdRng) -> IpNet {
    loop {
        let net = if rng.random_bool(0.7) { random_v4(rng) } else { random_v6(rng) };
        if !covers_bench_source(&net) {
            return net;
        }
    }
}

/// One generated rule, as a TOML inline table.
fn rule(rng: &mut StdRng, egress: bool) -> String {
    let net = peer(rng);
    let dir = if egress { "to" } else { "from" };
    let what = match rng.random_range(0..100) {
        0..45 => format!("proto = \"tcp\", ports = \"{}\"", rng.random_range(1..=65535u16)),
        45..60 => {
            let lo = rng.random_range(1024..60000u16);
            format!("proto = \"tcp\", ports = \"{lo}-{}\"", lo + rng.random_range(1..2000))
        }
        60..80 => format!("proto = \"udp\", ports = \"{}\"", rng.random_range(1..=65535u16)),
        80..88 => {
            let lo = rng.random_range(1024..60000u16);
            format!("proto = \"udp\", ports = \"{lo}-{}\"", lo + rng.random_range(1..5000))
        }
        88..94 => {
            let proto = if net.addr().is_ipv6() { "icmpv6" } else { "icmp" };
            let t = if net.addr().is_ipv6() { 128 } else { 8 };
            format!("proto = \"{proto}\", icmp_type = {t}")
        }
        94..97 => "proto = \"tcp\", ports = \"0-65535\"".to_string(),
        _ => "proto = \"all\"".to_string(),
    };
    format!("  {{ {what}, {dir} = \"{net}\" }},\n")
}

/// A TOML rules file with `n` rules (ingress and egress, about 4:1) bound to [`IFACE`].
/// Rule 0 (the first ingress rule of group g0) allows UDP [`ALLOWED_PORT`] from the allowed
/// sources; it counts as one of the `n`.
pub fn rules_toml(n: usize, seed: u64) -> String {
    rules_toml_for(IFACE, n, seed)
}

/// As [`rules_toml`], bound to `iface`.
pub fn rules_toml_for(iface: &str, n: usize, seed: u64) -> String {
    assert!(n >= 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let groups = (n / 200).clamp(1, 8);
    let mut s = String::new();
    let mut left = n - 1;
    for g in 0..groups {
        let share = if g + 1 == groups { left } else { (n - 1) / groups };
        left -= share;
        let _ = writeln!(s, "[groups.g{g}]\ningress = [");
        if g == 0 {
            let _ = writeln!(
                s,
                "  {{ proto = \"udp\", ports = \"{ALLOWED_PORT}\", from = [\"{}\", \"{}\"] }},",
                Ipv4Net::new(ALLOWED_V4, 24).expect("/24").trunc(),
                Ipv6Net::new(ALLOWED_V6, 48).expect("/48").trunc()
            );
        }
        let egress = share / 5;
        for _ in 0..share - egress {
            s.push_str(&rule(&mut rng, false));
        }
        s.push_str("]\negress = [\n");
        if g == 0 {
            s.push_str("  { proto = \"all\", to = [\"0.0.0.0/0\", \"::/0\"] },\n");
        }
        for _ in 0..egress {
            s.push_str(&rule(&mut rng, true));
        }
        s.push_str("]\n\n");
    }
    let names: Vec<String> = (0..groups).map(|g| format!("\"g{g}\"")).collect();
    let _ = writeln!(s, "[interfaces.{iface}]\ngroups = [{}]", names.join(", "));
    s
}

/// A TOML rules file whose ingress rules name `n` distinct peer prefixes (mixed lengths, v4
/// and v6 as in [`rules_toml`]): 10 rules, each naming a prefix list of `n / 10` entries (a
/// list reference is one rule for the quotas), after the allowed rule 0 of [`rules_toml`];
/// bound to [`IFACE`]. Egress allows everything.
pub fn prefixes_toml(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut s = format!(
        "[groups.g0]\ningress = [\n  {{ proto = \"udp\", ports = \"{ALLOWED_PORT}\", from = [\"{}\", \"{}\"] }},\n",
        Ipv4Net::new(ALLOWED_V4, 24).expect("/24").trunc(),
        Ipv6Net::new(ALLOWED_V6, 48).expect("/48").trunc()
    );
    let mut lists = String::new();
    for r in 0..10 {
        let mut nets = Vec::with_capacity(n / 10);
        while nets.len() < n / 10 {
            let net = peer(&mut rng);
            if seen.insert(net) {
                nets.push(format!("\"{net}\""));
            }
        }
        let _ =
            writeln!(s, "  {{ proto = \"tcp\", ports = \"{}\", from_prefix_list = \"pl{r}\" }},", 1000 + r);
        let _ = writeln!(lists, "[prefix_lists.pl{r}]\nentries = [{}]\n", nets.join(", "));
    }
    let _ = writeln!(s, "]\negress = [ {{ proto = \"all\", to = [\"0.0.0.0/0\", \"::/0\"] }} ]\n");
    s.push_str(&lists);
    let _ = writeln!(s, "[interfaces.{IFACE}]\ngroups = [\"g0\"]");
    s
}

/// [`rules_toml`] with `n` rules and a network ACL bound to [`IFACE`] whose ingress has
/// `entries` entries: `entries - 2` deny entries of random peers (none covering a benchmark
/// source, mixed lengths and protocols as the rules), then allow-all for IPv4 and IPv6 (what an
/// operator writes after a deny list); its egress allows all. The benchmark's packets meet the
/// whole list and pass it.
pub fn acl_toml(n: usize, entries: usize, seed: u64) -> String {
    assert!(entries >= 2);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xac1);
    let mut s = rules_toml(n, seed);
    let _ = writeln!(s, "acl = \"bench\"\n\n[acls.bench]");
    for (dir, denies) in [("ingress", entries - 2), ("egress", 0)] {
        let _ = writeln!(s, "{dir} = [");
        for i in 0..denies {
            // A rule's match fields, with its peer as the entry's CIDR.
            let r = rule(&mut rng, false);
            let (what, net) = r
                .trim()
                .trim_start_matches("{ ")
                .trim_end_matches(" },")
                .rsplit_once(", from = ")
                .expect("a rule");
            let _ = writeln!(s, "  {{ rule = {}, action = \"deny\", {what}, cidr = {net} }},", i + 1);
        }
        let _ =
            writeln!(s, "  {{ rule = 32765, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }},");
        let _ = writeln!(s, "  {{ rule = 32766, action = \"allow\", proto = \"all\", cidr = \"::/0\" }},\n]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rules_and_keeps_bench_sources_free() {
        for n in [1, 100, 1000] {
            let text = rules_toml(n, 7);
            let rs = sg_tests::policy::ruleset(&text);
            let rules = rs.iface_rules(IFACE);
            // The allowed rule has two peers (v4 and v6) and the egress allow-all two more.
            let lines: std::collections::BTreeSet<(String, usize, String)> =
                rules.iter().map(|r| (r.group.clone(), r.rule.index, r.dir.as_str().to_string())).collect();
            assert_eq!(lines.len(), n + 1, "n={n}");
        }
    }

    #[test]
    fn acls_hold_their_entries_and_pass_the_bench_packets() {
        let rs = sg_tests::policy::ruleset(&acl_toml(1, 20, 5));
        let acl = rs.iface_acl(IFACE).expect("bound");
        assert_eq!((acl.ingress.len(), acl.egress.len()), (20, 2));
        let probe = |src: IpAddr, dst: IpAddr| sg_userspace::rules::model::Probe {
            src,
            dst,
            proto: 17,
            dport: ALLOWED_PORT,
            icmp_type: 0,
            icmp_code: 0,
            later_fragment: false,
        };
        use sg_userspace::rules::Dir;
        for (src, dst) in
            [(IpAddr::V4(ALLOWED_V4), IpAddr::V4(HOST_V4)), (IpAddr::V6(DENIED_V6), IpAddr::V6(HOST_V6))]
        {
            assert!(acl.decide(Dir::Ingress, &probe(src, dst)).allows());
            assert!(acl.decide(Dir::Egress, &probe(dst, src)).allows());
        }
    }

    #[test]
    fn prefix_sets_hold_n_distinct_prefixes() {
        let rs = sg_tests::policy::ruleset(&prefixes_toml(1000, 3));
        let plan = sg_userspace::rules::compile::compile_iface(&rs, IFACE).unwrap();
        // The allowed rule's two prefixes, 1,000 generated ones, the egress allow-all's two.
        assert_eq!(plan.entries.len(), 1004);
    }
}
