//! The compiler: a pure function from a checked [`RuleSet`] to what the maps of each
//! interface must hold ([`IfacePlan`]). No I/O.
//!
//! For one interface and direction, every rule contributes (peer network, flow-key range,
//! rule id). Each distinct network becomes one prefix entry; its port set is the union of the
//! ranges of every rule whose network contains it (so the longest-prefix match alone decides),
//! painted in rule order so that each key carries the first rule (file order) allowing it,
//! then merged into sorted disjoint segments. Identical port sets are stored once. The entries
//! then become the datapath's prefix tables (`prefix_table`), where the longest prefix decides.

pub mod prefix_table;

use prefix_table::PrefixTables;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use ipnet::IpNet;
use sg_common::lookup::search;
use sg_common::policy::{
    ACL_DENY, LAYER_ACL, LAYER_GROUPS, MAX_ACL_ENTRIES, MAX_RULES, PortSetRef, SEGMENTS_PER_GEN, Segment,
};

pub use crate::key::key_range;
use crate::{
    Dir, RuleRef, RuleSet,
    acl::{Acl, AclAction, AclEntry},
};

/// One prefix: peer network -> port set, for a direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrieEntry {
    pub dir: Dir,
    pub net: IpNet,
    pub set: PortSetRef,
}

/// Everything the maps of one interface hold for one generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfacePlan {
    pub iface: String,
    /// Rule ids: index into this list (file order).
    pub rules: Vec<RuleRef>,
    pub entries: Vec<TrieEntry>,
    /// The entries as the datapath's prefix tables (`prefix_table`).
    pub tables: PrefixTables,
    /// Relative to the generation's base in `SG_SEGMENTS`.
    pub segments: Vec<Segment>,
    /// Conntrack idle timeouts of the interface.
    pub timeouts: sg_common::conntrack::CtTimeouts,
    /// `CONFIG_NO_IMPLICIT_*` bits of the interface.
    pub no_implicit: u32,
    /// Monitor mode from the file (`None`: keep the interface's).
    pub monitor: Option<bool>,
    /// The interface's network ACL, compiled.
    pub acl: Option<AclPlan>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{iface}: {n} rules, the datapath holds at most {max} per interface")]
    TooManyRules { iface: String, n: usize, max: usize },
    #[error("{iface}: its network ACL has {n} entries, the datapath holds at most {max} per interface")]
    TooManyAclEntries { iface: String, n: usize, max: usize },
    #[error(
        "{iface}: the compiled port sets need {n} segments, the datapath holds {max} (many prefixes nested under prefixes with many port ranges multiply)"
    )]
    TooManySegments { iface: String, n: usize, max: usize },
}

/// Compiles every bound interface.
pub fn compile(rs: &RuleSet) -> Result<Vec<IfacePlan>, CompileError> {
    rs.interfaces.iter().map(|b| compile_iface(rs, &b.iface)).collect()
}

/// (rule id, lo, hi) ranges of one network.
type Ranges = Vec<(u32, u32, u32)>;

