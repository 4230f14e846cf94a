//! The two policy layers whose items count what they decide: the security groups' rules
//! (`SG_RULE_HITS`) and the network ACL's entries (`SG_ACL_HITS`). Their bookkeeping is written
//! once for both: the items of an interface and their identities across applies (here), the
//! live counters and their zeroing (`maps::InstanceMaps::hits`, `zero_hits`), the bases carried
//! over by each apply (`State::bases`), the totals (`hits::totals`).

use crate::rules::RuleSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Security-group rules, by rule id (`RuleSet::iface_rules`).
    Rules,
    /// Network ACL entries, by entry id (`Acl::by_id`).
    Acl,
}

impl Layer {
    pub const ALL: [Layer; 2] = [Layer::Rules, Layer::Acl];

    /// What its items are called in messages.
    pub fn item(self) -> &'static str {
        match self {
            Layer::Rules => "rule",
            Layer::Acl => "network ACL entry",
        }
    }

    /// How many items `iface` has in this layer under `rs`.
    pub fn len(self, rs: &RuleSet, iface: &str) -> usize {
        match self {
            Layer::Rules => rs.iface_rules(iface).len(),
            Layer::Acl => rs.iface_acl(iface).map_or(0, |a| a.by_id().count()),
        }
    }

    /// The identity of each item of `iface` (id order) that an apply keeps its count for: a
    /// rule's group, direction, protocol, ports, peer and description; an entry's ACL,
    /// direction, number, action, protocol, ports and CIDR.
    pub fn identities(self, rs: &RuleSet, iface: &str) -> Vec<String> {
        match self {
            Layer::Rules => rs
                .iface_rules(iface)
                .iter()
                .map(|r| format!("{}/{:?}/{:?}", r.group, r.dir, r.rule.identity()))
                .collect(),
            Layer::Acl => rs.iface_acl(iface).map_or_else(Vec::new, |a| {
                a.by_id().map(|(d, e)| format!("{}/{d:?}/{:?}", a.name, e.identity())).collect()
            }),
        }
    }
}
