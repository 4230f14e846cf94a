//! Differential test: random rule sets (half of them with a network ACL) and random packets;
//! the kernel's verdict (reason and rule id, or the deciding ACL entry, read from the recorded
//! packet summary) must equal the reference model's. Every allowed TCP or UDP packet is
//! followed by its reply (twice), which conntrack admits and the (stateless) ACL decides
//! again, the second time from the allow cached in the flow's entry; each rule set leaves a
//! UDP flow tracked, whose packets the next rule set's ACL must decide (the cache holds only
//! under the ACL epoch that made it). Every other rule set arrives by two flips, so that the
//! carried flow's cached allows name the active generation and only the epoch makes them stale.
//!
//! At least 100,000 (rule set, packet) pairs per run. The seed is printed; replay a failure
//! with `SG_DIFF_SEED=<seed> cargo test -p sg-tests --test differential`.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sg_common::{
    Direction, Reason,
    policy::{NO_RULE, acl_slot, rule_slot},
};
use sg_tests::{
    packet::Pkt,
    policy::{apply, recording_instance, ruleset},
    require_bpf,
};
use sg_userspace::{
    loader::PrivateInstance,
    rules::{
        Dir,
        model::{self, Probe},
    },
};

const RULE_SETS: usize = 250;
const PACKETS_PER_SET: usize = 400;

const V4_BASES: [[u8; 4]; 3] = [[192, 0, 2, 0], [198, 51, 100, 0], [203, 0, 113, 0]];
const V4_LENS: [u8; 10] = [0, 8, 16, 22, 24, 25, 26, 28, 31, 32];
const V6_LENS: [u8; 9] = [0, 16, 32, 48, 64, 96, 120, 127, 128];
const PORTS: [u16; 12] = [0, 1, 22, 53, 79, 80, 443, 1023, 1024, 8080, 65534, 65535];
const PROTOS: [&str; 8] = ["tcp", "udp", "icmp", "icmpv6", "all", "47", "132", "tcp"];
const ICMP_TYPES: [i64; 7] = [-1, 0, 3, 8, 128, 135, 255];
const ICMP_CODES: [i64; 4] = [-1, 0, 4, 255];

fn v4_addr(rng: &mut StdRng) -> Ipv4Addr {
    let b = *V4_BASES.choose(rng).unwrap();
    // Mostly low host numbers so that prefixes nest and collide often.
    let host = if rng.random_bool(0.7) { rng.random_range(0..16) } else { rng.random::<u8>() };
    Ipv4Addr::new(b[0], b[1], b[2], host)
}

fn v6_addr(rng: &mut StdRng) -> Ipv6Addr {
    let mut seg = [0x2001u16, 0x0db8, 0, 0, 0, 0, 0, 0];
    seg[2] = *[0u16, 1, 0xaaaa].choose(rng).unwrap();
    seg[7] = rng.random_range(0..16);
    if rng.random_bool(0.2) {
        seg[5] = rng.random();
    }
    Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7])
}

fn cidr(rng: &mut StdRng) -> IpNet {
    if rng.random_bool(0.5) {
        let len = *V4_LENS.choose(rng).unwrap();
        IpNet::new(IpAddr::V4(v4_addr(rng)), len).unwrap().trunc()
    } else {
        let len = *V6_LENS.choose(rng).unwrap();
        IpNet::new(IpAddr::V6(v6_addr(rng)), len).unwrap().trunc()
    }
}

/// The protocol, ports and ICMP fields of a rule or an ACL entry.
fn match_fields(rng: &mut StdRng) -> Vec<String> {
    let proto = *PROTOS.choose(rng).unwrap();
    let mut f = vec![format!("proto = \"{proto}\"")];
    match proto {
        "tcp" | "udp" if rng.random_bool(0.8) => {
            let a = *PORTS.choose(rng).unwrap();
            let b = *PORTS.choose(rng).unwrap();
            let (lo, hi) = (a.min(b), a.max(b));
            let lo =
                if rng.random_bool(0.3) { lo.saturating_add(rng.random_range(0..3)).min(hi) } else { lo };
            f.push(format!("ports = \"{lo}-{hi}\""));
        }
        "icmp" | "icmpv6" => {
            let t = *ICMP_TYPES.choose(rng).unwrap();
            f.push(format!("icmp_type = {t}"));
            if t >= 0 {
                f.push(format!("icmp_code = {}", ICMP_CODES.choose(rng).unwrap()));
            }
        }
        _ => {}
    }
    f
}