/// Compiles the policy of one interface.
pub fn compile_iface(rs: &RuleSet, iface: &str) -> Result<IfacePlan, CompileError> {
    let rules = rs.iface_rules(iface);
    if rules.len() > MAX_RULES as usize {
        return Err(CompileError::TooManyRules {
            iface: iface.into(),
            n: rules.len(),
            max: MAX_RULES as usize,
        });
    }
    let mut by_net: [BTreeMap<IpNet, Ranges>; 2] = Default::default();
    for (id, r) in rules.iter().enumerate() {
        let (lo, hi) = key_range(r.rule.proto, r.rule.ports);
        for net in rs.peer_nets(&r.rule.peer) {
            by_net[r.dir as usize].entry(net).or_default().push((id as u32, lo, hi));
        }
    }
    let (entries, mut segments) = port_sets(&by_net);
    let acl = match rs.iface_acl(iface) {
        Some(acl) => Some(compile_acl(iface, acl, &mut segments)?),
        None => None,
    };
    if segments.len() > SEGMENTS_PER_GEN as usize {
        return Err(CompileError::TooManySegments {
            iface: iface.into(),
            n: segments.len(),
            max: SEGMENTS_PER_GEN as usize,
        });
    }
    let groups = entries.iter().map(|e| (LAYER_GROUPS, e.dir, e.net, e.set));
    let acl_prefixes = acl.iter().flat_map(|a| a.prefixes.iter().map(|e| (LAYER_ACL, e.dir, e.net, e.set)));
    let tables = prefix_table::build_layers(groups.chain(acl_prefixes));
    let timeouts = rs.binding(iface).map_or(sg_common::conntrack::CtTimeouts::AWS_DEFAULTS, |b| b.timeouts);
    let no_implicit = rs.binding(iface).map_or(0, |b| b.no_implicit);
    let monitor = rs.binding(iface).and_then(|b| b.monitor);
    Ok(IfacePlan {
        iface: iface.into(),
        rules,
        entries,
        tables,
        segments,
        timeouts,
        no_implicit,
        monitor,
        acl,
    })
}

/// Prefix entries and their port sets from what each id contributes per direction (index
/// `Dir as usize`): (network -> (id, lo, hi) flow-key ranges). A network's port set is the
/// union of the ranges of every network containing it, each key labelled with the lowest id
/// covering it; identical port sets are stored once.
fn port_sets(by_net: &[BTreeMap<IpNet, Ranges>; 2]) -> (Vec<TrieEntry>, Vec<Segment>) {
    let mut entries = Vec::new();
    let mut segments: Vec<Segment> = Vec::new();
    let mut interned: HashMap<Vec<Segment>, PortSetRef> = HashMap::new();
    for dir in Dir::BOTH {
        let by_net = &by_net[dir as usize];
        for net in by_net.keys() {
            let mut ranges: Ranges = Vec::new();
            for len in 0..=net.prefix_len() {
                let anc = IpNet::new(net.addr(), len).expect("valid length").trunc();
                if let Some(r) = by_net.get(&anc) {
                    ranges.extend(r);
                }
            }
            let set = paint(&mut ranges);
            let set_ref = match interned.get(&set) {
                Some(r) => *r,
                None => {
                    let r = PortSetRef { start: segments.len() as u32, count: set.len() as u32 };
                    segments.extend(&set);
                    interned.insert(set, r);
                    r
                }
            };
            entries.push(TrieEntry { dir, net: *net, set: set_ref });
        }
    }
    (entries, segments)
}

/// A network ACL compiled for one interface, as the groups are: prefix entries (in the ACL's
/// layer of the interface's prefix tables) whose port sets label each flow key with the first
/// entry (lowest rule number) matching it, so that a packet pays one lookup whatever the
/// number of entries. A key in no segment (or an address under no prefix) meets the implicit
/// final deny. The segments follow the groups' in [`IfacePlan::segments`]; a segment's `rule`
/// is the entry id, with `ACL_DENY` for a deny entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclPlan {
    pub acl: String,
    /// Entry ids: index into this list (`Acl::entry_id`: ingress by rule number, then egress).
    pub entries: Vec<(Dir, AclEntry)>,
    pub prefixes: Vec<TrieEntry>,
}

/// Compiles the network ACL of `iface`, appending its segments to `segments`.
fn compile_acl(iface: &str, acl: &Acl, segments: &mut Vec<Segment>) -> Result<AclPlan, CompileError> {
    let mut entries = Vec::new();
    let mut by_net: [BTreeMap<IpNet, Ranges>; 2] = Default::default();
    for (dir, e) in acl.by_id() {
        let id = entries.len() as u32;
        let (lo, hi) = key_range(e.proto, e.ports);
        by_net[dir as usize].entry(e.cidr).or_default().push((id, lo, hi));
        entries.push((dir, e.clone()));
    }
    if entries.len() > MAX_ACL_ENTRIES as usize {
        return Err(CompileError::TooManyAclEntries {
            iface: iface.into(),
            n: entries.len(),
            max: MAX_ACL_ENTRIES as usize,
        });
    }
    let (mut prefixes, acl_segments) = port_sets(&by_net);
    let base = segments.len() as u32;
    segments.extend(acl_segments.into_iter().map(|mut s| {
        if entries[s.rule as usize].1.action == AclAction::Deny {
            s.rule |= ACL_DENY;
        }
        s
    }));
    for p in &mut prefixes {
        p.set.start += base;
    }
    Ok(AclPlan { acl: acl.name.clone(), entries, prefixes })
}

