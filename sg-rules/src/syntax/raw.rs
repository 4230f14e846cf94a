//! The located, unchecked form both front ends (TOML, AWS JSON) produce. Values are kept as
//! written (strings, integers) so that validation can say precisely what is wrong and where.

use crate::Loc;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    pub v: T,
    pub loc: Loc,
}

impl<T> At<T> {
    pub fn new(v: T, loc: Loc) -> Self {
        At { v, loc }
    }
}

/// A protocol as written: a name or a number (AWS writes numbers as strings too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoText {
    Name(String),
    Number(i64),
}

/// Ports as written: `80`, `"80"`, `"1024-65535"`, or AWS's FromPort/ToPort pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortsText {
    Text(String),
    Number(i64),
    /// AWS FromPort/ToPort (-1 = all).
    Pair(i64, i64),
}

/// A peer as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawPeer {
    Cidr(String),
    Group(String),
    PrefixList(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRule {
    pub loc: Loc,
    pub proto: Option<At<ProtoText>>,
    pub ports: Option<At<PortsText>>,
    pub icmp_type: Option<At<i64>>,
    pub icmp_code: Option<At<i64>>,
    /// Peers of the rule's direction (`from*` for ingress, `to*` for egress).
    pub peers: Vec<At<RawPeer>>,
    /// Peer keys of the wrong direction (`to` in ingress...), to report.
    pub wrong_direction: Vec<At<String>>,
    /// How many different peer kinds the line used (exactly one is allowed).
    pub peer_kinds: Vec<At<&'static str>>,
    pub description: Option<At<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawGroup {
    pub name: At<String>,
    pub description: Option<At<String>>,
    pub aws_id: Option<At<String>>,
    pub aws_name: Option<At<String>>,
    pub aws_vpc: Option<At<String>>,
    /// Addresses or CIDRs.
    pub members: Vec<At<String>>,
    pub member_groups: Vec<At<String>>,
    pub ingress: Vec<RawRule>,
    /// `None`: no egress list given (AWS default allow-all egress applies).
    pub egress: Option<Vec<RawRule>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPrefixList {
    pub name: At<String>,
    pub entries: Vec<At<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBinding {
    pub iface: At<String>,
    pub groups: Vec<At<String>>,
    /// Conntrack timeouts given for the interface: (field name, seconds).
    pub timeouts: Vec<(&'static str, At<i64>)>,
    /// `CONFIG_NO_IMPLICIT_*` bits of the allowances switched off.
    pub no_implicit: u32,
    /// Monitor mode on or off; `None`: not given (the interface keeps its mode).
    pub monitor: Option<bool>,
    /// The network ACL bound to the interface (`acl = "NAME"`).
    pub acl: Option<At<String>>,
}

/// One entry of a network ACL as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAclEntry {
    pub loc: Loc,
    /// The rule number (`rule`, AWS RuleNumber).
    pub number: Option<At<i64>>,
    /// `allow` or `deny` (AWS RuleAction).
    pub action: Option<At<String>>,
    /// The entry's CIDR (AWS CidrBlock or Ipv6CidrBlock).
    pub cidr: Option<At<String>>,
    /// Protocol, ports and ICMP type/code as in a security-group rule (`peers` unused).
    pub matches: RawRule,
}

/// A network ACL as written (`[acls.NAME]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAcl {
    pub name: At<String>,
    pub aws_id: Option<At<String>>,
    pub aws_vpc: Option<At<String>>,
    pub ingress: Vec<RawAclEntry>,
    pub egress: Vec<RawAclEntry>,
}

/// Fleet: one host's `[hosts.NAME.interfaces.*]` tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHost {
    pub name: At<String>,
    pub interfaces: Vec<RawBinding>,
    /// `addresses`: the host's pinned addresses (its registrations may add only these).
    pub addresses: Vec<At<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawQuotas {
    pub rules_per_group: Option<At<i64>>,
    pub groups_per_interface: Option<At<i64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawRuleSet {
    pub file: String,
    pub quotas: Option<RawQuotas>,
    /// In file order.
    pub groups: Vec<RawGroup>,
    pub prefix_lists: Vec<RawPrefixList>,
    /// Network ACLs, in file order.
    pub acls: Vec<RawAcl>,
    pub interfaces: Vec<RawBinding>,
    /// Fleet: the interfaces of each host (TOML only).
    pub hosts: Vec<RawHost>,
    /// Fleet: `[fleet] member_ranges`, where registered member addresses must lie.
    pub member_ranges: Vec<At<String>>,
    /// What a front end accepted but the operator should know (AWS JSON: host bits set, stale
    /// references, groups with no known members). Never rejects the file.
    pub warnings: Vec<crate::Diagnostic>,
}