fn rule_line(rng: &mut StdRng, dir: &str, members: &[String]) -> String {
    let mut f = match_fields(rng);
    let (cidr_key, group_key, list_key) = if dir == "ingress" {
        ("from", "from_group", "from_prefix_list")
    } else {
        ("to", "to_group", "to_prefix_list")
    };
    match rng.random_range(0..10) {
        0 if !members.is_empty() => f.push(format!("{group_key} = \"{}\"", members.choose(rng).unwrap())),
        1 => f.push(format!("{list_key} = \"pl\"")),
        _ => {
            let n = rng.random_range(1..=3);
            let nets: Vec<String> = (0..n).map(|_| format!("\"{}\"", cidr(rng))).collect();
            f.push(format!("{cidr_key} = [{}]", nets.join(", ")));
        }
    }
    format!("  {{ {} }},\n", f.join(", "))
}

/// A random rule set in sgctl TOML, binding a random non-empty subset of groups to `eth0`.
fn random_rules(rng: &mut StdRng) -> String {
    let mut t = String::new();
    let n_groups = rng.random_range(1..=3);
    let names: Vec<String> = (0..n_groups).map(|i| format!("g{i}")).collect();
    let member_groups = vec!["peers".to_string()];
    for name in &names {
        let _ = writeln!(t, "[groups.{name}]");
        for dir in ["ingress", "egress"] {
            if dir == "egress" && rng.random_bool(0.25) {
                continue; // AWS default egress
            }
            let _ = writeln!(t, "{dir} = [");
            for _ in 0..rng.random_range(0..=12) {
                t.push_str(&rule_line(rng, dir, &member_groups));
            }
            let _ = writeln!(t, "]");
        }
    }
    let members: Vec<String> = (0..rng.random_range(1..5))
        .map(|_| if rng.random_bool(0.5) { v4_addr(rng).to_string() } else { v6_addr(rng).to_string() })
        .map(|a| format!("\"{a}\""))
        .collect();
    let _ = writeln!(t, "[groups.peers]\nmembers = [{}]", members.join(", "));
    let entries: Vec<String> = (0..rng.random_range(1..4)).map(|_| format!("\"{}\"", cidr(rng))).collect();
    let _ = writeln!(t, "[prefix_lists.pl]\nentries = [{}]", entries.join(", "));
    let mut bound: Vec<&String> = names.iter().filter(|_| rng.random_bool(0.6)).collect();
    if bound.is_empty() {
        bound.push(&names[0]);
    }
    let bound: Vec<String> = bound.iter().map(|n| format!("\"{n}\"")).collect();
    let _ = writeln!(t, "[interfaces.eth0]\ngroups = [{}]", bound.join(", "));
    if rng.random_bool(0.5) {
        let _ = writeln!(t, "acl = \"a\"");
        t.push_str(&random_acl(rng));
    }
    t
}

