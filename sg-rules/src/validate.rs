//! Raw rules -> checked [`RuleSet`]. Every problem is collected (not just the first), each
//! with its file:line:column and a one-line reason; any problem rejects the whole file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::{
    Binding, Diagnostic, Group, HostBinding, Loc, Peer, Ports, PrefixList, Proto, Quotas, Rule, RuleErrors,
    RuleSet,
    acl::{Acl, AclAction, AclEntry, MAX_ACL_RULE},
    raw::{
        At, PortsText, ProtoText, RawAcl, RawAclEntry, RawBinding, RawGroup, RawPeer, RawRule, RawRuleSet,
    },
};

/// Longest description AWS accepts.
pub const MAX_DESCRIPTION: usize = 255;
/// Longest group or prefix-list name.
pub const MAX_NAME: usize = 255;

struct Checker {
    diags: Vec<Diagnostic>,
}

impl Checker {
    fn err(&mut self, loc: &Loc, msg: impl Into<String>) {
        self.diags.push(Diagnostic { loc: loc.clone(), msg: msg.into() });
    }

    /// [`Checker::err`], unless the same message was already given (at another place).
    fn err_once(&mut self, loc: &Loc, msg: String) {
        if !self.diags.iter().any(|d| d.msg == msg) {
            self.err(loc, msg);
        }
    }
}

/// Checks a raw rule set; returns it resolved, or every problem found.
pub fn validate(raw: &RawRuleSet) -> Result<RuleSet, RuleErrors> {
    let mut ck = Checker { diags: Vec::new() };
    let quotas = quotas(&mut ck, raw);

    // Names first: references are checked against them.
    let mut group_names = BTreeSet::new();
    let mut aws_ids = BTreeMap::new();
    for g in &raw.groups {
        check_name(&mut ck, &g.name, "group");
        if g.name.v.starts_with('@') {
            ck.err(
                &g.name.loc,
                format!(
                    "group name '{}': names starting with '@' are reserved for groups sgctl adds",
                    g.name.v
                ),
            );
        }
        if !group_names.insert(g.name.v.clone()) {
            ck.err(&g.name.loc, format!("duplicate group name '{}'", g.name.v));
        }
        if let Some(id) = &g.aws_id
            && let Some(first) = aws_ids.insert(id.v.clone(), id.loc.clone())
        {
            ck.err(&id.loc, format!("duplicate aws_id '{}' (first at {first})", id.v));
        }
    }
    let mut lists = Vec::new();
    let mut list_names = BTreeSet::new();
    for l in &raw.prefix_lists {
        check_name(&mut ck, &l.name, "prefix list");
        if !list_names.insert(l.name.v.clone()) {
            ck.err(&l.name.loc, format!("duplicate prefix list name '{}'", l.name.v));
        }
        let entries = l.entries.iter().filter_map(|e| cidr(&mut ck, e)).collect();
        lists.push(PrefixList { name: l.name.v.clone(), entries, loc: l.name.loc.clone() });
    }

    let acls: Vec<Acl> = raw.acls.iter().map(|a| acl(&mut ck, a)).collect();
    let mut acl_names = BTreeSet::new();
    for a in &raw.acls {
        if !acl_names.insert(a.name.v.clone()) {
            ck.err(&a.name.loc, format!("duplicate network ACL name '{}'", a.name.v));
        }
    }
    let names = Names { groups: &group_names, acls: &acl_names, raw: &raw.groups };

    // Group references (rules' peers, member_groups, bindings) are resolved here, for every
    // input alike: by name, or (AWS input) by GroupId or an unambiguous GroupName.
    let member_groups = resolve_member_groups(&mut ck, raw, &names);
    let members = resolve_members(&mut ck, raw, &member_groups);
    let mut groups = Vec::new();
    for g in &raw.groups {
        let refs = Refs { names: &names, lists: &list_names };
        groups.push(group(&mut ck, g, &refs, &member_groups, &members, &quotas));
    }
    let interfaces = bindings(&mut ck, &raw.interfaces, &names, &quotas, None);
    let member_ranges: Vec<IpNet> = raw.member_ranges.iter().filter_map(|r| cidr(&mut ck, r)).collect();
    let mut hosts = Vec::new();
    for h in &raw.hosts {
        check_name(&mut ck, &h.name, "host");
        let interfaces = bindings(&mut ck, &h.interfaces, &names, &quotas, Some(&h.name.v));
        let mut addresses = Vec::new();
        for a in &h.addresses {
            let Some(net) = address_or_cidr(&mut ck, a) else { continue };
            if !member_ranges.is_empty() && !member_ranges.iter().any(|r| r.contains(&net)) {
                ck.err(
                    &a.loc,
                    format!("address {} of host {} is outside [fleet] member_ranges", a.v, h.name.v),
                );
            }
            addresses.push(net);
        }
        hosts.push(HostBinding { host: h.name.v.clone(), interfaces, addresses, loc: h.name.loc.clone() });
    }

    if ck.diags.is_empty() {
        Ok(RuleSet { quotas, groups, prefix_lists: lists, acls, interfaces, hosts, member_ranges })
    } else {
        // One AWS permission is several rules sharing its protocol and ports: one message.
        let mut seen = BTreeSet::new();
        ck.diags.retain(|d| seen.insert(d.to_string()));
        Err(RuleErrors(ck.diags))
    }
}