/// How the datapath's reading of a plan decides a packet at the ACL: the deciding entry's id
/// and whether it allows, or `None` for the implicit final deny (or a plan without an ACL).
pub fn interpret_acl(plan: &IfacePlan, dir: Dir, peer: std::net::IpAddr, key: u32) -> Option<(u32, bool)> {
    plan.acl.as_ref()?;
    let set = plan.tables.lookup_in(LAYER_ACL, dir, peer).ok()??;
    let rule = search(&plan.segments[..], set, key).ok()??;
    Some((rule & !ACL_DENY, rule & ACL_DENY == 0))
}

/// Decides a flow key the way the datapath reads a plan: the prefix tables' walk for `peer`
/// in `dir` (`PrefixTables::lookup`), then the datapath's binary search of that port set's
/// segments (`sg_common::lookup::search`). Returns the rule id.
pub fn interpret(plan: &IfacePlan, dir: Dir, peer: std::net::IpAddr, key: u32) -> Option<u32> {
    let set = plan.tables.lookup(dir, peer).ok()??;
    search(&plan.segments[..], set, key).ok()?
}

/// Sorted disjoint segments of the union of `ranges`, each key labelled with the lowest rule
/// id covering it; neighbours with the same rule are merged. A sweep over the range
/// boundaries with a min-heap of the active rules: O(k log k) for k ranges.
fn paint(ranges: &mut Ranges) -> Vec<Segment> {
    ranges.sort_unstable_by_key(|&(rule, lo, hi)| (lo, rule, hi));
    ranges.dedup();
    let mut points: Vec<u64> =
        ranges.iter().flat_map(|&(_, lo, hi)| [u64::from(lo), u64::from(hi) + 1]).collect();
    points.sort_unstable();
    points.dedup();
    let mut active: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::new();
    let mut next = 0;
    let mut merged: Vec<Segment> = Vec::new();
    for w in points.windows(2) {
        let (start, end) = (w[0], w[1] - 1);
        while next < ranges.len() && u64::from(ranges[next].1) <= start {
            let (rule, _, hi) = ranges[next];
            active.push(Reverse((rule, hi)));
            next += 1;
        }
        while active.peek().is_some_and(|Reverse((_, hi))| u64::from(*hi) < start) {
            active.pop();
        }
        let Some(Reverse((rule, _))) = active.peek() else { continue };
        match merged.last_mut() {
            Some(last) if last.rule == *rule && u64::from(last.hi) + 1 == start => last.hi = end as u32,
            _ => merged.push(seg(start as u32, end as u32, *rule)),
        }
    }
    merged
}

