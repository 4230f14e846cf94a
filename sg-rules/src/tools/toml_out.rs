//! A checked rule set written back as sgctl TOML (what `sgctl import aws` prints). Reading the
//! output again gives an equal rule set (up to source locations).

use std::{collections::BTreeSet, fmt::Write as _};

use ipnet::IpNet;

use crate::{Dir, Group, Peer, Ports, Proto, Rule, RuleSet};

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when possible.
fn key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        q(s)
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// The `proto`, `ports`, `icmp_type` and `icmp_code` fields of a rule or an ACL entry.
fn match_fields(proto: Proto, ports: Ports) -> Vec<String> {
    let mut fields = vec![format!("proto = {}", q(&proto.name()))];
    match (proto, ports) {
        (Proto::All, _) | (_, Ports::All) => {}
        (_, Ports::Range(lo, hi)) if lo == hi => fields.push(format!("ports = {}", q(&lo.to_string()))),
        (_, Ports::Range(lo, hi)) => fields.push(format!("ports = {}", q(&format!("{lo}-{hi}")))),
        (_, Ports::Icmp { icmp_type, code }) => {
            if let Some(t) = icmp_type {
                fields.push(format!("icmp_type = {t}"));
            }
            if let Some(c) = code {
                fields.push(format!("icmp_code = {c}"));
            }
        }
    }
    fields
}

fn rule_line(rules: &[&Rule], dir: Dir) -> String {
    let r = rules[0];
    let mut fields = match_fields(r.proto, r.ports);
    let (cidr_key, group_key, list_key) = match dir {
        Dir::Ingress => ("from", "from_group", "from_prefix_list"),
        Dir::Egress => ("to", "to_group", "to_prefix_list"),
    };
    match &r.peer {
        Peer::Cidr(_) => {
            let nets: Vec<String> = rules
                .iter()
                .filter_map(|r| if let Peer::Cidr(n) = &r.peer { Some(q(&n.to_string())) } else { None })
                .collect();
            fields.push(format!("{cidr_key} = {}", list(&nets)));
        }
        Peer::Group(g) => fields.push(format!("{group_key} = {}", q(g))),
        Peer::PrefixList(l) => fields.push(format!("{list_key} = {}", q(l))),
    }
    if let Some(d) = &r.description {
        fields.push(format!("description = {}", q(d)));
    }
    format!("  {{ {} }},", fields.join(", "))
}

/// Consecutive CIDR rules of one source line (same index, same everything but the CIDR) are
/// written back as one line with a list.
fn lines(rules: &[Rule], dir: Dir) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let r = &rules[i];
        let mut run = vec![r];
        if matches!(r.peer, Peer::Cidr(_)) {
            while let Some(n) = rules.get(i + run.len()) {
                let same = n.index == r.index
                    && matches!(n.peer, Peer::Cidr(_))
                    && (n.proto, n.ports, &n.description) == (r.proto, r.ports, &r.description);
                if !same {
                    break;
                }
                run.push(n);
            }
        }
        i += run.len();
        out.push(rule_line(&run, dir));
    }
    out
}

/// Whether a rule of `rs` references group `name`.
fn referenced(rs: &RuleSet, name: &str) -> bool {
    rs.groups
        .iter()
        .any(|g| g.ingress.iter().chain(&g.egress).any(|r| matches!(&r.peer, Peer::Group(n) if n == name)))
}

/// `key = "value"` lines for the optional strings that are set.
fn strings(s: &mut String, fields: &[(&str, &Option<String>)]) {
    for (k, v) in fields {
        if let Some(v) = v {
            let _ = writeln!(s, "{k} = {}", q(v));
        }
    }
}

/// A group's own members: its members less those its `member_groups` bring (the rule set
/// keeps members expanded; reading `members` and `member_groups` back expands to the same).
fn own_members(rs: &RuleSet, g: &Group) -> Vec<IpNet> {
    let brought: BTreeSet<IpNet> =
        g.member_groups.iter().filter_map(|n| rs.group(n)).flat_map(|m| m.members.iter().copied()).collect();
    g.members.iter().filter(|n| !brought.contains(n)).copied().collect()
}

/// `members` and `member_groups` lines of group `g` (groups named by `name`); whether any was
/// written.
fn member_lines(s: &mut String, rs: &RuleSet, g: &Group, name: &dyn Fn(&str) -> String) -> bool {
    let own = own_members(rs, g);
    if !own.is_empty() {
        let m: Vec<String> = own
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    q(&n.addr().to_string())
                } else {
                    q(&n.to_string())
                }
            })
            .collect();
        let _ = writeln!(s, "members = {}", list(&m));
    }
    if !g.member_groups.is_empty() {
        let m: Vec<String> = g.member_groups.iter().map(|n| q(&name(n))).collect();
        let _ = writeln!(s, "member_groups = {}", list(&m));
    }
    !own.is_empty() || !g.member_groups.is_empty()
}