fn quotas(ck: &mut Checker, raw: &RawRuleSet) -> Quotas {
    let mut q = Quotas::default();
    let Some(rq) = &raw.quotas else { return q };
    let max_rules = i64::from(sg_common::policy::MAX_RULES);
    if let Some(v) = &rq.rules_per_group {
        if (1..=max_rules).contains(&v.v) {
            q.rules_per_group = v.v as usize;
        } else {
            ck.err(&v.loc, format!("rules_per_group {} out of range 1-{max_rules}", v.v));
        }
    }
    if let Some(v) = &rq.groups_per_interface {
        if (1..=256).contains(&v.v) {
            q.groups_per_interface = v.v as usize;
        } else {
            ck.err(&v.loc, format!("groups_per_interface {} out of range 1-256", v.v));
        }
    }
    q
}

/// Group and prefix-list names: used in file names, logs and other tools' output.
fn check_name(ck: &mut Checker, name: &At<String>, what: &str) {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:@+=-".contains(c);
    if name.v.is_empty() || name.v.len() > MAX_NAME {
        ck.err(&name.loc, format!("{what} name must be 1-{MAX_NAME} characters"));
    } else if name.v.starts_with('.') || !name.v.chars().all(ok_char) {
        ck.err(
            &name.loc,
            format!(
                "invalid {what} name '{}': use letters, digits and . _ : @ + = - (not first '.')",
                name.v
            ),
        );
    }
}

/// Linux interface names (dev_valid_name): 1-15 bytes, not . or .., no '/', ':' or spaces.
fn check_iface_name(ck: &mut Checker, name: &At<String>) {
    let n = &name.v;
    if n.is_empty()
        || n.len() > 15
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        ck.err(&name.loc, format!("invalid interface name '{n}'"));
    }
}

/// An address (one host) or a CIDR, as members and pinned host addresses are written.
fn address_or_cidr(ck: &mut Checker, m: &At<String>) -> Option<IpNet> {
    if m.v.contains('/') {
        return cidr(ck, m);
    }
    match m.v.parse::<IpAddr>() {
        Ok(a) => Some(IpNet::from(a)),
        Err(_) => {
            ck.err(&m.loc, format!("'{}' is not an IP address or CIDR", m.v));
            None
        }
    }
}

/// Each group's `member_groups`, resolved to the groups' names (an unknown or ambiguous one is
/// an error and left out).
type MemberGroups = BTreeMap<String, Vec<At<String>>>;

fn resolve_member_groups(ck: &mut Checker, raw: &RawRuleSet, names: &Names<'_>) -> MemberGroups {
    let mut out = MemberGroups::new();
    for g in &raw.groups {
        let mut list = Vec::new();
        for mg in &g.member_groups {
            match resolve_group(names, &mg.v) {
                Ok(Some(name)) => list.push(At::new(name, mg.loc.clone())),
                Ok(None) => ck.err(&mg.loc, format!("unknown group '{}' in member_groups", mg.v)),
                Err(msg) => ck.err_once(&mg.loc, msg),
            }
        }
        out.insert(g.name.v.clone(), list);
    }
    out
}

