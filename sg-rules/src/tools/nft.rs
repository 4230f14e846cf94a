//! `sgctl export nft`: a rule set as an nftables ruleset with conntrack, the kernel's own
//! stateful firewall doing what sgctl does (used as the peer in `cargo xtask bench`, and by
//! operators who want to compare or fall back).
//!
//! Shape, per bound interface and direction: one chain jumped to from a `prerouting` (ingress,
//! `iifname`) or `postrouting` (egress, `oifname`) base chain, so that forwarded and local
//! traffic are both covered, as sgctl's XDP and TC programs cover them. Each chain accepts
//! `ct state established,related`, drops `ct state invalid`, accepts the implicit allowances
//! (NDP with hop limit 255, DHCP/DHCPv6 client traffic) unless the binding switched them off,
//! then accepts what the rules allow and drops the rest (counted). Rules with the same protocol
//! and ports share one named interval set of peer prefixes (`auto-merge`), as an nftables user
//! would write them: the ruleset stays short when thousands of rules differ only in the peer.
//!
//! An interface with a network ACL gets, per direction, a stateless chain `acl_in_N` /
//! `acl_out_N` jumped to right after the implicit allowances and before the conntrack accept:
//! its entries in rule-number order, `return` for an allow, `drop` for a deny, and a counted
//! `drop` at the end (the implicit final rule). Every packet passes through it, replies of
//! tracked flows included, as AWS evaluates a network ACL.
//!
//! Differences a reader should know: nftables' `related` also covers connection-tracking
//! helpers (none are loaded by this ruleset), and `invalid` includes TCP out-of-window packets,
//! which sgctl does not track. Group references and prefix lists are expanded to their
//! addresses, as sgctl's compiler expands them.

use std::{collections::BTreeMap, fmt::Write as _};

use ipnet::IpNet;
use sg_common::config::{CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6, CONFIG_NO_IMPLICIT_NDP};

use crate::{Binding, Dir, ICMP, ICMPV6, Ports, Proto, RuleSet, TCP, UDP, acl::AclAction};

/// The nftables table every export defines (and replaces when loaded again).
pub const TABLE: &str = "sgctl";

/// What one group of rules matches besides the peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Match {
    proto: Proto,
    ports: Ports,
}

impl Match {
    /// The nft expression for protocol and ports (empty for "all").
    fn expr(self) -> String {
        match (self.proto, self.ports) {
            (Proto::All, _) => String::new(),
            (Proto::Num(p @ (TCP | UDP)), Ports::Range(lo, hi)) => {
                let name = if p == TCP { "tcp" } else { "udp" };
                if lo == hi { format!("{name} dport {lo}") } else { format!("{name} dport {lo}-{hi}") }
            }
            (Proto::Num(p @ (ICMP | ICMPV6)), Ports::Icmp { icmp_type, code }) => {
                let name = if p == ICMP { "icmp" } else { "icmpv6" };
                let mut s = format!("meta l4proto {p}");
                if let Some(t) = icmp_type {
                    let _ = write!(s, " {name} type {t}");
                }
                if let Some(c) = code {
                    let _ = write!(s, " {name} code {c}");
                }
                s
            }
            (Proto::Num(p), _) => format!("meta l4proto {p}"),
        }
    }
}

/// Peer prefixes per (match, family) for one interface and direction, in a stable order.
fn grouped(rs: &RuleSet, iface: &str, dir: Dir) -> BTreeMap<(Match, bool), Vec<IpNet>> {
    let mut out: BTreeMap<(Match, bool), Vec<IpNet>> = BTreeMap::new();
    for r in rs.iface_rules(iface).into_iter().filter(|r| r.dir == dir) {
        let m = Match { proto: r.rule.proto, ports: r.rule.ports };
        for net in rs.peer_nets(&r.rule.peer) {
            let v6 = matches!(net, IpNet::V6(_));
            let list = out.entry((m, v6)).or_default();
            let net = net.trunc();
            if !list.contains(&net) {
                list.push(net);
            }
        }
    }
    out
}

