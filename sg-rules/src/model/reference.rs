//! The reference semantics of security groups, written for clarity, not speed: the datapath
//! must agree with it on every packet (differential tests), and `sgctl explain` prints it.
//!
//! A packet is allowed in a direction when some rule of that direction, in a group bound to
//! the interface, covers its peer address (source for ingress, destination for egress) and
//! its protocol/port or ICMP type/code. The rule reported is the first such rule in file
//! order. A non-first fragment carries no ports: the model (which tracks no state) drops it (`fragment_no_first`); the datapath passes it only after an accepted first fragment of the same datagram.
//!
//! A network ACL bound to the interface ([`crate::acl`]) is a second, stateless layer: at
//! ingress it decides before the groups, at egress after them; the packet passes only when
//! both allow it (`acl_deny`, `acl_default` otherwise).

use std::net::IpAddr;

use sg_common::Reason;

pub use crate::key::{Probe, key_low16};
use crate::{Dir, RuleRef, RuleSet, acl::AclVerdict, key::key_range};

/// The model's decision: a reason (`rule_allow`, `no_rule`, `fragment_no_first`, `acl_deny`,
/// `acl_default`), the id on the interface (index into `RuleSet::iface_rules`) of the
/// security-group rule that allows the packet (also when the ACL then drops it), and the ACL's
/// verdict when the interface has an ACL and it was consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    pub rule: Option<usize>,
    pub acl: Option<AclVerdict>,
}

/// Does `r` allow `p` in `dir`?
pub fn rule_allows(rs: &RuleSet, r: &RuleRef, dir: Dir, p: &Probe) -> bool {
    if r.dir != dir {
        return false;
    }
    let peer = match dir {
        Dir::Ingress => p.src,
        Dir::Egress => p.dst,
    };
    let key = sg_common::policy::flow_key(p.proto, key_low16(p));
    let (lo, hi) = key_range(r.rule.proto, r.rule.ports);
    (lo..=hi).contains(&key) && rs.peer_nets(&r.rule.peer).iter().any(|n| n.contains(&peer))
}

/// Evaluates `p` arriving (ingress) or leaving (egress) on `iface`: the groups and, if the
/// interface has one, its network ACL (first at ingress, after the groups at egress: a packet
/// both layers drop is the ACL's at ingress and the groups' at egress).
pub fn evaluate(rs: &RuleSet, iface: &str, dir: Dir, p: &Probe) -> Decision {
    if p.later_fragment {
        return Decision { reason: Reason::FragmentNoFirst, rule: None, acl: None };
    }
    let rules = rs.iface_rules(iface);
    let rule = rules.iter().position(|r| rule_allows(rs, r, dir, p));
    let groups = if rule.is_some() { Reason::RuleAllow } else { Reason::NoRule };
    let Some(acl) = rs.iface_acl(iface) else { return Decision { reason: groups, rule, acl: None } };
    let verdict = acl.decide(dir, p);
    let reason = match (dir, verdict.drop_reason()) {
        (_, None) => groups,
        (Dir::Ingress, Some(r)) => r,
        (Dir::Egress, Some(_)) if rule.is_none() => return Decision { reason: groups, rule, acl: None },
        (Dir::Egress, Some(r)) => r,
    };
    Decision { reason, rule, acl: Some(verdict) }
}

/// Evaluates `p`, a packet of no tracked flow, on an interface whose own addresses are
/// `local`: one arriving with one of them as its source is spoofed or looped and dropped as
/// `src_is_local` before the ACL and the groups are asked (a later fragment is still decided by
/// its datagram's first).
pub fn evaluate_untracked(rs: &RuleSet, iface: &str, local: &[IpAddr], dir: Dir, p: &Probe) -> Decision {
    if dir == Dir::Ingress && !p.later_fragment && local.contains(&p.src) {
        return Decision { reason: Reason::SrcIsLocal, rule: None, acl: None };
    }
    evaluate(rs, iface, dir, p)
}

/// Evaluates `p`, a packet of a flow conntrack tracks, which conntrack decides with `tracked`
/// (`ct_established`, `ct_reply`): the groups are not asked, the (stateless) network ACL of
/// the interface is, on every packet.
pub fn evaluate_tracked(rs: &RuleSet, iface: &str, dir: Dir, p: &Probe, tracked: Reason) -> Decision {
    let acl = rs.iface_acl(iface).map(|a| a.decide(dir, p));
    let reason = acl.and_then(AclVerdict::drop_reason).unwrap_or(tracked);
    Decision { reason, rule: None, acl }
}