/// Members of every group, with `member_groups` expanded; loops are errors.
fn resolve_members(
    ck: &mut Checker,
    raw: &RawRuleSet,
    member_groups: &MemberGroups,
) -> BTreeMap<String, Vec<IpNet>> {
    let by_name: BTreeMap<&str, &RawGroup> = raw.groups.iter().map(|g| (g.name.v.as_str(), g)).collect();
    let mut direct: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    for g in &raw.groups {
        let addrs: Vec<IpNet> = g.members.iter().filter_map(|m| address_or_cidr(ck, m)).collect();
        direct.insert(g.name.v.clone(), addrs);
    }
    let mut out = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for g in &raw.groups {
        let mut all = BTreeSet::new();
        let mut path = vec![g.name.v.as_str()];
        let mut walk = Walk { by_name: &by_name, direct: &direct, member_groups, reported: &mut reported };
        expand(ck, &mut walk, g, &mut path, &mut all);
        out.insert(g.name.v.clone(), all.into_iter().collect());
    }
    out
}

/// What [`expand`] walks.
struct Walk<'a, 'r> {
    by_name: &'r BTreeMap<&'a str, &'a RawGroup>,
    direct: &'r BTreeMap<String, Vec<IpNet>>,
    member_groups: &'a MemberGroups,
    /// Loops already reported (by location).
    reported: &'r mut BTreeSet<String>,
}

fn expand<'a>(
    ck: &mut Checker,
    w: &mut Walk<'a, '_>,
    g: &'a RawGroup,
    path: &mut Vec<&'a str>,
    out: &mut BTreeSet<IpNet>,
) {
    out.extend(w.direct.get(&g.name.v).into_iter().flatten().copied());
    for mg in w.member_groups.get(&g.name.v).into_iter().flatten() {
        let Some(next) = w.by_name.get(mg.v.as_str()).copied() else { continue };
        if path.contains(&mg.v.as_str()) {
            let mut cycle: Vec<&str> = path.clone();
            cycle.push(&mg.v);
            if w.reported.insert(mg.loc.to_string()) {
                ck.err(&mg.loc, format!("group membership loops: {}", cycle.join(" -> ")));
            }
            continue;
        }
        path.push(&next.name.v);
        expand(ck, w, next, path, out);
        path.pop();
    }
}

/// What a rule's peers may name.
struct Refs<'a> {
    names: &'a Names<'a>,
    lists: &'a BTreeSet<String>,
}

fn group(
    ck: &mut Checker,
    g: &RawGroup,
    refs: &Refs<'_>,
    member_groups: &MemberGroups,
    members: &BTreeMap<String, Vec<IpNet>>,
    quotas: &Quotas,
) -> Group {
    if let Some(d) = &g.description {
        check_description(ck, d);
    }
    let mut ingress = Vec::new();
    for (i, r) in g.ingress.iter().enumerate() {
        ingress.extend(rule(ck, r, i, refs));
    }
    let (egress, default_egress) = match &g.egress {
        Some(rs) => {
            let mut out = Vec::new();
            for (i, r) in rs.iter().enumerate() {
                out.extend(rule(ck, r, i, refs));
            }
            (out, false)
        }
        None => {
            let all = |net: &str| Rule {
                proto: Proto::All,
                ports: Ports::All,
                peer: Peer::Cidr(net.parse().expect("literal")),
                description: None,
                index: 0,
                loc: g.name.loc.clone(),
            };
            (vec![all("0.0.0.0/0"), all("::/0")], true)
        }
    };
    for (dir, rules) in [("ingress", &ingress), ("egress", &egress)] {
        if rules.len() > quotas.rules_per_group {
            ck.err(
                &g.name.loc,
                format!(
                    "group {} has {} {dir} rules, quota is {} (rules_per_group; each peer counts)",
                    g.name.v,
                    rules.len(),
                    quotas.rules_per_group
                ),
            );
        }
    }
    Group {
        name: g.name.v.clone(),
        description: g.description.as_ref().map(|d| d.v.clone()),
        aws_id: g.aws_id.as_ref().map(|d| d.v.clone()),
        aws_name: g.aws_name.as_ref().map(|d| d.v.clone()),
        aws_vpc: g.aws_vpc.as_ref().map(|d| d.v.clone()),
        members: members.get(&g.name.v).cloned().unwrap_or_default(),
        member_groups: member_groups.get(&g.name.v).into_iter().flatten().map(|m| m.v.clone()).collect(),
        ingress,
        egress,
        default_egress,
        loc: g.name.loc.clone(),
    }
}

