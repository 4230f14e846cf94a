//! The compiler: for structured random rule sets, the compiled plan (interpreted as the
//! datapath reads it: longest prefix match, then binary search) must decide every probe as
//! the reference model does, and its segments must be sorted, disjoint and point at real rules.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use sg_rules::{AwsContext, Dir, Format, compile, model, parse_str};

#[derive(Arbitrary, Debug)]
struct Rule {
    ingress: bool,
    proto: u8,
    lo: u16,
    span: u8,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    v6: bool,
    addr: u8,
    len: u8,
}

#[derive(Arbitrary, Debug)]
struct Probe {
    ingress: bool,
    v6: bool,
    addr: u8,
    proto: u8,
    port: u16,
    icmp: (u8, u8),
}

fn addr(v6: bool, a: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(a)))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, a))
    }
}

fn proto_name(p: u8) -> String {
    match p % 6 {
        0 => "tcp".into(),
        1 => "udp".into(),
        2 => "icmp".into(),
        3 => "icmpv6".into(),
        4 => "all".into(),
        _ => (p / 6).to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(rules) = Vec::<Rule>::arbitrary(&mut u) else { return };
    let Ok(probes) = Vec::<Probe>::arbitrary(&mut u) else { return };
    let mut text = String::from("[groups.g]\n");
    for dir in ["ingress", "egress"] {
        text.push_str(&format!("{dir} = [\n"));
        for r in rules.iter().take(40).filter(|r| r.ingress == (dir == "ingress")) {
            let p = proto_name(r.proto);
            let mut f = vec![format!("proto = \"{p}\"")];
            if p == "tcp" || p == "udp" {
                let hi = r.lo.saturating_add(u16::from(r.span));
                f.push(format!("ports = \"{}-{hi}\"", r.lo));
            }
            if p.starts_with("icmp") {
                if let Some(t) = r.icmp_type {
                    f.push(format!("icmp_type = {t}"));
                    if let Some(c) = r.icmp_code {
                        f.push(format!("icmp_code = {c}"));
                    }
                }
            }
            let max = if r.v6 { 128 } else { 32 };
            let net = ipnet::IpNet::new(addr(r.v6, r.addr), r.len % (max + 1)).unwrap().trunc();
            f.push(format!("{} = \"{net}\"", if dir == "ingress" { "from" } else { "to" }));
            text.push_str(&format!("  {{ {} }},\n", f.join(", ")));
        }
        text.push_str("]\n");
    }
    text.push_str("[interfaces.eth0]\ngroups = [\"g\"]\n");
    let rs = parse_str("gen.toml", &text, Format::Toml, &AwsContext::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let plan = compile::compile_iface(&rs, "eth0").expect("small sets fit");
    for e in &plan.entries {
        let segs = &plan.segments[e.set.start as usize..(e.set.start + e.set.count) as usize];
        for w in segs.windows(2) {
            assert!(w[0].hi < w[1].lo, "segments overlap or are unsorted: {segs:?}");
        }
        assert!(segs.iter().all(|s| s.lo <= s.hi && (s.rule as usize) < plan.rules.len()));
    }
    for p in probes.iter().take(40) {
        let (here, there) = (addr(p.v6, 1), addr(p.v6, p.addr));
        let dir = if p.ingress { Dir::Ingress } else { Dir::Egress };
        let (src, dst) = if p.ingress { (there, here) } else { (here, there) };
        let probe = model::Probe {
            src,
            dst,
            proto: p.proto,
            dport: p.port,
            icmp_type: p.icmp.0,
            icmp_code: p.icmp.1,
            later_fragment: false,
        };
        let want = model::evaluate(&rs, "eth0", dir, &probe).rule.map(|r| r as u32);
        let got = compile::interpret(&plan, dir, there, sg_common::policy::flow_key(p.proto, model::key_low16(&probe)));
        assert_eq!(got, want, "probe {probe:?}\n{text}");
    }
});
