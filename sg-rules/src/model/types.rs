//! The checked rule set: groups and their rules, prefix lists, interface and host bindings,
//! quotas and timeouts (what validation produces and every later stage reads).

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Loc, acl};

/// Limits on a rule set. Defaults far above AWS's (60 rules per group and direction,
/// 5 groups per interface); a rules file may set its own in `[quotas]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Rules per group and direction; each peer (CIDR, group, prefix list) counts as one, as
    /// in AWS.
    pub rules_per_group: usize,
    /// Groups bound to one interface.
    pub groups_per_interface: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { rules_per_group: 10_000, groups_per_interface: 16 }
    }
}

/// A protocol: all, or one IANA number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Proto {
    All,
    Num(u8),
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

impl Proto {
    /// A protocol by name: tcp, udp, icmp, icmpv6 (any case), all or -1, or a number 0-255.
    pub fn from_name(name: &str) -> Option<Proto> {
        Some(match name.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Num(TCP),
            "udp" => Proto::Num(UDP),
            "icmp" => Proto::Num(ICMP),
            "icmpv6" => Proto::Num(ICMPV6),
            "all" | "-1" => Proto::All,
            n => Proto::Num(n.parse().ok()?),
        })
    }

    /// AWS's spelling: "tcp", "udp", "icmp", "icmpv6", "-1", or the number.
    pub fn aws_name(self) -> String {
        match self {
            Proto::All => "-1".to_string(),
            Proto::Num(TCP) => "tcp".to_string(),
            Proto::Num(UDP) => "udp".to_string(),
            Proto::Num(ICMP) => "icmp".to_string(),
            Proto::Num(ICMPV6) => "icmpv6".to_string(),
            Proto::Num(n) => n.to_string(),
        }
    }

    /// The TOML spelling: "all" or as AWS.
    pub fn name(self) -> String {
        match self {
            Proto::All => "all".to_string(),
            p @ Proto::Num(_) => p.aws_name(),
        }
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Num(ICMP | ICMPV6))
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Num(TCP | UDP))
    }
}

/// What a rule allows of its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ports {
    /// Every port, type, or the whole protocol.
    All,
    /// Destination ports `lo..=hi` (TCP, UDP).
    Range(u16, u16),
    /// ICMP type and code; `None` = any. A code needs a type.
    Icmp { icmp_type: Option<u8>, code: Option<u8> },
}

/// The other end a rule allows, as written (resolved to CIDRs by [`RuleSet::peer_nets`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Peer {
    Cidr(IpNet),
    /// The members of a group (their addresses).
    Group(String),
    /// The entries of a prefix list.
    PrefixList(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(n) => write!(f, "{n}"),
            Peer::Group(g) => write!(f, "group {g}"),
            Peer::PrefixList(p) => write!(f, "prefix-list {p}"),
        }
    }
}

/// Direction of a rule, as in AWS (ingress: peer = source; egress: peer = destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Ingress, Dir::Egress];

    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }

    pub fn datapath(self) -> sg_common::Direction {
        match self {
            Dir::Ingress => sg_common::Direction::Ingress,
            Dir::Egress => sg_common::Direction::Egress,
        }
    }
}

/// One checked rule: one line of a group's ingress or egress list (several peers of one line
/// are expanded into several rules with the same `index`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub proto: Proto,
    pub ports: Ports,
    pub peer: Peer,
    pub description: Option<String>,
    /// Position of the line in the group's list for this direction (0-based).
    pub index: usize,
    pub loc: Loc,
}

impl Rule {
    /// The rule as one line: `tcp 443 from 0.0.0.0/0 "web"`.
    pub fn describe(&self, dir: Dir) -> String {
        let what = match (self.proto, self.ports) {
            (Proto::All, _) => "all".to_string(),
            (p, Ports::All) => format!("{} all", p.name()),
            (p, Ports::Range(lo, hi)) if lo == hi => format!("{} {lo}", p.name()),
            (p, Ports::Range(lo, hi)) => format!("{} {lo}-{hi}", p.name()),
            (p, Ports::Icmp { icmp_type, code }) => {
                let t = icmp_type.map_or("-1".to_string(), |t| t.to_string());
                let c = code.map_or("-1".to_string(), |c| c.to_string());
                format!("{} type {t} code {c}", p.name())
            }
        };
        let arrow = if dir == Dir::Ingress { "from" } else { "to" };
        match &self.description {
            Some(d) => format!("{what} {arrow} {} ({d:?})", self.peer),
            None => format!("{what} {arrow} {}", self.peer),
        }
    }