fn check_description(ck: &mut Checker, d: &At<String>) {
    if d.v.chars().count() > MAX_DESCRIPTION {
        ck.err(&d.loc, format!("description longer than {MAX_DESCRIPTION} characters"));
    }
}

/// A strict CIDR: prefix length required, no host bits.
fn cidr(ck: &mut Checker, s: &At<String>) -> Option<IpNet> {
    if !s.v.contains('/') {
        let hint = match s.v.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => format!(" (write {}/32)", s.v),
            Ok(IpAddr::V6(_)) => format!(" (write {}/128)", s.v),
            Err(_) => String::new(),
        };
        ck.err(&s.loc, format!("bad CIDR '{}': missing prefix length{hint}", s.v));
        return None;
    }
    match s.v.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            ck.err(&s.loc, format!("host bits set in {} (the network is {})", s.v, net.trunc()));
            None
        }
        Ok(net) => Some(net),
        Err(_) => {
            ck.err(&s.loc, format!("bad CIDR '{}'", s.v));
            None
        }
    }
}

fn proto(ck: &mut Checker, r: &RawRule) -> Option<Proto> {
    let Some(p) = &r.proto else {
        ck.err(&r.loc, "rule has no proto (tcp, udp, icmp, icmpv6, all, -1 or 0-255)");
        return None;
    };
    let number = |ck: &mut Checker, n: i64| match n {
        -1 => Some(Proto::All),
        0..=255 => Some(Proto::Num(n as u8)),
        _ => {
            ck.err(&p.loc, format!("protocol number {n} out of range 0-255 (or -1 for all)"));
            None
        }
    };
    match &p.v {
        ProtoText::Number(n) => number(ck, *n),
        ProtoText::Name(name) => match (Proto::from_name(name), name.parse::<i64>()) {
            (Some(proto), _) => Some(proto),
            // A number out of 0-255 says so.
            (None, Ok(n)) => number(ck, n),
            (None, Err(_)) => {
                ck.err(
                    &p.loc,
                    format!("unknown protocol '{name}' (tcp, udp, icmp, icmpv6, all, -1 or 0-255)"),
                );
                None
            }
        },
    }
}

fn port(ck: &mut Checker, loc: &Loc, s: &str) -> Option<u16> {
    match s.trim().parse::<i64>() {
        Ok(n) if (0..=65535).contains(&n) => Some(n as u16),
        Ok(n) => {
            ck.err(loc, format!("port {n} out of range 0-65535"));
            None
        }
        Err(_) => {
            ck.err(loc, format!("bad port '{s}' (a number, or a range like 1024-65535)"));
            None
        }
    }
}

fn range(ck: &mut Checker, loc: &Loc, lo: u16, hi: u16) -> Option<Ports> {
    if lo > hi {
        ck.err(loc, format!("port range {lo}-{hi} is reversed"));
        return None;
    }
    Some(Ports::Range(lo, hi))
}

/// -1..=255 -> None/Some; else an error.
fn icmp_field(ck: &mut Checker, v: &At<i64>, what: &str) -> Result<Option<u8>, ()> {
    match v.v {
        -1 => Ok(None),
        0..=255 => Ok(Some(v.v as u8)),
        n => {
            ck.err(&v.loc, format!("{what} {n} out of range 0-255 (or -1 for any)"));
            Err(())
        }
    }
}

fn icmp_ports(ck: &mut Checker, loc: &Loc, ty: Option<u8>, code: Option<u8>) -> Option<Ports> {
    if ty.is_none() && code.is_some() {
        ck.err(loc, "icmp_code needs an icmp_type (type -1 means any type and any code)");
        return None;
    }
    Some(Ports::Icmp { icmp_type: ty, code })
}

