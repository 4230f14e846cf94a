//! Network ACLs: the stateless, numbered allow/deny layer beside the security groups (AWS's
//! subnet-level firewall), and its reference semantics.
//!
//! An ACL holds, per direction, entries numbered 1-32766. A packet meets them lowest number
//! first; the first entry whose CIDR covers the packet's peer address (source at ingress,
//! destination at egress) and whose protocol and ports (or ICMP type/code) cover the packet
//! decides, allow or deny; a packet no entry matches is denied (the implicit final rule, `*`
//! in AWS). Nothing is tracked: every packet is checked, replies of tracked flows included, so
//! return traffic needs entries of its own (the ephemeral ports), as in AWS.
//!
//! Order with the security groups (as AWS): at ingress the ACL decides first, at egress after
//! the groups and conntrack. A packet passes only when both layers let it.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sg_common::Reason;

use crate::{
    Dir, Loc, Ports, Proto,
    key::{Probe, key_low16, key_range},
};

/// Highest rule number an operator can give (AWS: 32766; 32767 is the implicit final deny).
pub const MAX_ACL_RULE: u16 = 32766;

/// What a matching ACL entry does to the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclAction {
    Allow,
    Deny,
}

impl AclAction {
    /// The TOML and AWS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Allow => "allow",
            AclAction::Deny => "deny",
        }
    }
}

/// One checked ACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// The rule number (1-32766, unique in its direction): lower numbers are met first.
    pub number: u16,
    pub action: AclAction,
    pub proto: Proto,
    pub ports: Ports,
    pub cidr: IpNet,
    pub loc: Loc,
}

impl AclEntry {
    /// Does the entry match a packet whose peer address is `peer` and flow key `key`
    /// (`sg_common::policy::flow_key`)?
    pub fn matches(&self, peer: std::net::IpAddr, key: u32) -> bool {
        let (lo, hi) = key_range(self.proto, self.ports);
        (lo..=hi).contains(&key) && self.cidr.contains(&peer)
    }

    /// The entry as one line: `100 allow tcp 443 from 0.0.0.0/0`.
    pub fn describe(&self, dir: Dir) -> String {
        let rule = crate::Rule {
            proto: self.proto,
            ports: self.ports,
            peer: crate::Peer::Cidr(self.cidr),
            description: None,
            index: 0,
            loc: Loc::default(),
        };
        format!("{} {} {}", self.number, self.action.as_str(), rule.describe(dir))
    }

    /// Identity of an entry across applies, for carrying hit counts over: everything but its
    /// location.
    pub fn identity(&self) -> (u16, AclAction, Proto, Ports, IpNet) {
        (self.number, self.action, self.proto, self.ports, self.cidr)
    }
}

/// A checked network ACL: entries of each direction sorted by rule number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub name: String,
    /// AWS NetworkAclId (acl-...), kept for import and export.
    #[serde(default)]
    pub aws_id: Option<String>,
    #[serde(default)]
    pub aws_vpc: Option<String>,
    pub ingress: Vec<AclEntry>,
    pub egress: Vec<AclEntry>,
    pub loc: Loc,
}

/// How an ACL decided a packet: by an entry (its index in [`Acl::entries`] of the direction),
/// or by the implicit final deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclVerdict {
    Allow {
        entry: usize,
    },
    Deny {
        entry: usize,
    },
    /// No entry matched: the implicit final deny (`acl_default`).
    Default,
}

impl AclVerdict {
    pub fn allows(self) -> bool {
        matches!(self, AclVerdict::Allow { .. })
    }

    /// The datapath's reason for dropping the packet, `None` when the ACL allows it.
    pub fn drop_reason(self) -> Option<Reason> {
        match self {
            AclVerdict::Allow { .. } => None,
            AclVerdict::Deny { .. } => Some(Reason::AclDeny),
            AclVerdict::Default => Some(Reason::AclDefault),
        }
    }

    /// The deciding entry's index, if an entry decided.
    pub fn entry(self) -> Option<usize> {
        match self {
            AclVerdict::Allow { entry } | AclVerdict::Deny { entry } => Some(entry),
            AclVerdict::Default => None,
        }
    }
}

