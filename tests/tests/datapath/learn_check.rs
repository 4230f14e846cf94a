//! `sgctl learn`'s built-in check (issue 32): observed flow starts run through a private
//! instance of the real programs holding a candidate; what it refuses is named with the
//! reason, what no packet can stand for is counted apart.

use sg_tests::require_bpf;
use sg_userspace::rules::{
    AwsContext, Dir, Format,
    learn::{ObsKey, Observations},
    parse_str,
};

fn key(dir: Dir, proto: u8, service: u16, peer: &str) -> ObsKey {
    ObsKey { iface: "eth0".into(), dir, proto, service, peer: peer.parse().unwrap() }
}

#[test]
fn the_datapath_check_names_what_a_candidate_refuses() {
    if !require_bpf("the_datapath_check_names_what_a_candidate_refuses") {
        return;
    }
    let rs = parse_str(
        "cand.toml",
        "[groups.g]\ningress = [ { proto = \"tcp\", ports = \"22\", from = \"192.0.2.0/24\" },\n  \
         { proto = \"icmpv6\", icmp_type = 128, from = \"2001:db8::/32\" } ]\n\n[interfaces.eth0]\ngroups = [\"g\"]\n",
        Format::Toml,
        &AwsContext::default(),
    )
    .unwrap();
    let mut obs = Observations::new(100);
    for _ in 0..4 {
        obs.record(key(Dir::Ingress, 6, 22, "192.0.2.5"), 10);
    }
    obs.record(key(Dir::Ingress, 58, 0x8000, "2001:db8::5"), 10);
    obs.record(key(Dir::Ingress, 6, 80, "192.0.2.5"), 10);
    obs.record(key(Dir::Ingress, 17, 53, "198.51.100.1"), 10);
    obs.record(key(Dir::Ingress, 47, 0, "192.0.2.5"), 10);
    let c = sg_userspace::learn::check(&rs, &obs, |_, _| true).expect("check");
    assert_eq!((c.flows, c.allowed, c.skipped), (7, 5, 1), "{c:?}");
    let refused: Vec<(u16, &str)> = c.refused.iter().map(|(k, r)| (k.service, *r)).collect();
    assert_eq!(refused, [(80, "no_rule"), (53, "no_rule")], "{c:?}");
}