fn ports(ck: &mut Checker, r: &RawRule, proto: Proto) -> Option<Ports> {
    if !proto.is_icmp() {
        for (f, what) in [(&r.icmp_type, "icmp_type"), (&r.icmp_code, "icmp_code")] {
            if let Some(v) = f {
                ck.err(&v.loc, format!("{what} applies only to icmp and icmpv6, not {}", proto.name()));
                return None;
            }
        }
    }
    match (proto, &r.ports) {
        (p, None) if p.has_ports() => Some(Ports::Range(0, 65535)),
        (p, None) if p.is_icmp() => {
            let ty = match &r.icmp_type {
                Some(v) => icmp_field(ck, v, "icmp_type").ok()?,
                None => None,
            };
            let code = match &r.icmp_code {
                Some(v) => icmp_field(ck, v, "icmp_code").ok()?,
                None => None,
            };
            icmp_ports(ck, r.icmp_code.as_ref().map_or(&r.loc, |c| &c.loc), ty, code)
        }
        (_, None) => Some(Ports::All),
        (p, Some(At { v: PortsText::Pair(from, to), loc })) => aws_pair(ck, loc, p, *from, *to),
        (p, Some(At { loc, .. })) if !p.has_ports() => {
            let hint = if p.is_icmp() { " (use icmp_type and icmp_code)" } else { "" };
            ck.err(loc, format!("ports apply only to tcp and udp, not {}{hint}", p.name()));
            None
        }
        (_, Some(At { v: PortsText::Number(n), loc })) => {
            let p = port(ck, loc, &n.to_string())?;
            Some(Ports::Range(p, p))
        }
        (_, Some(At { v: PortsText::Text(t), loc })) => match t.split_once('-') {
            Some((a, b)) if a.trim().is_empty() || b.trim().is_empty() => {
                ck.err(loc, format!("port range '{t}' lacks an end (a range is lo-hi, like 1024-65535)"));
                None
            }
            Some((a, b)) => {
                let lo = port(ck, loc, a)?;
                let hi = port(ck, loc, b)?;
                range(ck, loc, lo, hi)
            }
            None => {
                let p = port(ck, loc, t)?;
                Some(Ports::Range(p, p))
            }
        },
    }
}

/// AWS FromPort/ToPort: a port range for tcp/udp, ICMP type/code for icmp, -1/-1 otherwise.
fn aws_pair(ck: &mut Checker, loc: &Loc, proto: Proto, from: i64, to: i64) -> Option<Ports> {
    if proto.has_ports() {
        if from == -1 && to == -1 {
            return Some(Ports::Range(0, 65535));
        }
        let lo = port(ck, loc, &from.to_string())?;
        let hi = port(ck, loc, &to.to_string())?;
        return range(ck, loc, lo, hi);
    }
    if proto.is_icmp() {
        let ty = icmp_field(ck, &At::new(from, loc.clone()), "ICMP type (FromPort)").ok()?;
        let code = icmp_field(ck, &At::new(to, loc.clone()), "ICMP code (ToPort)").ok()?;
        return icmp_ports(ck, loc, ty, code);
    }
    if from == -1 && to == -1 || (from == 0 && to == 65535) {
        return Some(Ports::All);
    }
    ck.err(
        loc,
        format!("FromPort/ToPort {from}/{to} given for protocol {} (only -1/-1 fits)", proto.aws_name()),
    );
    None
}

fn rule(ck: &mut Checker, r: &RawRule, index: usize, refs: &Refs<'_>) -> Vec<Rule> {
    let before = ck.diags.len();
    for w in &r.wrong_direction {
        let dir = if w.v.starts_with("from") { "egress" } else { "ingress" };
        let fix = if w.v.starts_with("from") {
            w.v.replacen("from", "to", 1)
        } else {
            w.v.replacen("to", "from", 1)
        };
        ck.err(&w.loc, format!("`{}` does not apply to an {dir} rule (use `{fix}`)", w.v));
    }
    match r.peer_kinds.len() {
        0 => ck.err(&r.loc, "rule has no peer: give one of from/to (CIDRs), from_group/to_group or from_prefix_list/to_prefix_list"),
        1 => {}
        _ => {
            let kinds: Vec<&str> = r.peer_kinds.iter().map(|k| k.v).collect();
            ck.err(&r.peer_kinds[1].loc, format!("a rule takes exactly one peer kind, found {}", kinds.join(" and ")));
        }
    }
    if r.peer_kinds.len() == 1 && r.peers.is_empty() {
        ck.err(&r.peer_kinds[0].loc, "empty peer list");
    }
    if let Some(d) = &r.description {
        check_description(ck, d);
    }
    let proto = proto(ck, r);
    let ports = proto.and_then(|p| ports(ck, r, p));
    let mut peers = Vec::new();
    for p in &r.peers {
        match &p.v {
            RawPeer::Cidr(c) => {
                if let Some(net) = cidr(ck, &At::new(c.clone(), p.loc.clone())) {
                    peers.push(Peer::Cidr(net));
                }
            }
            RawPeer::Group(g) => match resolve_group(refs.names, g) {
                Ok(Some(name)) => peers.push(Peer::Group(name)),
                Ok(None) => ck.err(&p.loc, format!("unknown group '{g}'")),
                // An ambiguous GroupName: once, at its first reference.
                Err(msg) => ck.err_once(&p.loc, msg),
            },
            RawPeer::PrefixList(l) => {
                if refs.lists.contains(l) {
                    peers.push(Peer::PrefixList(l.clone()));
                } else {
                    ck.err(&p.loc, format!("unknown prefix list '{l}'"));
                }
            }
        }
    }
    if ck.diags.len() > before {
        return Vec::new();
    }
    let (Some(proto), Some(ports)) = (proto, ports) else { return Vec::new() };
    peers
        .into_iter()
        .map(|peer| Rule {
            proto,
            ports,
            peer,
            description: r.description.as_ref().map(|d| d.v.clone()),
            index,
            loc: r.loc.clone(),
        })
        .collect()
}