fn seg(lo: u32, hi: u32, rule: u32) -> Segment {
    Segment { lo, hi, rule, _pad: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AwsContext, Format, parse_str};
    use sg_common::policy::flow_key;

    fn rs(text: &str) -> RuleSet {
        parse_str("t.toml", text, Format::Toml, &AwsContext::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn painting_keeps_the_first_rule_and_merges_neighbours() {
        let mut r = vec![(2, 10, 20), (0, 15, 30), (1, 0, 100), (3, 200, 300)];
        let s = paint(&mut r);
        let got: Vec<(u32, u32, u32)> = s.iter().map(|s| (s.lo, s.hi, s.rule)).collect();
        assert_eq!(got, vec![(0, 14, 1), (15, 30, 0), (31, 100, 1), (200, 300, 3)]);
    }

    #[test]
    fn painting_handles_the_whole_key_space() {
        let mut r = vec![(5, 0, 0x00ff_ffff), (1, 0x00ff_ffff, 0x00ff_ffff), (0, 0, 0)];
        let s = paint(&mut r);
        let got: Vec<(u32, u32, u32)> = s.iter().map(|s| (s.lo, s.hi, s.rule)).collect();
        assert_eq!(got, vec![(0, 0, 0), (1, 0x00ff_fffe, 5), (0x00ff_ffff, 0x00ff_ffff, 1)]);
    }

    #[test]
    fn nested_prefixes_inherit_covering_rules() {
        let plan = compile_iface(
            &rs(r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "22", from = "198.51.100.0/24" },
  { proto = "tcp", ports = "80", from = "198.51.100.128/25" },
]
egress = []
[interfaces.eth0]
groups = ["g"]
"#),
            "eth0",
        )
        .unwrap();
        assert_eq!(plan.rules.len(), 2);
        let set_of = |net: &str| {
            let e = plan.entries.iter().find(|e| e.net == net.parse::<IpNet>().unwrap()).unwrap();
            plan.segments[e.set.start as usize..(e.set.start + e.set.count) as usize].to_vec()
        };
        let narrow: Vec<(u32, u32)> = set_of("198.51.100.128/25").iter().map(|s| (s.lo, s.rule)).collect();
        assert_eq!(narrow, vec![(flow_key(6, 22), 0), (flow_key(6, 80), 1)]);
        let wide: Vec<(u32, u32)> = set_of("198.51.100.0/24").iter().map(|s| (s.lo, s.rule)).collect();
        assert_eq!(wide, vec![(flow_key(6, 22), 0)]);
    }

    #[test]
    fn identical_port_sets_are_stored_once() {
        let members: Vec<String> = (0..50).map(|i| format!("\"198.51.100.{i}\"")).collect();
        let text = format!(
            "[groups.app]\nmembers = [{}]\negress = []\n[groups.g]\negress = []\ningress = [{{ proto = \"tcp\", ports = \"5432\", from_group = \"app\" }}]\n[interfaces.eth0]\ngroups = [\"g\"]\n",
            members.join(", ")
        );
        let plan = compile_iface(&rs(&text), "eth0").unwrap();
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.entries.len(), 50, "one prefix entry per member");
        assert_eq!(plan.segments.len(), 1, "one shared port set");
        assert!(plan.entries.iter().all(|e| e.set == plan.entries[0].set));
    }

    #[test]
    fn default_egress_is_allow_all_both_families() {
        let plan = compile_iface(&rs("[groups.g]\n[interfaces.eth0]\ngroups = [\"g\"]\n"), "eth0").unwrap();
        let egress: Vec<String> =
            plan.entries.iter().filter(|e| e.dir == Dir::Egress).map(|e| e.net.to_string()).collect();
        assert_eq!(egress, vec!["0.0.0.0/0", "::/0"]);
        assert!(plan.entries.iter().all(|e| e.dir == Dir::Egress), "no ingress rule: no ingress prefix");
        let s = &plan.segments[plan.entries[0].set.start as usize];
        assert_eq!((s.lo, s.hi), (0, 0x00ff_ffff));
    }

    #[test]
    fn capacity_errors_are_reported_not_truncated() {
        use std::fmt::Write as _;
        let half = MAX_RULES / 2 + 1;
        let mut text = format!("[quotas]\nrules_per_group = {MAX_RULES}\n");
        for g in ["a", "b"] {
            let _ = write!(text, "[groups.{g}]\negress = []\ningress = [\n");
            for i in 0..half {
                let _ = writeln!(text, "  {{ proto = \"udp\", ports = \"{i}\", from = \"0.0.0.0/0\" }},");
            }
            text.push_str("]\n");
        }
        text.push_str("[interfaces.eth0]\ngroups = [\"a\", \"b\"]\n");
        let err = compile_iface(&rs(&text), "eth0").unwrap_err();
        assert!(matches!(err, CompileError::TooManyRules { n, .. } if n == 2 * half as usize), "{err}");
    }
}