fn implicit(b: &Binding, dir: Dir) -> Vec<String> {
    let mut v = Vec::new();
    if b.no_implicit & CONFIG_NO_IMPLICIT_NDP == 0 {
        v.push(
            "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, \
             nd-neighbor-advert, nd-redirect } ip6 hoplimit 255 accept comment \"implicit ndp\""
                .to_string(),
        );
    }
    let (v4, v6) = match dir {
        Dir::Ingress => ("udp sport 67 udp dport 68", "udp sport 547 udp dport 546"),
        Dir::Egress => ("udp sport 68 udp dport 67", "udp sport 546 udp dport 547"),
    };
    if b.no_implicit & CONFIG_NO_IMPLICIT_DHCP == 0 {
        v.push(format!("meta nfproto ipv4 {v4} accept comment \"implicit dhcp\""));
    }
    if b.no_implicit & CONFIG_NO_IMPLICIT_DHCPV6 == 0 {
        v.push(format!("meta nfproto ipv6 {v6} accept comment \"implicit dhcpv6\""));
    }
    v
}

/// The rule set as an nftables script for `nft -f`. Loading it replaces `table inet sgctl`
/// (and touches nothing else).
pub fn export(rs: &RuleSet) -> String {
    let mut s = String::new();
    let _ =
        writeln!(s, "# Generated by `sgctl export nft`: sgctl security groups as nftables with conntrack.");
    let _ = writeln!(s, "# Load with `nft -f FILE`; it replaces table inet {TABLE} and nothing else.");
    let _ = writeln!(s, "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{");
    let mut jumps: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for (i, b) in rs.interfaces.iter().enumerate() {
        for (d, dir) in Dir::BOTH.into_iter().enumerate() {
            let (tag, addr) = match dir {
                Dir::Ingress => ("in", "saddr"),
                Dir::Egress => ("out", "daddr"),
            };
            let chain = format!("{tag}_{i}");
            let tracked =
                ["ct state established,related accept".to_string(), "ct state invalid drop".to_string()];
            let mut rules = Vec::new();
            match rs.iface_acl(&b.iface) {
                Some(acl) => {
                    // The ACL sees every packet but the implicit allowances, before conntrack.
                    let acl_chain = format!("acl_{chain}");
                    let _ = writeln!(
                        s,
                        "  chain {acl_chain} {{\n    comment \"{} {} network ACL {}\"",
                        b.iface,
                        dir.as_str(),
                        acl.name
                    );
                    for e in acl.entries(dir) {
                        let fam = if matches!(e.cidr, IpNet::V6(_)) { "ip6" } else { "ip" };
                        let what = Match { proto: e.proto, ports: e.ports }.expr();
                        let sep = if what.is_empty() { "" } else { " " };
                        let verdict = if e.action == AclAction::Allow { "return" } else { "counter drop" };
                        let _ = writeln!(
                            s,
                            "    {fam} {addr} {}{sep}{what} {verdict} comment \"rule {}\"",
                            e.cidr, e.number
                        );
                    }
                    let _ = writeln!(
                        s,
                        "    counter drop comment \"{} {}: no ACL entry matches\"\n  }}",
                        b.iface,
                        dir.as_str()
                    );
                    rules.extend(implicit(b, dir));
                    rules.push(format!("jump {acl_chain}"));
                    rules.extend(tracked);
                }
                None => {
                    rules.extend(tracked);
                    rules.extend(implicit(b, dir));
                }
            }
            for (n, ((m, v6), nets)) in grouped(rs, &b.iface, dir).into_iter().enumerate() {
                let fam = if v6 { "ip6" } else { "ip" };
                let peer = if nets.len() == 1 {
                    nets[0].to_string()
                } else {
                    let set = format!("{chain}_{n}");
                    let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
                    let elems: Vec<String> = nets.iter().map(ToString::to_string).collect();
                    let _ = writeln!(
                        s,
                        "  set {set} {{\n    type {ty}; flags interval; auto-merge;\n    elements = {{ {} }}\n  }}",
                        elems.join(", ")
                    );
                    format!("@{set}")
                };
                let what = m.expr();
                let sep = if what.is_empty() { "" } else { " " };
                rules.push(format!("{fam} {addr} {peer}{sep}{what} accept"));
            }
            rules.push(format!("counter drop comment \"{} {}: no rule allows\"", b.iface, dir.as_str()));
            let _ = writeln!(s, "  chain {chain} {{\n    comment \"{} {}\"", b.iface, dir.as_str());
            for r in rules {
                let _ = writeln!(s, "    {r}");
            }
            let _ = writeln!(s, "  }}");
            let kw = if dir == Dir::Ingress { "iifname" } else { "oifname" };
            jumps[d].push(format!("{kw} \"{}\" jump {chain}", b.iface));
        }
    }
    for (hook, list) in ["prerouting", "postrouting"].into_iter().zip(jumps) {
        let _ = writeln!(s, "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;");
        for j in list {
            let _ = writeln!(s, "    {j}");
        }
        let _ = writeln!(s, "  }}");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AwsContext, Format, parse_str};

    fn rs(text: &str) -> RuleSet {
        parse_str("t.toml", text, Format::Toml, &AwsContext::default()).expect("valid rules")
    }

    const WEB: &str = r#"
[groups.web]
ingress = [
  { proto = "tcp", ports = "80", from = ["0.0.0.0/0", "::/0"] },
  { proto = "tcp", ports = "22", from = ["203.0.113.7/32", "198.51.100.0/24"] },
  { proto = "tcp", ports = "22", from_group = "app" },
  { proto = "udp", ports = "1000-2000", from = "192.0.2.0/24" },
  { proto = "icmp", icmp_type = 8, from = "0.0.0.0/0" },
  { proto = "all", from = "2001:db8::/32" },
  { proto = "47", from = "192.0.2.9/32" },
]
[groups.app]
members = ["198.51.100.10"]
[interfaces.eth0]
groups = ["web"]
"#;

    #[test]
    fn every_rule_becomes_an_accept() {
        let out = export(&rs(WEB));
        for want in [
            "ip saddr 0.0.0.0/0 tcp dport 80 accept",
            "ip6 saddr ::/0 tcp dport 80 accept",
            "udp dport 1000-2000 accept",
            "ip saddr 0.0.0.0/0 meta l4proto 1 icmp type 8 accept",
            "ip6 saddr 2001:db8::/32 accept",
            "ip saddr 192.0.2.9/32 meta l4proto 47 accept",
            "iifname \"eth0\" jump in_0",
            "oifname \"eth0\" jump out_0",
            "ct state established,related accept",
            "counter drop comment \"eth0 ingress: no rule allows\"",
            // Default egress: allow all to both families.
            "ip daddr 0.0.0.0/0 accept",
            "ip6 daddr ::/0 accept",
        ] {
            assert!(out.contains(want), "missing `{want}` in:\n{out}");
        }
    }

    #[test]
    fn same_ports_share_one_set_with_the_group_expanded() {
        let out = export(&rs(WEB));
        let set_line =
            out.lines().find(|l| l.contains("elements") && l.contains("203.0.113.7/32")).expect("set");
        assert!(set_line.contains("198.51.100.0/24"), "{set_line}");
        assert!(set_line.contains("198.51.100.10/32"), "group member expanded: {set_line}");
        assert!(out.contains("tcp dport 22 accept"), "{out}");
        assert_eq!(out.matches("tcp dport 22 accept").count(), 1, "one rule for one set:\n{out}");
    }

    #[test]
    fn implicit_allowances_follow_the_binding() {
        let out = export(&rs(WEB));
        assert!(out.contains("ip6 hoplimit 255 accept"));
        assert!(out.contains("udp sport 67 udp dport 68"));
        let off =
            export(&rs(&format!("{WEB}\nimplicit = {{ ndp = false, dhcp = false, dhcpv6 = false }}\n")));
        assert!(!off.contains("hoplimit 255"), "{off}");
        assert!(!off.contains("dport 68"), "{off}");
        assert!(!off.contains("dport 546"), "{off}");
    }

    #[test]
    fn a_network_acl_is_a_stateless_chain_before_conntrack() {
        let text = WEB.replace(
            "[interfaces.eth0]\ngroups = [\"web\"]\n",
            "[acls.pub]\ningress = [\n  { rule = 20, action = \"allow\", proto = \"tcp\", ports = \"80\", cidr = \"0.0.0.0/0\" },\n  { rule = 10, action = \"deny\", proto = \"all\", cidr = \"203.0.113.0/24\" },\n]\n[interfaces.eth0]\ngroups = [\"web\"]\nacl = \"pub\"\n",
        );
        let out = export(&rs(&text));
        let deny = out.find("ip saddr 203.0.113.0/24 counter drop comment \"rule 10\"").expect(&out);
        let allow = out.find("ip saddr 0.0.0.0/0 tcp dport 80 return comment \"rule 20\"").expect(&out);
        assert!(deny < allow, "rule-number order:\n{out}");
        assert!(out.contains("counter drop comment \"eth0 ingress: no ACL entry matches\""), "{out}");
        assert!(out.contains("chain acl_out_0"), "the egress ACL is empty: it denies all\n{out}");
        let chain = &out[out.find("chain in_0 {").expect(&out)..];
        let jump = chain.find("jump acl_in_0").expect(&out);
        assert!(jump < chain.find("ct state established").unwrap(), "before conntrack:\n{out}");
        assert!(chain.find("hoplimit 255 accept").unwrap() < jump, "after the implicit allowances:\n{out}");
    }
}