/// A network ACL: names, rule numbers (1-32766, unique per direction), actions, CIDRs, and
/// what each entry matches (checked as a rule's protocol and ports). Entries come out sorted
/// by rule number.
fn acl(ck: &mut Checker, a: &RawAcl) -> Acl {
    check_name(ck, &a.name, "network ACL");
    let mut dirs = [Vec::new(), Vec::new()];
    for ((out, raw), dir) in dirs.iter_mut().zip([&a.ingress, &a.egress]).zip(["ingress", "egress"]) {
        let mut numbers: BTreeMap<u16, &Loc> = BTreeMap::new();
        for e in raw {
            let Some(entry) = acl_entry(ck, e) else { continue };
            let at = e.number.as_ref().map_or(&e.loc, |n| &n.loc);
            if let Some(first) = numbers.insert(entry.number, at) {
                ck.err(
                    at,
                    format!("rule number {} used twice in the {dir} list (first at {first})", entry.number),
                );
            }
            out.push(entry);
        }
        out.sort_by_key(|e: &AclEntry| e.number);
    }
    let [ingress, egress] = dirs;
    Acl {
        name: a.name.v.clone(),
        aws_id: a.aws_id.as_ref().map(|v| v.v.clone()),
        aws_vpc: a.aws_vpc.as_ref().map(|v| v.v.clone()),
        ingress,
        egress,
        loc: a.name.loc.clone(),
    }
}

fn acl_entry(ck: &mut Checker, e: &RawAclEntry) -> Option<AclEntry> {
    let before = ck.diags.len();
    let max = i64::from(MAX_ACL_RULE);
    let number = match &e.number {
        None => {
            ck.err(&e.loc, format!("ACL entry has no rule number (rule = 1-{max})"));
            None
        }
        Some(n) if (1..=max).contains(&n.v) => Some(n.v as u16),
        Some(n) => {
            ck.err(&n.loc, format!("rule number {} out of range 1-{max}", n.v));
            None
        }
    };
    let action = match &e.action {
        None => {
            ck.err(&e.loc, "ACL entry has no action (allow or deny)");
            None
        }
        Some(a) => match a.v.to_ascii_lowercase().as_str() {
            "allow" => Some(AclAction::Allow),
            "deny" => Some(AclAction::Deny),
            other => {
                ck.err(&a.loc, format!("unknown action '{other}' (allow or deny)"));
                None
            }
        },
    };
    let net = match &e.cidr {
        None => {
            ck.err(&e.loc, "ACL entry has no cidr (one IPv4 or IPv6 CIDR)");
            None
        }
        Some(c) => cidr(ck, c),
    };
    let proto = proto(ck, &e.matches);
    let ports = proto.and_then(|p| ports(ck, &e.matches, p));
    if ck.diags.len() > before {
        return None;
    }
    Some(AclEntry {
        number: number?,
        action: action?,
        proto: proto?,
        ports: ports?,
        cidr: net?,
        loc: e.loc.clone(),
    })
}

/// The names a binding may refer to.
struct Names<'a> {
    groups: &'a BTreeSet<String>,
    acls: &'a BTreeSet<String>,
    /// The groups as written: AWS input keeps their GroupId, GroupName and VPC.
    raw: &'a [RawGroup],
}