impl Acl {
    pub fn entries(&self, dir: Dir) -> &[AclEntry] {
        match dir {
            Dir::Ingress => &self.ingress,
            Dir::Egress => &self.egress,
        }
    }

    /// Every entry with its direction, in entry id order ([`Acl::entry_id`]).
    pub fn by_id(&self) -> impl Iterator<Item = (Dir, &AclEntry)> {
        Dir::BOTH.into_iter().flat_map(move |d| self.entries(d).iter().map(move |e| (d, e)))
    }

    /// An entry's id on an interface bound to this ACL: ingress entries first, then egress,
    /// each in rule-number order (what per-entry counters are indexed by).
    pub fn entry_id(&self, dir: Dir, index: usize) -> usize {
        match dir {
            Dir::Ingress => index,
            Dir::Egress => self.ingress.len() + index,
        }
    }

    /// The reference semantics: the first entry (lowest number) matching the packet decides.
    pub fn decide(&self, dir: Dir, p: &Probe) -> AclVerdict {
        let peer = match dir {
            Dir::Ingress => p.src,
            Dir::Egress => p.dst,
        };
        let key = sg_common::policy::flow_key(p.proto, key_low16(p));
        match self.entries(dir).iter().position(|e| e.matches(peer, key)) {
            Some(i) if self.entries(dir)[i].action == AclAction::Allow => AclVerdict::Allow { entry: i },
            Some(i) => AclVerdict::Deny { entry: i },
            None => AclVerdict::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
    use sg_common::Reason;

    use super::*;
    use crate::{
        AwsContext, Format, RuleSet,
        compile::{compile_iface, interpret_acl},
        model::{Probe, evaluate, key_low16},
        parse_str, toml_out,
    };

    fn parse(text: &str) -> Result<RuleSet, crate::RuleErrors> {
        parse_str("t.toml", text, Format::Toml, &AwsContext::default())
    }

    const PUBLIC: &str = r#"
[groups.web]
ingress = [
  { proto = "tcp", ports = "443", from = ["0.0.0.0/0", "::/0"] },
  { proto = "tcp", ports = "22", from = "198.51.100.0/24" },
]
[acls.public]
ingress = [
  { rule = 100, action = "allow", proto = "tcp", ports = "443", cidr = "0.0.0.0/0" },
  { rule = 90, action = "deny", proto = "all", cidr = "203.0.113.0/24" },
  { rule = 110, action = "allow", proto = "tcp", ports = "1024-65535", cidr = "0.0.0.0/0" },
  { rule = 120, action = "allow", proto = "icmpv6", icmp_type = 128, cidr = "2001:db8::/32" },
]
egress = [
  { rule = 100, action = "allow", proto = "tcp", ports = "1024-65535", cidr = "0.0.0.0/0" },
]
[interfaces.eth0]
groups = ["web"]
acl = "public"
"#;

    fn tcp(src: &str, dst: &str, dport: u16) -> Probe {
        Probe {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: crate::TCP,
            dport,
            icmp_type: 0,
            icmp_code: 0,
            later_fragment: false,
        }
    }

    #[test]
    fn entries_are_sorted_by_number_and_bound() {
        let rs = parse(PUBLIC).unwrap();
        let acl = rs.iface_acl("eth0").unwrap();
        let numbers: Vec<u16> = acl.ingress.iter().map(|e| e.number).collect();
        assert_eq!(numbers, vec![90, 100, 110, 120]);
        assert_eq!(acl.ingress[0].action, AclAction::Deny);
        assert_eq!(acl.ingress[0].proto, Proto::All);
        assert_eq!(acl.ingress[3].ports, Ports::Icmp { icmp_type: Some(128), code: None });
        assert_eq!(acl.egress.len(), 1);
        assert_eq!(acl.entry_id(Dir::Egress, 0), 4);
        assert_eq!(acl.ingress[1].loc.line, 9, "entries keep their location");
    }

    #[test]
    fn first_match_wins_and_the_final_rule_denies() {
        let rs = parse(PUBLIC).unwrap();
        // A source the groups allow, denied by the lower-numbered deny: named by both layers.
        let d = evaluate(&rs, "eth0", Dir::Ingress, &tcp("203.0.113.7", "192.0.2.1", 443));
        assert_eq!((d.reason, d.rule), (Reason::AclDeny, Some(0)));
        assert_eq!(d.acl, Some(AclVerdict::Deny { entry: 0 }));
        let d = evaluate(&rs, "eth0", Dir::Ingress, &tcp("192.0.2.7", "192.0.2.1", 443));
        assert_eq!(
            (d.reason, d.rule, d.acl),
            (Reason::RuleAllow, Some(0), Some(AclVerdict::Allow { entry: 1 }))
        );
        // Port 22: the groups allow it from 198.51.100.0/24, no ACL entry does.
        let d = evaluate(&rs, "eth0", Dir::Ingress, &tcp("198.51.100.9", "192.0.2.1", 22));
        assert_eq!((d.reason, d.rule, d.acl), (Reason::AclDefault, Some(2), Some(AclVerdict::Default)));
        // The ACL allows the ephemeral ports, the groups do not: the groups drop it.
        let d = evaluate(&rs, "eth0", Dir::Ingress, &tcp("192.0.2.7", "192.0.2.1", 40000));
        assert_eq!((d.reason, d.rule), (Reason::NoRule, None));
    }

    #[test]
    fn egress_meets_the_acl_after_the_groups() {
        let rs = parse(PUBLIC).unwrap();
        // Default egress of the group allows all; the ACL only the ephemeral ports.
        let d = evaluate(&rs, "eth0", Dir::Egress, &tcp("192.0.2.1", "198.51.100.9", 40000));
        assert_eq!((d.reason, d.acl), (Reason::RuleAllow, Some(AclVerdict::Allow { entry: 0 })));
        let d = evaluate(&rs, "eth0", Dir::Egress, &tcp("192.0.2.1", "198.51.100.9", 80));
        assert_eq!((d.reason, d.acl), (Reason::AclDefault, Some(AclVerdict::Default)));
        // IPv6 egress: no v6 entry at all.
        let d = evaluate(&rs, "eth0", Dir::Egress, &tcp("2001:db8::1", "2001:db8::2", 40000));
        assert_eq!(d.reason, Reason::AclDefault);
    }

    #[test]
    fn an_interface_without_an_acl_is_unchanged() {
        let text = PUBLIC.replace("acl = \"public\"\n", "");
        let rs = parse(&text).unwrap();
        let d = evaluate(&rs, "eth0", Dir::Ingress, &tcp("203.0.113.7", "192.0.2.1", 443));
        assert_eq!((d.reason, d.rule, d.acl), (Reason::RuleAllow, Some(0), None));
    }

    /// The one error of `text` is at `needle` and says `msg`.
    fn expect_error(text: &str, needle: &str, msg: &str) {
        let errs = parse(text).expect_err("must be rejected");
        let off = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the text"));
        let want = Loc::at("t.toml", text, off).to_string();
        assert!(
            errs.0.iter().any(|d| d.loc.to_string() == want && d.msg.contains(msg)),
            "expected `{want}: ...{msg}...`, got:\n{errs}"
        );
        crate::check_diagnostics(&errs);
    }

    fn acl_with(entry: &str) -> String {
        format!(
            "[groups.web]\n[acls.a]\ningress = [\n  {{ rule = 1, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }},\n  {entry},\n]\n[interfaces.eth0]\ngroups = [\"web\"]\nacl = \"a\"\n"
        )
    }

    #[test]
    fn every_entry_error_names_its_place() {
        let t = acl_with(r#"{ rule = 1, action = "deny", proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(
            &t,
            "1, action = \"deny\"",
            "rule number 1 used twice in the ingress list (first at t.toml:4:",
        );
        let t = acl_with(r#"{ rule = 32767, action = "deny", proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "32767", "rule number 32767 out of range 1-32766");
        let t = acl_with(r#"{ rule = 0, action = "deny", proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "0, action = \"deny\"", "out of range 1-32766");
        let t = acl_with(r#"{ rule = 5, action = "reject", proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "\"reject\"", "unknown action 'reject' (allow or deny)");
        let t = acl_with(r#"{ rule = 5, proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "{ rule = 5", "no action");
        let t = acl_with(r#"{ rule = 5, action = "deny", proto = "tcp" }"#);
        expect_error(&t, "{ rule = 5", "no cidr");
        let t = acl_with(r#"{ action = "deny", proto = "tcp", cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "{ action", "no rule number");
        let t = acl_with(r#"{ rule = 5, action = "deny", proto = "tcp", cidr = "192.0.2.1/24" }"#);
        expect_error(&t, "\"192.0.2.1/24\"", "host bits set");
        let t = acl_with(
            r#"{ rule = 5, action = "deny", proto = "tcp", ports = "99-1", cidr = "192.0.2.0/24" }"#,
        );
        expect_error(&t, "\"99-1\"", "reversed");
        let t =
            acl_with(r#"{ rule = 5, action = "deny", proto = "udp", icmp_type = 3, cidr = "192.0.2.0/24" }"#);
        expect_error(&t, "3, cidr", "icmp_type applies only to icmp");
        let t =
            acl_with(r#"{ rule = 5, action = "deny", proto = "tcp", cidr = "192.0.2.0/24", from = "x" }"#);
        expect_error(&t, "from = ", "unknown field `from`");
        let t = PUBLIC.replace("acl = \"public\"", "acl = \"private\"");
        expect_error(&t, "\"private\"", "unknown network ACL 'private'");
    }

    #[test]
    fn the_apply_diff_names_acl_changes() {
        let old = parse(PUBLIC).unwrap();
        let text = PUBLIC
            .replace("{ rule = 90, action = \"deny\", proto = \"all\", cidr = \"203.0.113.0/24\" },\n", "")
            .replace("acl = \"public\"\n", "");
        let new = parse(&text).unwrap();
        let d = crate::diff::diff(Some(&old), &new);
        assert!(
            d.lines.contains(&"network ACL public: - ingress 90 deny all from 203.0.113.0/24".to_string()),
            "{d:?}"
        );
        assert!(d.lines.contains(&"~ interface eth0: network ACL public -> none".to_string()), "{d:?}");
        assert!(crate::diff::diff(Some(&old), &old).is_empty());
    }

    #[test]
    fn the_same_number_in_both_directions_is_fine() {
        let rs = parse(PUBLIC).unwrap();
        let acl = rs.iface_acl("eth0").unwrap();
        assert_eq!((acl.ingress[1].number, acl.egress[0].number), (100, 100));
    }

    #[test]
    fn acls_round_trip_through_toml() {
        let a = parse(PUBLIC).unwrap();
        let out = toml_out::to_toml(&a);
        let b = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(a.without_locations(), b.without_locations(), "{out}");
    }

    fn addr(rng: &mut StdRng, v6: bool) -> IpAddr {
        let host = if rng.random_bool(0.7) { rng.random_range(0..16) } else { rng.random::<u8>() };
        if v6 {
            let third = *[0u16, 1, 0xaaaa].choose(rng).unwrap();
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, third, 0, 0, 0, 0, u16::from(host)))
        } else {
            let base = *[[192, 0, 2], [198, 51, 100], [203, 0, 113]].choose(rng).unwrap();
            IpAddr::V4(Ipv4Addr::new(base[0], base[1], base[2], host))
        }
    }

    fn random_entry(rng: &mut StdRng, number: u16) -> AclEntry {
        let v6 = rng.random_bool(0.4);
        let a = addr(rng, v6);
        let lens: &[u8] = if v6 { &[0, 32, 48, 64, 120, 126, 128] } else { &[0, 8, 16, 24, 26, 28, 30, 32] };
        let cidr = IpNet::new(a, *lens.choose(rng).unwrap()).unwrap().trunc();
        let proto =
            *[Proto::All, Proto::Num(6), Proto::Num(17), Proto::Num(1), Proto::Num(58), Proto::Num(47)]
                .choose(rng)
                .unwrap();
        let ports = match proto {
            Proto::Num(6 | 17) => {
                let lo = *[0u16, 22, 80, 443, 1024, 40000].choose(rng).unwrap();
                let hi = lo.saturating_add(*[0u16, 1, 100, 65535].choose(rng).unwrap());
                Ports::Range(lo, hi)
            }
            Proto::Num(1 | 58) => {
                let t = *[None, Some(0u8), Some(3), Some(8), Some(128)].choose(rng).unwrap();
                let code = t.and(*[None, Some(0u8), Some(4)].choose(rng).unwrap());
                Ports::Icmp { icmp_type: t, code }
            }
            _ => Ports::All,
        };
        let action = if rng.random_bool(0.5) { AclAction::Allow } else { AclAction::Deny };
        AclEntry { number, action, proto, ports, cidr, loc: Loc::default() }
    }

    fn random_acl(rng: &mut StdRng) -> Acl {
        let mut dirs = [Vec::new(), Vec::new()];
        for list in &mut dirs {
            let n = rng.random_range(0..30);
            let mut numbers: Vec<u16> = (0..n).map(|_| rng.random_range(1..=MAX_ACL_RULE)).collect();
            numbers.sort_unstable();
            numbers.dedup();
            *list = numbers.into_iter().map(|num| random_entry(rng, num)).collect();
        }
        let [ingress, egress] = dirs;
        Acl { name: "r".into(), aws_id: None, aws_vpc: None, ingress, egress, loc: Loc::default() }
    }

    /// The compiled ACL (disjoint prefixes, port segments carrying the deciding entry) decides
    /// every packet as the first-match reference does: 100,000 random cases.
    #[test]
    fn compiled_acls_equal_first_match() {
        let seed = std::env::var("SG_ACL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x05ee_dac1);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut decided = [0usize; 3];
        let mut rs =
            parse("[groups.g]\n[acls.r]\n[interfaces.eth0]\ngroups = [\"g\"]\nacl = \"r\"\n").unwrap();
        for _ in 0..500 {
            let acl = random_acl(&mut rng);
            rs.acls[0] = acl.clone();
            let plan = compile_iface(&rs, "eth0").unwrap();
            let entries = &plan.acl.as_ref().unwrap().entries;
            for _ in 0..200 {
                let v6 = rng.random_bool(0.4);
                let dir = if rng.random_bool(0.5) { Dir::Ingress } else { Dir::Egress };
                let p = Probe {
                    src: addr(&mut rng, v6),
                    dst: addr(&mut rng, v6),
                    proto: *[6u8, 17, 1, 58, 47, 132].choose(&mut rng).unwrap(),
                    dport: *[0u16, 22, 80, 443, 1024, 40000, 40100, 65535].choose(&mut rng).unwrap(),
                    icmp_type: *[0u8, 3, 8, 128].choose(&mut rng).unwrap(),
                    icmp_code: *[0u8, 4].choose(&mut rng).unwrap(),
                    later_fragment: false,
                };
                let want = acl.decide(dir, &p);
                let peer = if dir == Dir::Ingress { p.src } else { p.dst };
                let key = sg_common::policy::flow_key(p.proto, key_low16(&p));
                let got = interpret_acl(&plan, dir, peer, key);
                assert_eq!(
                    got,
                    want.entry().map(|i| (acl.entry_id(dir, i) as u32, want.allows())),
                    "seed {seed}: {dir:?} {p:?} under {acl:#?}"
                );
                if let Some((id, _)) = got {
                    assert_eq!(entries[id as usize].0, dir);
                }
                decided[match want {
                    AclVerdict::Allow { .. } => 0,
                    AclVerdict::Deny { .. } => 1,
                    AclVerdict::Default => 2,
                }] += 1;
            }
        }
        // The cases exercise all three outcomes, not one.
        assert!(decided.iter().all(|&n| n > 5_000), "{decided:?}");
    }
}