/// A random network ACL `a`: numbered entries, allow and deny, nested CIDRs; the ephemeral
/// ports of the replies (40000) are often allowed, so that both outcomes of a reply occur.
fn random_acl(rng: &mut StdRng) -> String {
    let mut t = String::from("[acls.a]\n");
    for dir in ["ingress", "egress"] {
        let _ = writeln!(t, "{dir} = [");
        let mut numbers: Vec<u16> =
            (0..rng.random_range(0..=10)).map(|_| rng.random_range(1..=32764)).collect();
        numbers.sort_unstable();
        numbers.dedup();
        for n in numbers {
            let action = if rng.random_bool(0.6) { "allow" } else { "deny" };
            let mut f = vec![format!("rule = {n}"), format!("action = \"{action}\"")];
            if rng.random_bool(0.2) {
                f.push(format!("proto = \"{}\"", ["tcp", "udp"].choose(rng).unwrap()));
                f.push("ports = \"32768-65535\"".to_string());
            } else {
                f.extend(match_fields(rng));
            }
            let net = match rng.random_range(0..8) {
                0 => "0.0.0.0/0".to_string(),
                1 => "::/0".to_string(),
                _ => cidr(rng).to_string(),
            };
            f.push(format!("cidr = \"{net}\""));
            let _ = writeln!(t, "  {{ {} }},", f.join(", "));
        }
        if rng.random_bool(0.3) {
            // The last entries allow the rest (what an operator writes after a deny list).
            let _ = writeln!(
                t,
                "  {{ rule = 32765, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }},"
            );
            let _ =
                writeln!(t, "  {{ rule = 32766, action = \"allow\", proto = \"all\", cidr = \"::/0\" }},");
        }
        let _ = writeln!(t, "]");
    }
    t
}

/// The reply to a TCP or UDP probe: the other direction, ports swapped.
fn reply_of(p: &Probe) -> Probe {
    Probe { src: p.dst, dst: p.src, dport: 40000, ..*p }
}

/// The frame of the reply to `probe` (TCP: a SYN-ACK).
fn reply_frame(probe: &Probe) -> Vec<u8> {
    let reply = reply_of(probe);
    match probe.proto {
        6 => Pkt::tcp(reply.src, reply.dst, probe.dport, 40000).flags(0x12).build(),
        _ => Pkt::udp(reply.src, reply.dst, probe.dport, 40000).build(),
    }
}

fn mdir_of(dir: Direction) -> Dir {
    if dir == Direction::Ingress { Dir::Ingress } else { Dir::Egress }
}

fn other(dir: Direction) -> Direction {
    if dir == Direction::Ingress { Direction::Egress } else { Direction::Ingress }
}

/// What the kernel records as the rule of a decision: the rule slot of the allowing rule, the
/// ACL slot of a denying ACL entry, nothing for the ACL's final rule.
fn want_slot(rs: &sg_userspace::rules::RuleSet, dir: Dir, d: &model::Decision, gen_: u8) -> u32 {
    match d.reason {
        Reason::AclDeny => {
            let acl = rs.iface_acl("eth0").expect("an ACL decided");
            let entry = d.acl.and_then(sg_userspace::rules::acl::AclVerdict::entry).expect("a deny entry");
            acl_slot(gen_, acl.entry_id(dir, entry) as u32)
        }
        Reason::AclDefault | Reason::NoRule | Reason::TcpNotSyn | Reason::FragmentNoFirst => NO_RULE,
        _ => d.rule.map_or(NO_RULE, |r| rule_slot(gen_, r as u32)),
    }
}

/// A random probe, biased towards the rule set's own addresses and edge ports.
fn random_probe(rng: &mut StdRng, dir: Direction) -> Probe {
    let v6 = rng.random_bool(0.5);
    let host =
        if v6 { IpAddr::V6("2001:db8::1".parse().unwrap()) } else { IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)) };
    // A peer is never the host itself (packets from outside with the host's address are the
    // spoofed ones, made on purpose by the caller).
    let peer = loop {
        let p = if v6 { IpAddr::V6(v6_addr(rng)) } else { IpAddr::V4(v4_addr(rng)) };
        if p != host {
            break p;
        }
    };
    let (src, dst) = if dir == Direction::Ingress { (peer, host) } else { (host, peer) };
    let proto = match rng.random_range(0..10) {
        0..=3 => 6,
        4..=5 => 17,
        6..=7 => {
            if v6 {
                58
            } else {
                1
            }
        }
        8 => 47,
        _ => *[132u8, 50, 1, 58].choose(rng).unwrap(),
    };
    let dport = if rng.random_bool(0.8) {
        let p = *PORTS.choose(rng).unwrap();
        p.saturating_add(rng.random_range(0..2))
    } else {
        rng.random()
    };
    Probe {
        src,
        dst,
        proto,
        dport,
        icmp_type: *[0u8, 3, 8, 11, 1, 2, 128, 135, 255].choose(rng).unwrap(),
        icmp_code: *[0u8, 4, 255, 1].choose(rng).unwrap(),
        later_fragment: !v6 && rng.random_bool(0.03),
    }
}

