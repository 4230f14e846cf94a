//! `sgctl audit`: best-practice checks over a rule set. Pure: a [`RuleSet`] (and, for
//! `--live`, per-rule hit counts) in, findings out. Each finding names the rule (file:line)
//! and how to fix it.
//!
//! The checks are [`CHECKS`] (the README's table is that list; a test holds them equal).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use serde::Serialize;

use crate::{Dir, Group, Ports, Proto, Rule, RuleSet, TCP, UDP, key::key_range_covers};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// Every check: its name, severity and what it finds.
pub const CHECKS: &[(&str, Severity, &str)] = &[
    ("admin_port_open_to_world", Severity::Error, "SSH (22) or RDP (3389) reachable from 0.0.0.0/0 or ::/0"),
    ("all_open_to_world", Severity::Error, "every protocol, or every TCP/UDP port, reachable from the world"),
    (
        "database_port_open_to_world",
        Severity::Warn,
        "MySQL, PostgreSQL, Redis, MongoDB, Elasticsearch, memcached, Docker API, etcd, ... open to the world",
    ),
    (
        "shadowed_rule",
        Severity::Warn,
        "a rule that allows nothing another rule of the same group and direction does not",
    ),
    (
        "unbound_group",
        Severity::Warn,
        "a group bound to no interface and member of no group (info if only used as a peer)",
    ),
    ("zero_hits", Severity::Warn, "`--live`: a rule that allowed no flow since it was first applied"),
    ("egress_allow_all", Severity::Info, "everything may leave (AWS's default egress)"),
    (
        "rule_never_matches",
        Severity::Warn,
        "a rule no packet can match (ICMP of the other family than all its peers)",
    ),
    (
        "acl_blocks_return_traffic",
        Severity::Warn,
        "a group rule admits flows whose replies the interface's network ACL denies (it is stateless: the ephemeral ports need entries)",
    ),
    (
        "acl_shadowed_entry",
        Severity::Warn,
        "a network ACL entry that a lower-numbered entry always decides first",
    ),
    (
        "acl_entry_never_matches",
        Severity::Warn,
        "a network ACL entry no packet can match (ICMP of the other family)",
    ),
];

/// Why `proto` matches no packet to or from any of `peers`: ICMP is IPv4's and ICMPv6 is
/// IPv6's (the flow key has no ICMP type for the other family). `None` when some peer is of
/// the protocol's family, or there are no peers. For rules and network ACL entries alike.
fn other_family(proto: Proto, peers: &[IpNet]) -> Option<&'static str> {
    let all = |v6: bool| !peers.is_empty() && peers.iter().all(|n| matches!(n, IpNet::V6(_)) == v6);
    match proto {
        Proto::Num(crate::ICMP) if all(true) => Some("icmp (IPv4) with IPv6 addresses only"),
        Proto::Num(crate::ICMPV6) if all(false) => Some("icmpv6 with IPv4 addresses only"),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    /// `file:line:col` of the rule (or group) concerned.
    pub location: String,
    pub group: String,
    pub direction: Option<&'static str>,
    /// The rule as one line, when the finding is about a rule.
    pub rule: Option<String>,
    pub message: String,
    pub fix: String,
}

/// Ports that must not face the world: SSH and RDP (errors).
pub const ADMIN_PORTS: [(u16, &str); 2] = [(22, "SSH"), (3389, "RDP")];

/// Database and admin service ports (warnings when open to the world).
pub const SERVICE_PORTS: [(u16, &str); 16] = [
    (1433, "Microsoft SQL Server"),
    (1521, "Oracle"),
    (2375, "Docker API (plain)"),
    (2376, "Docker API"),
    (2379, "etcd"),
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (5601, "Kibana"),
    (5984, "CouchDB"),
    (6379, "Redis"),
    (9042, "Cassandra"),
    (9200, "Elasticsearch"),
    (9300, "Elasticsearch transport"),
    (10250, "Kubelet"),
    (11211, "memcached"),
    (27017, "MongoDB"),
];

