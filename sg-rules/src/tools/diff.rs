//! What an apply changes, for `sgctl apply` (and `--dry-run`): interfaces attached,
//! detached or re-bound, groups added or removed, rules added or removed per group, network
//! ACLs added, removed or with entries changed, and ACL bindings.

use std::collections::BTreeMap;

use crate::{
    Dir, Group, Rule, RuleSet,
    acl::{Acl, AclEntry},
};

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

/// A table of the policy as a diff sees it: a security group (rules) or a network ACL
/// (entries), named, with entries per direction that an identity compares. One algorithm diffs
/// both layers.
trait Table {
    type Entry;
    type Id: Ord;
    /// "group", "network ACL".
    const KIND: &'static str;
    /// "rules", "entries".
    const ENTRIES: &'static str;
    fn name(&self) -> &str;
    fn entries(&self, dir: Dir) -> &[Self::Entry];
    fn id(e: &Self::Entry) -> Self::Id;
    fn describe(e: &Self::Entry, dir: Dir) -> String;
    /// Lines for what changed beside the entries.
    fn more_lines(_old: &Self, _new: &Self, _out: &mut Vec<String>) {}
}

impl Table for Group {
    type Entry = Rule;
    type Id = (crate::Proto, crate::Ports, crate::Peer, Option<String>);
    const KIND: &'static str = "group";
    const ENTRIES: &'static str = "rules";
    fn name(&self) -> &str {
        &self.name
    }
    fn entries(&self, dir: Dir) -> &[Rule] {
        self.rules(dir)
    }
    fn id(r: &Rule) -> Self::Id {
        r.identity()
    }
    fn describe(r: &Rule, dir: Dir) -> String {
        r.describe(dir)
    }
    fn more_lines(old: &Group, new: &Group, out: &mut Vec<String>) {
        if old.members != new.members {
            out.push(format!(
                "group {}: ~ members ({} -> {} addresses)",
                new.name,
                old.members.len(),
                new.members.len()
            ));
        }
    }
}

/// An entry is its number and everything it matches: a renumbered entry is one removed and
/// one added.
impl Table for Acl {
    type Entry = AclEntry;
    type Id = (u16, crate::acl::AclAction, crate::Proto, crate::Ports, ipnet::IpNet);
    const KIND: &'static str = "network ACL";
    const ENTRIES: &'static str = "entries";
    fn name(&self) -> &str {
        &self.name
    }
    fn entries(&self, dir: Dir) -> &[AclEntry] {
        Acl::entries(self, dir)
    }
    fn id(e: &AclEntry) -> Self::Id {
        (e.number, e.action, e.proto, e.ports, e.cidr)
    }
    fn describe(e: &AclEntry, dir: Dir) -> String {
        e.describe(dir)
    }
}

/// Tables added and removed, and per table kept, each entry added (removed) as many times as
/// it appears more often in the new (old) table.
fn table_lines<T: Table>(old: &[T], new: &[T], out: &mut Vec<String>) {
    for t in new {
        let Some(o) = old.iter().find(|o| o.name() == t.name()) else {
            out.push(format!(
                "+ {} {} ({} ingress, {} egress {})",
                T::KIND,
                t.name(),
                t.entries(Dir::Ingress).len(),
                t.entries(Dir::Egress).len(),
                T::ENTRIES
            ));
            continue;
        };
        for dir in Dir::BOTH {
            let counts = |es: &[T::Entry]| {
                let mut m: BTreeMap<T::Id, usize> = BTreeMap::new();
                for e in es {
                    *m.entry(T::id(e)).or_insert(0) += 1;
                }
                m
            };
            let (mut before, mut after) = (counts(o.entries(dir)), counts(t.entries(dir)));
            for (sign, list, other) in [('+', t.entries(dir), &mut before), ('-', o.entries(dir), &mut after)]
            {
                for e in list {
                    match other.get_mut(&T::id(e)) {
                        Some(c) if *c > 0 => *c -= 1,
                        _ => out.push(format!(
                            "{} {}: {sign} {} {}",
                            T::KIND,
                            t.name(),
                            dir.as_str(),
                            T::describe(e, dir)
                        )),
                    }
                }
            }
        }
        T::more_lines(o, t, out);
    }
    for o in old.iter().filter(|o| !new.iter().any(|t| t.name() == o.name())) {
        out.push(format!("- {} {}", T::KIND, o.name()));
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
    table_lines(&old.groups, &new.groups, &mut d.lines);
    table_lines(&old.acls, &new.acls, &mut d.lines);
    d
}