/// ICMP errors (v4 unreachable/time-exceeded, v6 unreachable/too-big/time-exceeded) carry a
/// quoted packet; here one of an untracked flow, so the rules decide them like other ICMP.
fn is_icmp_error(p: &Probe) -> bool {
    match (p.proto, p.src.is_ipv6()) {
        (1, false) => matches!(p.icmp_type, 3 | 11),
        (58, true) => matches!(p.icmp_type, 1..=3),
        _ => false,
    }
}

/// The packets that follow an allowed flow start `probe` (direction `dir`) of a tracked
/// flow: its reply twice, and for UDP the first side twice more, each checked with `check`
/// (labelled with `what`). Returns how many.
fn follow_up(
    inst: &mut PrivateInstance,
    check: &impl Fn(&mut PrivateInstance, Direction, &Probe, model::Decision, Vec<u8>, &str),
    rs: &sg_userspace::rules::RuleSet,
    dir: Direction,
    probe: &Probe,
    what: &str,
) -> usize {
    let reply = reply_of(probe);
    for n in ["reply", "reply again"] {
        let want = model::evaluate_tracked(rs, "eth0", mdir_of(other(dir)), &reply, Reason::CtReply);
        check(inst, other(dir), &reply, want, reply_frame(probe), &format!("{what}{n}"));
    }
    if probe.proto == 6 {
        // A blind RST from the responder: far outside its sequence space (the SYN-ACK's
        // sequence number is 1000), whatever the ACL says it changes nothing.
        let want = model::Decision { reason: Reason::TcpSeqInvalid, rule: None, acl: None };
        let rst = Pkt::tcp(reply.src, reply.dst, probe.dport, 40000).flags(0x04).seq(0x8000_0000).build();
        check(inst, other(dir), &reply, want, rst, &format!("{what}blind RST"));
        return 3;
    }
    if probe.proto != 17 {
        return 2;
    }
    for n in ["first side again", "first side a third time"] {
        let want = model::evaluate_tracked(rs, "eth0", mdir_of(dir), probe, Reason::CtEstablished);
        check(inst, dir, probe, want, frame(probe, true), &format!("{what}{n}"));
    }
    4
}

/// An ICMP echo request of the probe's family.
fn is_echo_request(p: &Probe) -> bool {
    matches!((p.proto, p.src.is_ipv6(), p.icmp_type), (1, false, 8) | (58, true, 128))
}

/// After an allowed echo request `probe` (a tracked flow): the pinged side's own echo request
/// with the same identifier (not the flow's: the rules decide it), then its echo reply (the
/// flow's reply). Returns how many.
fn echo_follow_up(
    inst: &mut PrivateInstance,
    check: &impl Fn(&mut PrivateInstance, Direction, &Probe, model::Decision, Vec<u8>, &str),
    rs: &sg_userspace::rules::RuleSet,
    local: &[IpAddr],
    dir: Direction,
    probe: &Probe,
) -> usize {
    let back = Probe { src: probe.dst, dst: probe.src, ..*probe };
    let want = model::evaluate_untracked(rs, "eth0", local, mdir_of(other(dir)), &back);
    check(inst, other(dir), &back, want, frame(&back, true), "the pinged side's own echo request, ");
    let reply = Probe { icmp_type: if probe.proto == 1 { 0 } else { 129 }, ..back };
    let want = model::evaluate_tracked(rs, "eth0", mdir_of(other(dir)), &reply, Reason::CtReply);
    check(inst, other(dir), &reply, want, frame(&reply, true), "echo reply, ");
    2
}

