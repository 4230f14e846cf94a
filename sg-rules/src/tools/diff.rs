//! What an apply changes, for `sgctl apply` (and `--dry-run`): interfaces attached,
//! detached or re-bound, groups added or removed, rules added or removed per group, network
//! ACLs added, removed or with entries changed, and ACL bindings.

use std::collections::BTreeMap;

use crate::{Dir, Group, Rule, RuleSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    /// Human-readable lines: `+` added, `-` removed, `~` changed.
    pub lines: Vec<String>,
    /// Interfaces in the new set and not in the old one.
    pub attach: Vec<String>,
    /// Interfaces in the old set and not in the new one.
    pub detach: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

type Identity = (crate::Proto, crate::Ports, crate::Peer, Option<String>);

fn counts(rules: &[Rule]) -> BTreeMap<Identity, usize> {
    let mut m = BTreeMap::new();
    for r in rules {
        *m.entry(r.identity()).or_insert(0) += 1;
    }
    m
}

fn rule_lines(name: &str, old: &Group, new: &Group, out: &mut Vec<String>) {
    for dir in Dir::BOTH {
        let (mut o, mut n) = (counts(old.rules(dir)), counts(new.rules(dir)));
        // Each rule added (removed) as many times as it appears more often in the new (old) set.
        for r in new.rules(dir) {
            let id = r.identity();
            let have = o.get_mut(&id);
            match have {
                Some(c) if *c > 0 => *c -= 1,
                _ => out.push(format!("group {name}: + {} {}", dir.as_str(), r.describe(dir))),
            }
        }
        for r in old.rules(dir) {
            match n.get_mut(&r.identity()) {
                Some(c) if *c > 0 => *c -= 1,
                _ => out.push(format!("group {name}: - {} {}", dir.as_str(), r.describe(dir))),
            }
        }
    }
    if old.members != new.members {
        out.push(format!(
            "group {name}: ~ members ({} -> {} addresses)",
            old.members.len(),
            new.members.len()
        ));
    }
}

/// Differences from `old` (the applied set, if any) to `new`.
pub fn diff(old: Option<&RuleSet>, new: &RuleSet) -> Diff {
    let empty = RuleSet::default();
    let old = old.unwrap_or(&empty);
    let mut d = Diff::default();
    for b in &new.interfaces {
        match old.binding(&b.iface) {
            None => {
                d.lines.push(format!("+ interface {} (groups {})", b.iface, b.groups.join(", ")));
                d.attach.push(b.iface.clone());
            }
            Some(ob) if ob.groups != b.groups => d.lines.push(format!(
                "~ interface {}: groups {} -> {}",
                b.iface,
                ob.groups.join(", "),
                b.groups.join(", ")
            )),
            Some(_) => {}
        }
        if let Some(ob) = old.binding(&b.iface)
            && ob.acl != b.acl
        {
            let name = |a: &Option<String>| a.clone().unwrap_or_else(|| "none".into());
            d.lines.push(format!(
                "~ interface {}: network ACL {} -> {}",
                b.iface,
                name(&ob.acl),
                name(&b.acl)
            ));
        }
    }
    for b in &old.interfaces {
        if new.binding(&b.iface).is_none() {
            d.lines.push(format!("- interface {}", b.iface));
            d.detach.push(b.iface.clone());
        }
    }
    for g in &new.groups {
        match old.group(&g.name) {
            None => d.lines.push(format!(
                "+ group {} ({} ingress, {} egress rules)",
                g.name,
                g.ingress.len(),
                g.egress.len()
            )),
            Some(og) => rule_lines(&g.name, og, g, &mut d.lines),
        }
    }
    for g in &old.groups {
        if new.group(&g.name).is_none() {
            d.lines.push(format!("- group {}", g.name));
        }
    }
    acl_lines(old, new, &mut d.lines);
    d
}

/// Network ACLs added, removed, or with entries added or removed (an entry is its number and
/// everything it matches; a renumbered entry is one removed and one added).
fn acl_lines(old: &RuleSet, new: &RuleSet, out: &mut Vec<String>) {
    use crate::acl::AclEntry;
    let same = |a: &AclEntry, b: &AclEntry| {
        (a.number, a.action, a.proto, a.ports, a.cidr) == (b.number, b.action, b.proto, b.ports, b.cidr)
    };
    for a in &new.acls {
        let Some(o) = old.acls.iter().find(|o| o.name == a.name) else {
            out.push(format!(
                "+ network ACL {} ({} ingress, {} egress entries)",
                a.name,
                a.ingress.len(),
                a.egress.len()
            ));
            continue;
        };
        for dir in Dir::BOTH {
            for e in a.entries(dir).iter().filter(|e| !o.entries(dir).iter().any(|x| same(x, e))) {
                out.push(format!("network ACL {}: + {} {}", a.name, dir.as_str(), e.describe(dir)));
            }
            for e in o.entries(dir).iter().filter(|e| !a.entries(dir).iter().any(|x| same(x, e))) {
                out.push(format!("network ACL {}: - {} {}", a.name, dir.as_str(), e.describe(dir)));
            }
        }
    }
    for o in old.acls.iter().filter(|o| !new.acls.iter().any(|a| a.name == o.name)) {
        out.push(format!("- network ACL {}", o.name));
    }
}