fn is_world(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// The rule's peers, resolved, that are the whole address space.
fn world_peers(rs: &RuleSet, r: &Rule) -> Vec<IpNet> {
    rs.peer_nets(&r.peer).into_iter().filter(is_world).collect()
}

/// Does the rule allow TCP or UDP `port`?
fn allows_port(r: &Rule, port: u16) -> bool {
    match (r.proto, r.ports) {
        (Proto::All, _) => true,
        (Proto::Num(TCP | UDP), Ports::Range(lo, hi)) => (lo..=hi).contains(&port),
        (Proto::Num(TCP | UDP), Ports::All) => true,
        _ => false,
    }
}

fn finding(
    check: &'static str,
    severity: Severity,
    g: &Group,
    dir: Dir,
    r: &Rule,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        check,
        severity,
        location: r.loc.to_string(),
        group: g.name.clone(),
        direction: Some(dir.as_str()),
        rule: Some(r.describe(dir)),
        message,
        fix,
    }
}

fn world_checks(rs: &RuleSet, g: &Group, r: &Rule, out: &mut Vec<Finding>) {
    let world = world_peers(rs, r);
    if world.is_empty() {
        return;
    }
    let to: Vec<String> = world.iter().map(ToString::to_string).collect();
    let to = to.join(" and ");
    let all_ports =
        matches!((r.proto, r.ports), (Proto::All, _) | (Proto::Num(TCP | UDP), Ports::Range(0, 65535)))
            || matches!((r.proto, r.ports), (Proto::Num(TCP | UDP), Ports::All));
    if all_ports {
        let what = if r.proto == Proto::All { "every protocol" } else { "every port" };
        out.push(finding(
            "all_open_to_world",
            Severity::Error,
            g,
            Dir::Ingress,
            r,
            format!("{what} is open to {to}"),
            "allow only the ports the service needs, from the addresses that need them".to_string(),
        ));
        return;
    }
    for (port, name) in ADMIN_PORTS {
        if allows_port(r, port) {
            out.push(finding(
                "admin_port_open_to_world",
                Severity::Error,
                g,
                Dir::Ingress,
                r,
                format!("{name} ({port}) is open to {to}"),
                format!("allow {port} only from your admin network or bastion (a /32 or a prefix list)"),
            ));
        }
    }
    let services: Vec<String> =
        SERVICE_PORTS.iter().filter(|(p, _)| allows_port(r, *p)).map(|(p, n)| format!("{n} ({p})")).collect();
    if !services.is_empty() {
        out.push(finding(
            "database_port_open_to_world",
            Severity::Warn,
            g,
            Dir::Ingress,
            r,
            format!("{} open to {to}", services.join(", ")),
            "allow it only from the application's group (from_group) or private prefixes".to_string(),
        ));
    }
}

/// Is everything `r` allows also allowed by `o` (same group and direction)? Its protocol and
/// ports as [`acl_covers`] compares entries' (`key_range_covers`), then its peers.
fn covered_by(rs: &RuleSet, r: &Rule, o: &Rule) -> bool {
    if !key_range_covers(o.proto, o.ports, r.proto, r.ports) {
        return false;
    }
    let mine = rs.peer_nets(&r.peer);
    let theirs = rs.peer_nets(&o.peer);
    !mine.is_empty() && mine.iter().all(|n| theirs.iter().any(|t| t.contains(n)))
}

fn shadow_checks(rs: &RuleSet, g: &Group, dir: Dir, out: &mut Vec<Finding>) {
    let rules = g.rules(dir);
    for (i, r) in rules.iter().enumerate() {
        if dir == Dir::Egress && g.default_egress {
            continue;
        }
        // The broader rule; for exact duplicates only the later one is reported.
        let by = rules
            .iter()
            .enumerate()
            .find(|(j, o)| *j != i && covered_by(rs, r, o) && (!covered_by(rs, o, r) || *j < i));
        if let Some((_, o)) = by {
            out.push(finding(
                "shadowed_rule",
                Severity::Warn,
                g,
                dir,
                r,
                format!("allows nothing that `{}` ({}) does not already allow", o.describe(dir), o.loc),
                "remove it, or narrow the broader rule if this one was meant to be the limit".to_string(),
            ));
        }
    }
}

