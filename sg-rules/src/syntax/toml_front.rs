//! The native TOML front end: text -> [`RawRuleSet`], with file:line:column everywhere.
//!
//! ```toml
//! [quotas]                       # optional
//! rules_per_group = 60
//! groups_per_interface = 5
//!
//! [groups.web]
//! description = "public web server"
//! ingress = [
//!   { proto = "tcp", ports = "443", from = ["0.0.0.0/0", "::/0"] },
//!   { proto = "icmp", icmp_type = 8, from = "0.0.0.0/0" },
//!   { proto = "tcp", ports = "5432", from_group = "app" },
//!   { proto = "tcp", ports = "22", from_prefix_list = "office", description = "admin" },
//! ]
//! # egress omitted: allow all (AWS default); `egress = []` allows nothing.
//!
//! [groups.app]
//! members = ["198.51.100.10", "2001:db8::10", "203.0.113.16/28"]   # addresses or prefixes
//! member_groups = ["web"]        # optional: their members are members too
//!
//! [prefix_lists.office]
//! entries = ["203.0.113.0/28"]
//!
//! [acls.public]                  # a network ACL: stateless, numbered, lowest number first
//! ingress = [
//!   { rule = 90, action = "deny", proto = "all", cidr = "203.0.113.0/24" },
//!   { rule = 100, action = "allow", proto = "tcp", ports = "443", cidr = "0.0.0.0/0" },
//!   { rule = 110, action = "allow", proto = "tcp", ports = "1024-65535", cidr = "0.0.0.0/0" },
//! ]
//! egress = [{ rule = 100, action = "allow", proto = "all", cidr = "0.0.0.0/0" }]
//! # a list left out denies everything in its direction (the implicit final deny)
//!
//! [interfaces.eth0]
//! groups = ["web"]
//! acl = "public"                 # optional: at most one network ACL
//! timeouts = { tcp_established = 3600, udp_stream = 120 }   # optional, seconds
//! implicit = { ndp = true, dhcp = false, dhcpv6 = false }    # optional, all true by default
//! monitor = true                # optional: count verdicts, drop nothing (absent: keep as is)
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    LineIndex, Loc, RuleErrors,
    raw::{
        At, PortsText, ProtoText, RawAcl, RawAclEntry, RawBinding, RawGroup, RawHost, RawPeer, RawPrefixList,
        RawQuotas, RawRule, RawRuleSet,
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileT {
    quotas: Option<Spanned<QuotasT>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Spanned<GroupT>>,
    #[serde(default)]
    prefix_lists: BTreeMap<Spanned<String>, Spanned<PrefixListT>>,
    #[serde(default)]
    acls: BTreeMap<Spanned<String>, Spanned<AclT>>,
    #[serde(default)]
    interfaces: BTreeMap<Spanned<String>, Spanned<IfaceT>>,
    /// Fleet: the interfaces of each host (`[hosts.db1.interfaces.eth0]`).
    #[serde(default)]
    hosts: BTreeMap<Spanned<String>, Spanned<HostT>>,
    /// Fleet: bounds on what hosts may register (`[fleet] member_ranges = [...]`).
    fleet: Option<Spanned<FleetT>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostT {
    #[serde(default)]
    interfaces: BTreeMap<Spanned<String>, Spanned<IfaceT>>,
    /// The host's own addresses, when known: its registrations may add only these.
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetT {
    /// The fleet's address ranges (the VPC's CIDRs, as it were): a registered member address
    /// outside them is ignored by every host.
    #[serde(default)]
    member_ranges: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasT {
    rules_per_group: Option<Spanned<i64>>,
    groups_per_interface: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupT {
    description: Option<Spanned<String>>,
    aws_id: Option<Spanned<String>>,
    aws_name: Option<Spanned<String>>,
    aws_vpc: Option<Spanned<String>>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
    #[serde(default)]
    member_groups: Vec<Spanned<String>>,
    #[serde(default)]
    ingress: Vec<Spanned<RuleT>>,
    egress: Option<Vec<Spanned<RuleT>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixListT {
    #[serde(default)]
    entries: Vec<Spanned<String>>,
}

/// A network ACL (`[acls.NAME]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclT {
    aws_id: Option<Spanned<String>>,
    aws_vpc: Option<Spanned<String>>,
    #[serde(default)]
    ingress: Vec<Spanned<AclEntryT>>,
    #[serde(default)]
    egress: Vec<Spanned<AclEntryT>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclEntryT {
    rule: Option<Spanned<i64>>,
    action: Option<Spanned<String>>,
    proto: Option<Spanned<ProtoT>>,
    ports: Option<Spanned<PortsT>>,
    icmp_type: Option<Spanned<i64>>,
    icmp_code: Option<Spanned<i64>>,
    cidr: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IfaceT {
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    /// The network ACL of the interface.
    acl: Option<Spanned<String>>,
    timeouts: Option<Spanned<TimeoutsT>>,
    implicit: Option<Spanned<ImplicitT>>,
    /// Monitor mode: count verdicts, drop nothing (absent: keep what `sgctl attach` set).
    monitor: Option<bool>,
}

/// Implicit allowances of an interface (all on by default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImplicitT {
    ndp: Option<bool>,
    dhcp: Option<bool>,
    dhcpv6: Option<bool>,
}

/// Conntrack idle timeouts (seconds) of an interface; see `sg_common::conntrack::CtTimeouts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsT {
    tcp_established: Option<Spanned<i64>>,
    tcp_half_open: Option<Spanned<i64>>,
    tcp_closing: Option<Spanned<i64>>,
    udp: Option<Spanned<i64>>,
    udp_stream: Option<Spanned<i64>>,
    icmp: Option<Spanned<i64>>,
    other: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ProtoT {
    Name(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortsT {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleT {
    proto: Option<Spanned<ProtoT>>,
    ports: Option<Spanned<PortsT>>,
    icmp_type: Option<Spanned<i64>>,
    icmp_code: Option<Spanned<i64>>,
    from: Option<Spanned<OneOrMany>>,
    to: Option<Spanned<OneOrMany>>,
    from_group: Option<Spanned<String>>,
    to_group: Option<Spanned<String>>,
    from_prefix_list: Option<Spanned<String>>,
    to_prefix_list: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    lines: LineIndex,
}

impl Ctx<'_> {
    fn loc(&self, offset: usize) -> Loc {
        self.lines.loc(self.file, self.text, offset)
    }

    fn at<T: Clone>(&self, s: &Spanned<T>) -> At<T> {
        At::new(s.get_ref().clone(), self.loc(s.span().start))
    }

    fn at_opt<T: Clone>(&self, s: Option<&Spanned<T>>) -> Option<At<T>> {
        s.map(|s| self.at(s))
    }
}

/// Parses sgctl's TOML into the raw form. Syntax errors (bad TOML, unknown keys, wrong types,
/// duplicate keys) come back with their location.
pub fn parse(file: &str, text: &str) -> Result<RawRuleSet, RuleErrors> {
    let parsed: FileT = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let msg = e.message().trim().replace('\n', " ");
        RuleErrors::one(Loc::at(file, text, offset), msg)
    })?;
    let cx = Ctx { file, text, lines: LineIndex::new(text) };
    let mut out = RawRuleSet { file: file.to_string(), ..RawRuleSet::default() };
    out.quotas = parsed.quotas.as_ref().map(|q| RawQuotas {
        rules_per_group: cx.at_opt(q.get_ref().rules_per_group.as_ref()),
        groups_per_interface: cx.at_opt(q.get_ref().groups_per_interface.as_ref()),
    });
    let mut groups: Vec<_> = parsed.groups.iter().collect();
    groups.sort_by_key(|(k, _)| k.span().start);
    for (name, g) in groups {
        out.groups.push(group(&cx, name, g.get_ref()));
    }
    let mut lists: Vec<_> = parsed.prefix_lists.iter().collect();
    lists.sort_by_key(|(k, _)| k.span().start);
    for (name, l) in lists {
        out.prefix_lists.push(RawPrefixList {
            name: cx.at(name),
            entries: l.get_ref().entries.iter().map(|e| cx.at(e)).collect(),
        });
    }
    let mut acls: Vec<_> = parsed.acls.iter().collect();
    acls.sort_by_key(|(k, _)| k.span().start);
    for (name, a) in acls {
        let a = a.get_ref();
        let entries = |list: &[Spanned<AclEntryT>]| list.iter().map(|e| acl_entry(&cx, e)).collect();
        out.acls.push(RawAcl {
            name: cx.at(name),
            aws_id: cx.at_opt(a.aws_id.as_ref()),
            aws_vpc: cx.at_opt(a.aws_vpc.as_ref()),
            ingress: entries(&a.ingress),
            egress: entries(&a.egress),
        });
    }
    out.interfaces = bindings(&cx, &parsed.interfaces);
    let mut hosts: Vec<_> = parsed.hosts.iter().collect();
    hosts.sort_by_key(|(k, _)| k.span().start);
    for (name, h) in hosts {
        let h = h.get_ref();
        out.hosts.push(RawHost {
            name: cx.at(name),
            interfaces: bindings(&cx, &h.interfaces),
            addresses: h.addresses.iter().map(|a| cx.at(a)).collect(),
        });
    }
    if let Some(f) = &parsed.fleet {
        out.member_ranges = f.get_ref().member_ranges.iter().map(|r| cx.at(r)).collect();
    }
    Ok(out)
}

/// The `[interfaces.*]` tables (of the file, or of one host), in file order.
fn bindings(cx: &Ctx<'_>, ifaces: &BTreeMap<Spanned<String>, Spanned<IfaceT>>) -> Vec<RawBinding> {
    let mut ifaces: Vec<_> = ifaces.iter().collect();
    ifaces.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (name, i) in ifaces {
        let i = i.get_ref();
        let mut timeouts = Vec::new();
        if let Some(t) = &i.timeouts {
            let t = t.get_ref();
            for (key, v) in [
                ("tcp_established", &t.tcp_established),
                ("tcp_half_open", &t.tcp_half_open),
                ("tcp_closing", &t.tcp_closing),
                ("udp", &t.udp),
                ("udp_stream", &t.udp_stream),
                ("icmp", &t.icmp),
                ("other", &t.other),
            ] {
                if let Some(v) = v {
                    timeouts.push((key, cx.at(v)));
                }
            }
        }
        let implicit = i.implicit.as_ref().map(Spanned::get_ref);
        let no_implicit = [
            (implicit.and_then(|t| t.ndp), sg_common::config::CONFIG_NO_IMPLICIT_NDP),
            (implicit.and_then(|t| t.dhcp), sg_common::config::CONFIG_NO_IMPLICIT_DHCP),
            (implicit.and_then(|t| t.dhcpv6), sg_common::config::CONFIG_NO_IMPLICIT_DHCPV6),
        ]
        .iter()
        .filter(|(on, _)| *on == Some(false))
        .fold(0, |acc, (_, bit)| acc | bit);
        out.push(RawBinding {
            iface: cx.at(name),
            groups: i.groups.iter().map(|g| cx.at(g)).collect(),
            timeouts,
            no_implicit,
            monitor: i.monitor,
            acl: cx.at_opt(i.acl.as_ref()),
        });
    }
    out
}

fn group(cx: &Ctx<'_>, name: &Spanned<String>, g: &GroupT) -> RawGroup {
    RawGroup {
        name: cx.at(name),
        description: cx.at_opt(g.description.as_ref()),
        aws_id: cx.at_opt(g.aws_id.as_ref()),
        aws_name: cx.at_opt(g.aws_name.as_ref()),
        aws_vpc: cx.at_opt(g.aws_vpc.as_ref()),
        members: g.members.iter().map(|m| cx.at(m)).collect(),
        member_groups: g.member_groups.iter().map(|m| cx.at(m)).collect(),
        ingress: g.ingress.iter().map(|r| rule(cx, r, true)).collect(),
        egress: g.egress.as_ref().map(|rs| rs.iter().map(|r| rule(cx, r, false)).collect()),
    }
}

fn many(cx: &Ctx<'_>, s: &Spanned<OneOrMany>) -> Vec<At<String>> {
    let loc = cx.loc(s.span().start);
    match s.get_ref() {
        OneOrMany::One(v) => vec![At::new(v.clone(), loc)],
        OneOrMany::Many(vs) => vs.iter().map(|v| At::new(v.clone(), loc.clone())).collect(),
    }
}

fn rule(cx: &Ctx<'_>, r: &Spanned<RuleT>, ingress: bool) -> RawRule {
    let loc = cx.loc(r.span().start);
    let t = r.get_ref();
    let (cidrs, group, list) = if ingress {
        (&t.from, &t.from_group, &t.from_prefix_list)
    } else {
        (&t.to, &t.to_group, &t.to_prefix_list)
    };
    let wrong: [(&str, Option<usize>); 3] = if ingress {
        [
            ("to", t.to.as_ref().map(|s| s.span().start)),
            ("to_group", t.to_group.as_ref().map(|s| s.span().start)),
            ("to_prefix_list", t.to_prefix_list.as_ref().map(|s| s.span().start)),
        ]
    } else {
        [
            ("from", t.from.as_ref().map(|s| s.span().start)),
            ("from_group", t.from_group.as_ref().map(|s| s.span().start)),
            ("from_prefix_list", t.from_prefix_list.as_ref().map(|s| s.span().start)),
        ]
    };
    let wrong_direction =
        wrong.iter().filter_map(|(k, off)| off.map(|o| At::new((*k).to_string(), cx.loc(o)))).collect();
    let mut peers = Vec::new();
    let mut peer_kinds = Vec::new();
    if let Some(c) = cidrs {
        peer_kinds.push(At::new(if ingress { "from" } else { "to" }, cx.loc(c.span().start)));
        peers.extend(many(cx, c).into_iter().map(|a| At::new(RawPeer::Cidr(a.v), a.loc)));
    }
    if let Some(g) = group {
        peer_kinds.push(At::new(if ingress { "from_group" } else { "to_group" }, cx.loc(g.span().start)));
        peers.push(At::new(RawPeer::Group(g.get_ref().clone()), cx.loc(g.span().start)));
    }
    if let Some(l) = list {
        let key = if ingress { "from_prefix_list" } else { "to_prefix_list" };
        peer_kinds.push(At::new(key, cx.loc(l.span().start)));
        peers.push(At::new(RawPeer::PrefixList(l.get_ref().clone()), cx.loc(l.span().start)));
    }
    RawRule {
        peers,
        wrong_direction,
        peer_kinds,
        description: cx.at_opt(t.description.as_ref()),
        ..matches(cx, loc, t.proto.as_ref(), t.ports.as_ref(), t.icmp_type.as_ref(), t.icmp_code.as_ref())
    }
}

/// What a rule or an ACL entry matches of a packet (protocol, ports, ICMP type and code).
fn matches(
    cx: &Ctx<'_>,
    loc: Loc,
    proto: Option<&Spanned<ProtoT>>,
    ports: Option<&Spanned<PortsT>>,
    icmp_type: Option<&Spanned<i64>>,
    icmp_code: Option<&Spanned<i64>>,
) -> RawRule {
    RawRule {
        loc,
        proto: proto.map(|p| {
            let v = match p.get_ref() {
                ProtoT::Name(n) => ProtoText::Name(n.clone()),
                ProtoT::Number(n) => ProtoText::Number(*n),
            };
            At::new(v, cx.loc(p.span().start))
        }),
        ports: ports.map(|p| {
            let v = match p.get_ref() {
                PortsT::Text(s) => PortsText::Text(s.clone()),
                PortsT::Number(n) => PortsText::Number(*n),
            };
            At::new(v, cx.loc(p.span().start))
        }),
        icmp_type: cx.at_opt(icmp_type),
        icmp_code: cx.at_opt(icmp_code),
        peers: Vec::new(),
        wrong_direction: Vec::new(),
        peer_kinds: Vec::new(),
        description: None,
    }
}

fn acl_entry(cx: &Ctx<'_>, e: &Spanned<AclEntryT>) -> RawAclEntry {
    let loc = cx.loc(e.span().start);
    let t = e.get_ref();
    RawAclEntry {
        number: cx.at_opt(t.rule.as_ref()),
        action: cx.at_opt(t.action.as_ref()),
        cidr: cx.at_opt(t.cidr.as_ref()),
        matches: matches(
            cx,
            loc.clone(),
            t.proto.as_ref(),
            t.ports.as_ref(),
            t.icmp_type.as_ref(),
            t.icmp_code.as_ref(),
        ),
        loc,
    }
}