/// The group a binding names: by its name in the rule set or, for AWS input, by its GroupId,
/// or by its GroupName when one group only has it (a name several VPCs use is ambiguous).
fn resolve_group(n: &Names<'_>, r: &str) -> Result<Option<String>, String> {
    if n.groups.contains(r) {
        return Ok(Some(r.to_string()));
    }
    if let Some(g) = n.raw.iter().find(|g| g.aws_id.as_ref().is_some_and(|i| i.v == r)) {
        return Ok(Some(g.name.v.clone()));
    }
    let named: Vec<&RawGroup> =
        n.raw.iter().filter(|g| g.aws_name.as_ref().is_some_and(|x| x.v == r)).collect();
    match named.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.name.v.clone())),
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|g| {
                    let id = g.aws_id.as_ref().map_or("(no GroupId)", |s| s.v.as_str());
                    match &g.aws_vpc {
                        Some(v) => format!("{id} in {}", v.v),
                        None => id.to_string(),
                    }
                })
                .collect();
            Err(format!("group name '{r}' is ambiguous: it names {} (use the GroupId)", ids.join(", ")))
        }
    }
}

/// A binding as `--bind` spelled it (its groups, then its network ACL).
fn bind_text(b: &RawBinding) -> String {
    let names: Vec<&str> =
        b.groups.iter().map(|g| g.v.as_str()).chain(b.acl.iter().map(|a| a.v.as_str())).collect();
    format!("{}={}", b.iface.v, names.join(","))
}

/// Checks the interface tables of the file, or of host `host`.
fn bindings(
    ck: &mut Checker,
    raw: &[RawBinding],
    names_known: &Names<'_>,
    quotas: &Quotas,
    host: Option<&str>,
) -> Vec<Binding> {
    let mut interfaces = Vec::new();
    let mut seen_ifaces = BTreeSet::new();
    for b in raw {
        let on = host.map_or(String::new(), |h| format!(" of host {h}"));
        check_iface_name(ck, &b.iface);
        if !seen_ifaces.insert(b.iface.v.clone()) {
            ck.err(&b.iface.loc, format!("interface '{}'{on} bound twice", b.iface.v));
        }
        let mut names: Vec<String> = Vec::new();
        for g in &b.groups {
            match resolve_group(names_known, &g.v) {
                Ok(None) => ck.err(&g.loc, format!("unknown group '{}'", g.v)),
                Err(msg) if g.loc.file == "--bind" => {
                    ck.err(&g.loc, format!("--bind {}: {msg}", bind_text(b)));
                }
                Err(msg) => ck.err(&g.loc, msg),
                Ok(Some(name)) if names.contains(&name) => {
                    ck.err(&g.loc, format!("group '{}' listed twice for {}", g.v, b.iface.v));
                }
                Ok(Some(name)) => names.push(name),
            }
        }
        if b.groups.len() > quotas.groups_per_interface {
            ck.err(
                &b.iface.loc,
                format!(
                    "{} groups bound to {}, quota is {} (groups_per_interface)",
                    b.groups.len(),
                    b.iface.v,
                    quotas.groups_per_interface
                ),
            );
        }
        let mut timeouts = sg_common::conntrack::CtTimeouts::AWS_DEFAULTS;
        for (name, v) in &b.timeouts {
            let (_, lo, hi) = sg_common::conntrack::CtTimeouts::RANGES
                .iter()
                .find(|(n, _, _)| n == name)
                .copied()
                .expect("known timeout field");
            if (i64::from(lo)..=i64::from(hi)).contains(&v.v) {
                super::set_timeout(&mut timeouts, name, v.v as u32);
            } else {
                ck.err(&v.loc, format!("{name} timeout {} out of range {lo}-{hi} seconds", v.v));
            }
        }
        if let Some(a) = &b.acl
            && !names_known.acls.contains(&a.v)
        {
            ck.err(&a.loc, format!("unknown network ACL '{}'", a.v));
        }
        interfaces.push(Binding {
            iface: b.iface.v.clone(),
            groups: names,
            timeouts,
            no_implicit: b.no_implicit,
            monitor: b.monitor,
            acl: b.acl.as_ref().map(|a| a.v.clone()),
            loc: b.iface.loc.clone(),
        });
    }
    interfaces
}