/// Findings for `rs`, most severe first, then in file order.
pub fn audit(rs: &RuleSet) -> Vec<Finding> {
    let mut out = Vec::new();
    for g in &rs.groups {
        for r in &g.ingress {
            world_checks(rs, g, r, &mut out);
        }
        for dir in Dir::BOTH {
            shadow_checks(rs, g, dir, &mut out);
            for r in g.rules(dir) {
                if let Some(what) = other_family(r.proto, &rs.peer_nets(&r.peer)) {
                    out.push(finding(
                        "rule_never_matches",
                        Severity::Warn,
                        g,
                        dir,
                        r,
                        format!("{what}: no packet matches it"),
                        "use icmp for IPv4 peers and icmpv6 for IPv6 ones".to_string(),
                    ));
                }
            }
        }
        let bound = rs.interfaces.iter().any(|b| b.groups.contains(&g.name));
        let member = rs.groups.iter().any(|o| o.member_groups.contains(&g.name));
        let referenced = rs
            .groups
            .iter()
            .any(|o| o.ingress.iter().chain(&o.egress).any(|r| r.peer == crate::Peer::Group(g.name.clone())));
        if !bound && !member {
            let why = if referenced { " (it is only referenced as a peer)" } else { "" };
            out.push(Finding {
                check: "unbound_group",
                severity: if referenced { Severity::Info } else { Severity::Warn },
                location: g.loc.to_string(),
                group: g.name.clone(),
                direction: None,
                rule: None,
                message: format!("group {} is bound to no interface{why}", g.name),
                fix: format!("bind it under [interfaces.<name>] groups = [\"{}\"], or delete it", g.name),
            });
        }
        for r in &g.egress {
            if r.proto == Proto::All && !world_peers(rs, r).is_empty() {
                out.push(Finding {
                    fix: "list the destinations the host needs if egress must be limited".to_string(),
                    ..finding(
                        "egress_allow_all",
                        Severity::Info,
                        g,
                        Dir::Egress,
                        r,
                        if g.default_egress {
                            "everything may leave (AWS's default egress: the group has no egress list)"
                                .to_string()
                        } else {
                            "everything may leave".to_string()
                        },
                        String::new(),
                    )
                });
            }
        }
    }
    out.extend(acl_checks(rs));
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// Ephemeral ports replies go to (Linux's default range and AWS's 1024-65535 both hold them).
const EPHEMERAL: [u16; 3] = [32768, 49152, 60999];

/// The network ACL checks: entries that cannot decide anything, and group rules whose replies
/// the interface's ACL denies (an ACL is stateless: return traffic needs its own entries).
fn acl_checks(rs: &RuleSet) -> Vec<Finding> {
    let mut out = Vec::new();
    for acl in &rs.acls {
        for dir in Dir::BOTH {
            let entries = acl.entries(dir);
            for (i, e) in entries.iter().enumerate() {
                let f = |check, message: String, fix: &str| Finding {
                    check,
                    severity: Severity::Warn,
                    location: e.loc.to_string(),
                    group: acl.name.clone(),
                    direction: Some(dir.as_str()),
                    rule: Some(e.describe(dir)),
                    message,
                    fix: fix.to_string(),
                };
                if let Some(what) = other_family(e.proto, &[e.cidr]) {
                    out.push(f(
                        "acl_entry_never_matches",
                        format!("{what}: no packet matches it"),
                        "use icmp for IPv4 CIDRs and icmpv6 for IPv6 ones",
                    ));
                } else if let Some(o) = entries[..i].iter().find(|o| acl_covers(o, e)) {
                    out.push(f(
                        "acl_shadowed_entry",
                        format!(
                            "entry {} ({}, {}) matches every packet this one would and is met first: this entry never decides",
                            o.number,
                            o.action.as_str(),
                            o.loc
                        ),
                        "remove it, or give it a number below the broader entry if it was meant to decide",
                    ));
                }
            }
        }
    }
    for b in &rs.interfaces {
        let Some(acl) = rs.iface_acl(&b.iface) else { continue };
        for r in rs.iface_rules(&b.iface) {
            let proto = match r.rule.proto {
                Proto::All => TCP,
                Proto::Num(p @ (TCP | UDP)) => p,
                Proto::Num(_) => continue,
            };
            let back = if r.dir == Dir::Ingress { Dir::Egress } else { Dir::Ingress };
            let blocked = rs.peer_nets(&r.rule.peer).into_iter().take(16).find_map(|net| {
                let peer = net.network();
                let host = if peer.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                EPHEMERAL.iter().find_map(|&dport| {
                    // The reply: from the host to the peer at egress, from the peer at ingress.
                    let (src, dst) = if back == Dir::Egress { (host, peer) } else { (peer, host) };
                    let p = crate::model::Probe {
                        src,
                        dst,
                        proto,
                        dport,
                        icmp_type: 0,
                        icmp_code: 0,
                        later_fragment: false,
                    };
                    let v = acl.decide(back, &p);
                    (!v.allows()).then_some((peer, dport, v))
                })
            });
            if let Some((peer, dport, v)) = blocked {
                let by = match v.entry() {
                    Some(i) => {
                        format!("entry {} ({})", acl.entries(back)[i].number, acl.entries(back)[i].loc)
                    }
                    None => "its final deny".to_string(),
                };
                let name = if proto == TCP { "tcp" } else { "udp" };
                out.push(Finding {
                    check: "acl_blocks_return_traffic",
                    severity: Severity::Warn,
                    location: r.rule.loc.to_string(),
                    group: r.group.clone(),
                    direction: Some(r.dir.as_str()),
                    rule: Some(r.rule.describe(r.dir)),
                    message: format!(
                        "on {}, network ACL {} denies the replies ({} {name} to port {dport} for {peer}) by {by}: the ACL is stateless",
                        b.iface,
                        acl.name,
                        back.as_str()
                    ),
                    fix: format!(
                        "allow {name} 1024-65535 {} {} in the ACL's {} entries",
                        if back == Dir::Egress { "to" } else { "from" },
                        peer,
                        back.as_str()
                    ),
                });
            }
        }
    }
    out
}

/// Does ACL entry `o` match every packet `e` matches (same direction)? Protocol and ports as
/// [`covered_by`] compares rules', then the CIDRs.
fn acl_covers(o: &crate::acl::AclEntry, e: &crate::acl::AclEntry) -> bool {
    key_range_covers(o.proto, o.ports, e.proto, e.ports) && o.cidr.contains(&e.cidr)
}

/// Live check: rules of `iface` with zero hits (`hits[id]`, from `sgctl stats`).
pub fn zero_hits(rs: &RuleSet, iface: &str, hits: &[u64]) -> Vec<Finding> {
    rs.iface_rules(iface)
        .iter()
        .zip(hits)
        .filter(|(_, h)| **h == 0)
        .map(|(r, _)| Finding {
            check: "zero_hits",
            severity: Severity::Warn,
            location: r.rule.loc.to_string(),
            group: r.group.clone(),
            direction: Some(r.dir.as_str()),
            rule: Some(r.rule.describe(r.dir)),
            message: format!("allowed no flow on {iface} since it was first applied"),
            fix: "if nothing should use it, remove it; if something should, check the peer and ports"
                .to_string(),
        })
        .collect()
}

/// `file:line:col: severity: check: message` and the fix, one finding per two lines.
pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let rule = f
            .rule
            .as_ref()
            .map_or(String::new(), |r| format!(" [{} {}: {r}]", f.group, f.direction.unwrap_or("")));
        let _ = writeln!(
            s,
            "{}: {}: {}: {}{rule}\n    fix: {}",
            f.location,
            f.severity.as_str(),
            f.check,
            f.message,
            f.fix
        );
    }
    s
}