    /// Identity of a rule for diffs and hit carry-over: everything but its location.
    pub fn identity(&self) -> (Proto, Ports, Peer, Option<String>) {
        (self.proto, self.ports, self.peer.clone(), self.description.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// AWS GroupId (sg-...), kept for import/export: AWS JSON keys groups by it.
    pub aws_id: Option<String>,
    /// AWS GroupName, when the group is named otherwise here (GroupName is unique only per
    /// VPC: a name several groups share is not a usable name).
    #[serde(default)]
    pub aws_name: Option<String>,
    /// AWS VpcId, kept for export and for telling same-named groups apart.
    #[serde(default)]
    pub aws_vpc: Option<String>,
    /// The group's members (what `from_group` / `to_group` resolve to): addresses, or
    /// prefixes delegated to a member's network interface, including those of
    /// `member_groups`, transitively. Empty: the group matches nothing.
    pub members: Vec<IpNet>,
    /// Groups whose members are members of this group.
    pub member_groups: Vec<String>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// `true` when the file gave no egress list: AWS's default allow-all egress was added.
    pub default_egress: bool,
    pub loc: Loc,
}

impl Group {
    pub fn rules(&self, dir: Dir) -> &[Rule] {
        match dir {
            Dir::Ingress => &self.ingress,
            Dir::Egress => &self.egress,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixList {
    pub name: String,
    pub entries: Vec<IpNet>,
    pub loc: Loc,
}

/// The groups bound to an interface, in file order of the binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub iface: String,
    pub groups: Vec<String>,
    /// Conntrack idle timeouts (seconds) of the interface; AWS defaults where not given.
    #[serde(default = "default_timeouts", with = "timeouts_serde")]
    pub timeouts: sg_common::conntrack::CtTimeouts,
    /// `CONFIG_NO_IMPLICIT_*` bits: implicit allowances switched off for the interface.
    #[serde(default)]
    pub no_implicit: u32,
    /// Monitor mode set by the file (`monitor = true|false`); `None`: left as `sgctl attach`
    /// set it.
    #[serde(default)]
    pub monitor: Option<bool>,
    /// The network ACL bound to the interface (at most one, as a subnet has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    pub loc: Loc,
}

fn default_timeouts() -> sg_common::conntrack::CtTimeouts {
    sg_common::conntrack::CtTimeouts::AWS_DEFAULTS
}

/// `CtTimeouts` (a shared `#[repr(C)]` type) as a JSON map of its fields.
mod timeouts_serde {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use sg_common::conntrack::CtTimeouts;

    pub fn fields(t: &CtTimeouts) -> [u32; 7] {
        [t.tcp_established, t.tcp_half_open, t.tcp_closing, t.udp, t.udp_stream, t.icmp, t.other]
    }

    pub fn set(t: &mut CtTimeouts, name: &str, v: u32) {
        match name {
            "tcp_established" => t.tcp_established = v,
            "tcp_half_open" => t.tcp_half_open = v,
            "tcp_closing" => t.tcp_closing = v,
            "udp" => t.udp = v,
            "udp_stream" => t.udp_stream = v,
            "icmp" => t.icmp = v,
            "other" => t.other = v,
            _ => {}
        }
    }

    pub fn serialize<S: Serializer>(t: &CtTimeouts, s: S) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&str, u32> =
            CtTimeouts::RANGES.iter().zip(fields(t)).map(|((name, _, _), v)| (*name, v)).collect();
        m.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CtTimeouts, D::Error> {
        let m = BTreeMap::<String, u32>::deserialize(d)?;
        let mut t = CtTimeouts::AWS_DEFAULTS;
        for (k, v) in m {
            set(&mut t, &k, v);
        }
        Ok(t)
    }
}

pub use timeouts_serde::{fields as timeout_fields, set as set_timeout};

/// A checked rule set: every reference resolves, every value is in range, quotas hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    pub quotas: Quotas,
    /// In file order (the order that decides which rule a flow is attributed to).
    pub groups: Vec<Group>,
    pub prefix_lists: Vec<PrefixList>,
    /// Network ACLs ([`acl`]), in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<acl::Acl>,
    pub interfaces: Vec<Binding>,
    /// Fleet: the interfaces of each host (`[hosts.NAME.interfaces.IF]`); a host enforces
    /// [`RuleSet::for_host`]. Empty in a single host's file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostBinding>,
    /// Fleet: `[fleet] member_ranges`, where the addresses hosts register must lie (empty: any
    /// address but the reserved ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ranges: Vec<IpNet>,
}

/// Fleet: the interfaces of one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBinding {
    pub host: String,
    pub interfaces: Vec<Binding>,
    /// The host's pinned addresses (empty: not pinned): its registrations may add only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    pub loc: Loc,
}

/// A rule as seen from an interface: its id there is its position in
/// [`RuleSet::iface_rules`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub group: String,
    pub dir: Dir,
    pub rule: Rule,
}

impl RuleSet {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn binding(&self, iface: &str) -> Option<&Binding> {
        self.interfaces.iter().find(|b| b.iface == iface)
    }