fn prefix_list_lines(s: &mut String, rs: &RuleSet) {
    for l in &rs.prefix_lists {
        let _ = writeln!(s, "[prefix_lists.{}]", key(&l.name));
        if l.entries.is_empty() {
            let _ = writeln!(
                s,
                "entries = []   # no input listed its entries: it matches nothing. Entries come from --prefix-lists (get-managed-prefix-list-entries, describe-prefix-lists), or list CIDRs here\n"
            );
            continue;
        }
        let e: Vec<String> = l.entries.iter().map(|n| q(&n.to_string())).collect();
        let _ = writeln!(s, "entries = {}\n", list(&e));
    }
}

/// What AWS JSON of the groups cannot say, as a `--members` file: every group's members and
/// member groups, and every prefix list's entries, keyed by `name` (the GroupId `export aws`
/// writes). `import aws` of the export with this file gives the same groups.
pub fn members_file(rs: &RuleSet, name: &dyn Fn(&str) -> String) -> String {
    let mut s = String::from(
        "# Members and prefix-list entries of `sgctl export aws` (read back with `sgctl import aws FILE --members THIS`)\n\n",
    );
    for g in &rs.groups {
        let mut body = String::new();
        if member_lines(&mut body, rs, g, name) {
            let _ = writeln!(s, "[groups.{}]\n{body}", key(&name(&g.name)));
        }
    }
    prefix_list_lines(&mut s, rs);
    s
}

/// The rule set as sgctl TOML.
pub fn to_toml(rs: &RuleSet) -> String {
    let mut s = String::new();
    let d = crate::Quotas::default();
    if rs.quotas != d {
        let _ = writeln!(s, "[quotas]");
        let _ = writeln!(s, "rules_per_group = {}", rs.quotas.rules_per_group);
        let _ = writeln!(s, "groups_per_interface = {}\n", rs.quotas.groups_per_interface);
    }
    for g in &rs.groups {
        let _ = writeln!(s, "[groups.{}]", key(&g.name));
        strings(&mut s, &[("aws_id", &g.aws_id), ("aws_name", &g.aws_name), ("aws_vpc", &g.aws_vpc)]);
        if let Some(desc) = &g.description {
            let _ = writeln!(s, "description = {}", q(desc));
        }
        let written = member_lines(&mut s, rs, g, &|n| n.to_string());
        if !written && referenced(rs, &g.name) {
            let _ = writeln!(
                s,
                "members = []   # no input listed its members: it matches nothing. Members come from --network-interfaces (describe-network-interfaces) or --members, or list addresses here"
            );
        }
        for dir in Dir::BOTH {
            if dir == Dir::Egress && g.default_egress {
                continue;
            }
            let rules = g.rules(dir);
            if rules.is_empty() {
                let _ = writeln!(s, "{} = []", dir.as_str());
                continue;
            }
            let _ = writeln!(s, "{} = [", dir.as_str());
            for l in lines(rules, dir) {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "]");
        }
        s.push('\n');
    }
    prefix_list_lines(&mut s, rs);
    for a in &rs.acls {
        let _ = writeln!(s, "[acls.{}]", key(&a.name));
        strings(&mut s, &[("aws_id", &a.aws_id), ("aws_vpc", &a.aws_vpc)]);
        for dir in Dir::BOTH {
            let _ = writeln!(s, "{} = [", dir.as_str());
            for e in a.entries(dir) {
                let mut fields =
                    vec![format!("rule = {}", e.number), format!("action = {}", q(e.action.as_str()))];
                fields.extend(match_fields(e.proto, e.ports));
                fields.push(format!("cidr = {}", q(&e.cidr.to_string())));
                let _ = writeln!(s, "  {{ {} }},", fields.join(", "));
            }
            let _ = writeln!(s, "]");
        }
        s.push('\n');
    }
    for b in &rs.interfaces {
        let _ = writeln!(s, "[interfaces.{}]", key(&b.iface));
        let g: Vec<String> = b.groups.iter().map(|g| q(g)).collect();
        let _ = writeln!(s, "groups = {}", list(&g));
        if let Some(a) = &b.acl {
            let _ = writeln!(s, "acl = {}", q(a));
        }
        let defaults = crate::timeout_fields(&sg_common::conntrack::CtTimeouts::AWS_DEFAULTS);
        let set: Vec<String> = sg_common::conntrack::CtTimeouts::RANGES
            .iter()
            .zip(crate::timeout_fields(&b.timeouts).iter().zip(defaults))
            .filter(|(_, (v, d))| **v != *d)
            .map(|((name, _, _), (v, _))| format!("{name} = {v}"))
            .collect();
        if !set.is_empty() {
            let _ = writeln!(s, "timeouts = {{ {} }}", set.join(", "));
        }
        if b.no_implicit != 0 {
            use sg_common::config::{
                CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6, CONFIG_NO_IMPLICIT_NDP,
            };
            let on = |bit: u32| b.no_implicit & bit == 0;
            let _ = writeln!(
                s,
                "implicit = {{ ndp = {}, dhcp = {}, dhcpv6 = {} }}",
                on(CONFIG_NO_IMPLICIT_NDP),
                on(CONFIG_NO_IMPLICIT_DHCP),
                on(CONFIG_NO_IMPLICIT_DHCPV6)
            );
        }
        if let Some(m) = b.monitor {
            let _ = writeln!(s, "monitor = {m}");
        }
        s.push('\n');
    }
    s
}
