//! How sgctl names what it shows: addresses of keys and summaries, flow endpoints, protocols,
//! the rule a flow or event belongs to. Shared by the CLI, the flow log and replay, so that a
//! flow reads the same everywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sg_common::{
    conntrack::{CtEntry, CtKey},
    packet::FAMILY_IPV4,
    policy::NO_RULE,
};

use crate::{
    rules::{Dir, Proto, acl::AclVerdict, model::Probe},
    state::State,
};

/// An address of a key or summary (IPv4 in the first 4 bytes).
pub fn addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// A tracked flow's initiator and responder, from its normalised key.
pub fn endpoints(k: &CtKey, e: &CtEntry) -> (SocketAddr, SocketAddr) {
    let lo = SocketAddr::new(addr(k.family, &k.addr_lo), k.port_lo);
    let hi = SocketAddr::new(addr(k.family, &k.addr_hi), k.port_hi);
    if e.initiator_lo != 0 { (lo, hi) } else { (hi, lo) }
}

/// A protocol number as sgctl spells it (tcp, udp, icmp, icmpv6, or the number).
pub fn proto_name(p: u8) -> String {
    Proto::Num(p).aws_name()
}

/// Which rule allowed a flow or packet, in the words of `sgctl stats` and `explain`: its
/// group, its index in the group's list (the number `rule remove` takes; the direction is the
/// flow's or packet's own) and its text. Flattened into JSON records as `group`, `index`,
/// `rule`. A rule of a rule set no longer applied has only `rule` ("rule id N of rule set #S").
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleRef {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group: Option<String>,
    /// A network ACL entry instead of a rule (its text, with its rule number, is `rule`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
}

impl RuleRef {
    /// `GROUP DIR #INDEX` (as top and stats show it), or the text of a rule no longer applied.
    pub fn short(&self, dir: &str) -> Option<String> {
        match (&self.group, self.index, &self.acl, &self.rule) {
            (Some(g), Some(i), ..) => Some(format!("{g} {dir} #{i}")),
            (_, _, Some(a), Some(r)) => Some(format!("acl {a}/{dir}: {r}")),
            _ => self.rule.clone(),
        }
    }

    /// `GROUP DIR #INDEX: TEXT`.
    pub fn long(&self, dir: &str) -> Option<String> {
        match (self.short(dir), &self.group, &self.rule) {
            (Some(s), Some(_), Some(r)) => Some(format!("{s}: {r}")),
            (s, ..) => s,
        }
    }
}

/// The network ACL entry that denies packet `p` in `dir` on `iface` under rule set `seq` (low
/// 32 bits): the ACL's name and the entry's text. The datapath does not say which entry it
/// was (that would cost the verifier a third more work on `sg_egress`); an ACL is stateless
/// and first-match, so the reference model finds the same entry from the packet (the
/// differential test holds the two to the same decisions).
pub fn acl_deny_ref(state: Option<&State>, iface: &str, seq: u32, dir: Dir, p: &Probe) -> RuleRef {
    let Some(s) = state.filter(|s| s.seq as u32 == seq) else { return RuleRef::default() };
    let Some(a) = s.ruleset.iface_acl(iface) else { return RuleRef::default() };
    match a.decide(dir, p) {
        AclVerdict::Deny { entry } => RuleRef {
            acl: Some(a.name.clone()),
            rule: a.entries(dir).get(entry).map(|e| e.describe(dir)),
            ..RuleRef::default()
        },
        _ => RuleRef::default(),
    }
}

/// Rule `rule` of rule set `seq` (low 32 bits) on `iface`; empty for `NO_RULE` (a posture
/// allowed it).
pub fn rule_ref(state: Option<&State>, iface: &str, rule: u32, seq: u32) -> RuleRef {
    if rule == NO_RULE {
        return RuleRef::default();
    }
    match state {
        Some(s) if s.seq as u32 == seq => {
            s.ruleset.iface_rules(iface).get(rule as usize).map_or_else(RuleRef::default, |r| RuleRef {
                group: Some(r.group.clone()),
                acl: None,
                index: Some(r.rule.index),
                rule: Some(r.rule.describe(r.dir)),
            })
        }
        _ => RuleRef { rule: Some(format!("rule id {rule} of rule set #{seq}")), ..RuleRef::default() },
    }
}

/// A TCP flow key between 192.0.2.1:80 and 192.0.2.2:40000, for unit tests.
#[cfg(test)]
pub(crate) fn sample_key() -> CtKey {
    CtKey {
        addr_lo: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        addr_hi: [192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        port_lo: 80,
        port_hi: 40000,
        proto: 6,
        family: FAMILY_IPV4,
        ..CtKey::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(58), "icmpv6");
        assert_eq!(proto_name(132), "132");
    }

    #[test]
    fn endpoints_follow_the_initiator() {
        let k = sample_key();
        let e = CtEntry { initiator_lo: 0, ..CtEntry::default() };
        let (from, to) = endpoints(&k, &e);
        assert_eq!((from.to_string(), to.to_string()), ("192.0.2.2:40000".into(), "192.0.2.1:80".into()));
    }
}