    /// The network ACL bound to `iface`, if any.
    pub fn iface_acl(&self, iface: &str) -> Option<&acl::Acl> {
        let name = self.binding(iface)?.acl.as_ref()?;
        self.acls.iter().find(|a| &a.name == name)
    }

    /// The rules that apply on `iface`, in file order (groups in file order, then ingress
    /// before egress, then list order). A rule's id on the interface is its index here.
    pub fn iface_rules(&self, iface: &str) -> Vec<RuleRef> {
        let Some(binding) = self.binding(iface) else { return Vec::new() };
        let mut out = Vec::new();
        for g in self.groups.iter().filter(|g| binding.groups.contains(&g.name)) {
            for dir in Dir::BOTH {
                for r in g.rules(dir) {
                    out.push(RuleRef { group: g.name.clone(), dir, rule: r.clone() });
                }
            }
        }
        out
    }

    /// The networks a peer stands for.
    pub fn peer_nets(&self, peer: &Peer) -> Vec<IpNet> {
        match peer {
            Peer::Cidr(n) => vec![*n],
            Peer::Group(g) => self.group(g).map(|g| g.members.clone()).unwrap_or_default(),
            Peer::PrefixList(p) => {
                self.prefix_lists.iter().find(|l| &l.name == p).map(|l| l.entries.clone()).unwrap_or_default()
            }
        }
    }
}

impl RuleSet {
    /// The same rule set with every source location cleared (to compare rule sets read from
    /// different texts).
    pub fn without_locations(&self) -> RuleSet {
        let mut rs = self.clone();
        for g in &mut rs.groups {
            g.loc = Loc::default();
            for r in g.ingress.iter_mut().chain(g.egress.iter_mut()) {
                r.loc = Loc::default();
            }
        }
        for l in &mut rs.prefix_lists {
            l.loc = Loc::default();
        }
        for a in &mut rs.acls {
            a.loc = Loc::default();
            for e in a.ingress.iter_mut().chain(a.egress.iter_mut()) {
                e.loc = Loc::default();
            }
        }
        for b in rs.interfaces.iter_mut().chain(rs.hosts.iter_mut().flat_map(|h| h.interfaces.iter_mut())) {
            b.loc = Loc::default();
        }
        for h in &mut rs.hosts {
            h.loc = Loc::default();
        }
        rs
    }

    /// Fleet: what host `host` enforces: the groups and prefix lists, with its interfaces as
    /// the bindings (none when the file does not name the host).
    pub fn for_host(&self, host: &str) -> RuleSet {
        let interfaces =
            self.hosts.iter().find(|h| h.host == host).map(|h| h.interfaces.clone()).unwrap_or_default();
        RuleSet { interfaces, hosts: Vec::new(), ..self.clone() }
    }
}