fn frame(p: &Probe, syn: bool) -> Vec<u8> {
    if p.later_fragment {
        return Pkt::raw(p.src, p.dst, p.proto, &[0; 16]).ipv4_fragment(false, 5, 1).build();
    }
    if is_icmp_error(p) {
        let quoted = Pkt::udp(p.dst, p.src, 33000, 53);
        return Pkt::icmp_error(p.src, p.dst, p.icmp_type, p.icmp_code, &quoted, 48).build();
    }
    match p.proto {
        6 if syn => Pkt::tcp(p.src, p.dst, 40000, p.dport).syn().build(),
        6 => Pkt::tcp(p.src, p.dst, 40000, p.dport).build(),
        17 => Pkt::udp(p.src, p.dst, 40000, p.dport).build(),
        1 | 58 if (p.proto == 58) == p.src.is_ipv6() => {
            Pkt::icmp(p.src, p.dst, p.icmp_type, p.icmp_code).build()
        }
        n => Pkt::raw(p.src, p.dst, n, &[0; 16]).build(),
    }
}

#[test]
fn kernel_verdicts_equal_the_reference_model() {
    if !require_bpf("kernel_verdicts_equal_the_reference_model") {
        return;
    }
    let seed: u64 = std::env::var("SG_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("differential seed {seed} (replay: SG_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inst = recording_instance();
    // The interface's own addresses: a packet arriving with one as its source is dropped.
    let local: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    inst.maps_mut().set_local_addrs(&local).expect("own addresses");
    let mut pairs = 0;
    let mut spoofed = 0;
    let mut echoes = 0;
    let mut allowed = 0;
    let mut by_acl = [0usize; 3];
    let mut carried: Option<(Probe, Direction)> = None;
    let mut carried_over = 0;
    for set in 0..RULE_SETS {
        let text = random_rules(&mut rng);
        let rs = ruleset(&text);
        // Every other rule set arrives by two flips (the plan applied twice): the carried flow's
        // cached allows then name the active generation, and only the ACL epoch makes them stale.
        let seq = 2 * set as u64 + 1;
        if set % 2 == 1 {
            apply(&mut inst, &rs, "eth0", seq);
        }
        apply(&mut inst, &rs, "eth0", seq + 1);
        let gen_ = inst.maps().config().unwrap().active_gen & 1;
        let check = |inst: &mut PrivateInstance,
                     dir: Direction,
                     probe: &Probe,
                     want: model::Decision,
                     got_frame: Vec<u8>,
                     what: &str| {
            let mdir = mdir_of(dir);
            inst.run(dir, &got_frame).expect("test run");
            let got = inst.maps().last_parse().expect("summary");
            // The slot names the generation too: a rule of the other one is a mismatch.
            let want_slot = want_slot(&rs, mdir, &want, gen_);
            assert!(
                !(Reason::from_u32(got.reason) != Some(want.reason) || got.rule != want_slot),
                "seed {seed} (SG_DIFF_SEED={seed}), rule set #{set}, {what} {} probe {probe:?}:\n  kernel: {:?} slot {:#x}\n  model:  {:?} rule {:?} acl {:?} (slot {want_slot:#x})\nrules:\n{text}",
                dir.as_str(),
                Reason::from_u32(got.reason),
                got.rule,
                want.reason,
                want.rule,
                want.acl,
            );
        };
        // The previous rule set's carried flow: its packets are decided by this rule set's
        // ACL (an allow cached under the old ACL epoch stands for nothing); conntrack keeps the
        // flow (no --revoke).
        if let Some((probe, dir)) = carried.take() {
            pairs += follow_up(&mut inst, &check, &rs, dir, &probe, "carried over, ");
            carried_over += 1;
        }
        for _ in 0..PACKETS_PER_SET {
            let dir = if rng.random_bool(0.5) { Direction::Ingress } else { Direction::Egress };
            let mut probe = random_probe(&mut rng, dir);
            if dir == Direction::Ingress && rng.random_bool(0.05) {
                // Spoofed: the interface's own address as the source.
                probe.src = probe.dst;
                spoofed += 1;
            }
            let mdir = mdir_of(dir);
            let mut want = model::evaluate_untracked(&rs, "eth0", &local, mdir, &probe);
            // Every packet is a flow of its own here: the tables are emptied before each.
            inst.maps_mut().ct_flush().expect("flush conntrack");
            let syn = rng.random_bool(0.8);
            if probe.proto == 6 && !syn && !probe.later_fragment && want.reason == Reason::NoRule {
                // A denied TCP packet that is not a SYN has its own reason.
                want.reason = Reason::TcpNotSyn;
            }
            check(&mut inst, dir, &probe, want, frame(&probe, syn), "first");
            match want.acl {
                Some(model_acl) if model_acl.allows() => by_acl[0] += 1,
                Some(model_acl) if model_acl.entry().is_some() => by_acl[1] += 1,
                Some(_) => by_acl[2] += 1,
                None => {}
            }
            allowed += usize::from(want.reason == Reason::RuleAllow);
            pairs += 1;
            // The reply of an allowed TCP or UDP flow: conntrack admits it, the ACL of the
            // other direction decides it again (the groups of that direction do not), twice:
            // the second time from the allow the first cached in the flow's entry. A UDP
            // flow's first side is sent twice more too (a miss, then a hit of its cache).
            // (A TCP packet other than a SYN passes without starting a flow.)
            let is_tracked = (probe.proto == 6 && syn) || probe.proto == 17;
            if want.reason == Reason::RuleAllow && is_tracked && !probe.later_fragment {
                pairs += follow_up(&mut inst, &check, &rs, dir, &probe, "");
            }
            if want.reason == Reason::RuleAllow && is_echo_request(&probe) && !probe.later_fragment {
                pairs += echo_follow_up(&mut inst, &check, &rs, &local, dir, &probe);
                echoes += 1;
            }
        }
        // A UDP flow left tracked for the next rule set, its ACL allows cached on both sides.
        inst.maps_mut().ct_flush().expect("flush conntrack");
        for _ in 0..2000 {
            let dir = if rng.random_bool(0.5) { Direction::Ingress } else { Direction::Egress };
            let probe = Probe { proto: 17, later_fragment: false, ..random_probe(&mut rng, dir) };
            let want = model::evaluate_untracked(&rs, "eth0", &local, mdir_of(dir), &probe);
            if want.reason == Reason::RuleAllow {
                check(&mut inst, dir, &probe, want, frame(&probe, true), "carried first");
                pairs += 1 + follow_up(&mut inst, &check, &rs, dir, &probe, "carried ");
                carried = Some((probe, dir));
                break;
            }
        }
    }
    println!(
        "differential: {pairs} (rule set, packet) pairs agree, {allowed} allowed first packets; ACL allowed {}, denied by an entry {}, by its final rule {}; {carried_over} flows carried into the next rule set",
        by_acl[0], by_acl[1], by_acl[2]
    );
    println!("differential: {spoofed} spoofed first packets, {echoes} echo flows followed up");
    assert!(pairs >= 100_000);
    assert!(spoofed > 100 && echoes > 10, "spoofed {spoofed}, echoes {echoes}: generator is off balance");
    assert!(carried_over > RULE_SETS / 2, "only {carried_over} flows carried across rule sets");
    // A generator that only produced denials (or only allows) would test little.
    let firsts = RULE_SETS * PACKETS_PER_SET;
    assert!(
        allowed > firsts / 10 && allowed < firsts * 9 / 10,
        "allowed {allowed} of {firsts}: generator is off balance"
    );
    assert!(by_acl.iter().all(|&n| n > firsts / 100), "ACL outcomes off balance: {by_acl:?}");
}
