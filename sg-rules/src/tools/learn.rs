//! Least privilege, learned (`sgctl learn`): rules proposed from the flows a host really had.
//!
//! What is observed ([`Observations`]) is one entry per distinct (interface, direction,
//! protocol, service, peer): the service is the destination port of a TCP or UDP flow (the
//! port the flow was opened to, never the ephemeral one) or an ICMP echo's type and code, the
//! peer the remote address. An entry counts the flows that started with it and when it was
//! first and last seen: the daemon adds one per new tracked flow (the datapath's accept
//! event), never per packet. Replies (conntrack), RELATED ICMP errors and the implicit
//! allowances (NDP, DHCP) start no flow and are never observed. The table has a capacity:
//! when it is full, a new entry is not added and is counted in `overflow` (the proposal then
//! says it is incomplete); entries already there keep counting.
//!
//! [`propose`] turns the observations of a window into rules, per group bound to each
//! observed interface (the group whose rule allowed the flow, by the reference model; a flow
//! no rule allows goes to the interface's first group):
//! - the services of one protocol with the same peers become one rule; ports are merged into
//!   a range only where the observed ports are dense (a run whose gaps are at most
//!   [`MAX_GAP`] and which covers at least half of its span, 3 ports or more), else listed;
//! - peers are named as precisely as the policy can: a group whose members cover them all,
//!   else a prefix list whose entries cover them all, else groups whose members together
//!   cover them (at most `max_cidrs`, chosen greedily), else addresses aggregated into at most
//!   `max_cidrs` prefixes per rule (the two closest neighbours merged first);
//! - ingress always; egress only with `tighten_egress` (otherwise a group's egress is kept);
//! - every existing rule of a proposed group that allowed no observed flow is proposed for
//!   removal, and every proposed rule carries its evidence (flows, first and last seen,
//!   sample peers).
//!
//! [`propose_fleet`] does the same for a fleet: what every host observed ([`summary`]: each
//! daemon publishes a bounded one), each observation on the interface of the host that made it,
//! so that a group's rules are proposed from the traffic of all its hosts, and peers that are a
//! group's registered members are named by the group (`from_group`).
//!
//! [`summary`]: Observations::summary

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    Dir, Group, Loc, Peer, Ports, Proto, Rule, RuleSet, TCP, UDP,
    model::{Probe, evaluate},
};

/// The largest gap between two observed ports of one range.
pub const MAX_GAP: u16 = 8;

/// What one observation is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObsKey {
    pub iface: String,
    #[serde(rename = "direction", with = "direction")]
    pub dir: Dir,
    pub proto: u8,
    /// TCP/UDP: the destination port; ICMP echo: type << 8 | code; else 0.
    pub service: u16,
    pub peer: IpAddr,
}

impl ObsKey {
    /// The flow start it stands for, as the reference model takes it: the peer as source
    /// (ingress) or destination (egress), the other end `local`.
    pub fn probe(&self, local: IpAddr) -> Probe {
        let (src, dst) = match self.dir {
            Dir::Ingress => (self.peer, local),
            Dir::Egress => (local, self.peer),
        };
        Probe {
            src,
            dst,
            proto: self.proto,
            dport: self.service,
            icmp_type: (self.service >> 8) as u8,
            icmp_code: self.service as u8,
            later_fragment: false,
        }
    }

    /// An address of the peer's family other than the peer, for the host's end of a probe
    /// (the policy reads only the peer).
    pub fn local_end(&self) -> IpAddr {
        match self.peer {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() ^ 1)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() ^ 1)),
        }
    }
}

/// A direction as sgctl's JSON says it everywhere: `direction`, `ingress` or `egress`.
mod direction {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Dir;

    #[expect(clippy::trivially_copy_pass_by_ref, reason = "the signature serde's `with` calls")]
    pub fn serialize<S: Serializer>(d: &Dir, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Dir, D::Error> {
        match String::deserialize(d)?.as_str() {
            "ingress" => Ok(Dir::Ingress),
            "egress" => Ok(Dir::Egress),
            other => Err(serde::de::Error::custom(format!("direction '{other}' (ingress or egress)"))),
        }
    }
}

/// The evidence of one observation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Flows that started with it.
    pub flows: u64,
    /// Seconds since the Unix epoch.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One persisted entry (JSON has no struct keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    key: ObsKey,
    #[serde(flatten)]
    evidence: Evidence,
}

/// The learned table, bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observations {
    pub capacity: usize,
    pub entries: BTreeMap<ObsKey, Evidence>,
    /// New entries refused because the table was full.
    pub overflow: u64,
    /// Flow events the datapath suppressed while learning (its per-CPU limit, a full ring):
    /// flows that may have started without being observed.
    pub missed_events: u64,
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    capacity: usize,
    overflow: u64,
    #[serde(default)]
    missed_events: u64,
    entries: Vec<Entry>,
}

impl Observations {
    pub fn new(capacity: usize) -> Self {
        Observations { capacity, entries: BTreeMap::new(), overflow: 0, missed_events: 0 }
    }

    /// One new flow at `now` (Unix seconds).
    pub fn record(&mut self, key: ObsKey, now: u64) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.flows += 1;
            e.last_seen = e.last_seen.max(now);
            return;
        }
        if self.entries.len() >= self.capacity {
            self.overflow += 1;
            return;
        }
        self.entries.insert(key, Evidence { flows: 1, first_seen: now, last_seen: now });
    }

    /// At most `max` entries: those with the most flows (then the most recent); the entries
    /// left out are counted in `overflow` (a fleet host's published summary, whose size the
    /// store bounds).
    pub fn summary(&self, max: usize) -> Observations {
        if self.entries.len() <= max {
            return self.clone();
        }
        let mut v: Vec<(&ObsKey, &Evidence)> = self.entries.iter().collect();
        v.sort_by(|a, b| {
            b.1.flows.cmp(&a.1.flows).then(b.1.last_seen.cmp(&a.1.last_seen)).then(a.0.cmp(b.0))
        });
        let left = (v.len() - max) as u64;
        Observations {
            capacity: self.capacity,
            entries: v.into_iter().take(max).map(|(k, e)| (k.clone(), *e)).collect(),
            overflow: self.overflow + left,
            missed_events: self.missed_events,
        }
    }

    /// [`Observations::to_json`] on one line (what a fleet host publishes).
    pub fn to_json_compact(&self) -> String {
        serde_json::to_string(&self.persisted()).expect("observations serialize")
    }

    fn persisted(&self) -> Persisted {
        Persisted {
            capacity: self.capacity,
            overflow: self.overflow,
            missed_events: self.missed_events,
            entries: self.entries.iter().map(|(k, e)| Entry { key: k.clone(), evidence: *e }).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.persisted()).expect("observations serialize")
    }

    /// Reads what [`Observations::to_json`] wrote; `capacity` replaces the file's (the
    /// operator may change it; entries beyond it are kept, new ones refused).
    pub fn from_json(text: &str, capacity: usize) -> Result<Self, String> {
        let p: Persisted = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(Observations {
            capacity,
            overflow: p.overflow,
            missed_events: p.missed_events,
            entries: p.entries.into_iter().map(|e| (e.key, e.evidence)).collect(),
        })
    }
}

/// What the operator asks of a proposal.
#[derive(Clone, Debug)]
pub struct LearnOptions {
    /// Only observations last seen at or after this time (Unix seconds).
    pub since: u64,
    /// Prefixes per rule at most when peers are named by address.
    pub max_cidrs: usize,
    /// Propose egress rules too (the groups' egress is kept otherwise).
    pub tighten_egress: bool,
}

impl LearnOptions {
    /// Whether a proposal for `rs` covers an observation: seen in the window, of a direction
    /// proposed (egress only with `tighten_egress`), on an interface `rs` binds to groups. The
    /// proposal and the checks of its candidate select observations with this, and only this.
    pub fn covers(&self, rs: &RuleSet, k: &ObsKey, e: &Evidence) -> bool {
        e.last_seen >= self.since
            && (k.dir == Dir::Ingress || self.tighten_egress)
            && rs.interfaces.iter().any(|b| b.iface == k.iface && !b.groups.is_empty())
    }
}

/// One line of the proposal: `+` a rule to add, `-` one to remove; with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub change: char,
    pub group: String,
    #[serde(rename = "direction", with = "direction")]
    pub dir: Dir,
    pub rule: String,
    pub evidence: String,
}

/// The candidate rule set and how it differs from the current one.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub candidate: RuleSet,
    pub changes: Vec<Change>,
    /// Observations used (in the window, on a bound interface).
    pub used: usize,
    /// Observations the table refused when full: the proposal may miss traffic.
    pub overflow: u64,
}

/// Aggregated evidence of a set of observations.
#[derive(Clone, Debug, Default)]
struct Seen {
    flows: u64,
    first: u64,
    last: u64,
    peers: BTreeSet<IpAddr>,
}

impl Seen {
    fn add(&mut self, peer: IpAddr, e: &Evidence) {
        self.first = if self.flows == 0 { e.first_seen } else { self.first.min(e.first_seen) };
        self.last = self.last.max(e.last_seen);
        self.flows += e.flows;
        self.peers.insert(peer);
    }

    fn merge(&mut self, o: &Seen) {
        self.first = if self.flows == 0 { o.first } else { self.first.min(o.first) };
        self.last = self.last.max(o.last);
        self.flows += o.flows;
        self.peers.extend(o.peers.iter().copied());
    }

    fn text(&self) -> String {
        let sample: Vec<String> = self.peers.iter().take(3).map(IpAddr::to_string).collect();
        let more = self.peers.len().saturating_sub(3);
        format!(
            "{} flow{} from {} peer{} ({}{}), first seen {}, last seen {}",
            self.flows,
            if self.flows == 1 { "" } else { "s" },
            self.peers.len(),
            if self.peers.len() == 1 { "" } else { "s" },
            sample.join(", "),
            if more > 0 { format!(", +{more}") } else { String::new() },
            day(self.first),
            day(self.last)
        )
    }
}

/// Unix seconds as an ISO date and time (UTC, minutes).
fn day(secs: u64) -> String {
    let days = secs / 86_400;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}Z")
}

/// Ports of one protocol (sorted, distinct) as rule port ranges: a run of ports whose gaps
/// are at most [`MAX_GAP`] becomes one range when it has 3 ports or more covering at least
/// half its span; otherwise each port is its own.
pub fn port_ranges(ports: &[u16]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] - ports[j] <= MAX_GAP {
            j += 1;
        }
        let (lo, hi) = (ports[i], ports[j]);
        let n = j - i + 1;
        let span = usize::from(hi - lo) + 1;
        if n >= 3 && n * 2 >= span {
            out.push((lo, hi));
        } else if n == span {
            // Consecutive (2 ports): one range is exact.
            out.push((lo, hi));
        } else {
            out.extend(ports[i..=j].iter().map(|&p| (p, p)));
        }
        i = j + 1;
    }
    out
}

/// Addresses (one family) as at most `max` prefixes covering them all: host prefixes, then
/// the two neighbours whose common prefix is longest merged, until `max` remain.
pub fn aggregate(addrs: &[IpAddr], max: usize) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = addrs.iter().map(|a| IpNet::from(*a)).collect();
    nets.sort();
    nets.dedup();
    let max = max.max(1);
    while nets.len() > max {
        // The adjacent pair with the longest common prefix (the smallest supernet).
        let (at, merged) = nets
            .windows(2)
            .enumerate()
            .map(|(i, w)| (i, supernet(&w[0], &w[1])))
            .max_by_key(|(_, n)| n.prefix_len())
            .expect("two or more prefixes");
        nets[at] = merged;
        nets.remove(at + 1);
        // A merged prefix may now cover its next neighbours.
        while at + 1 < nets.len() && merged.contains(&nets[at + 1]) {
            nets.remove(at + 1);
        }
    }
    nets
}

/// The longest prefix covering both (same family).
fn supernet(a: &IpNet, b: &IpNet) -> IpNet {
    match (a, b) {
        (IpNet::V4(x), IpNet::V4(y)) => {
            let (p, q) = (x.network().to_bits(), y.network().to_bits());
            let len = (p ^ q).leading_zeros().min(u32::from(x.prefix_len().min(y.prefix_len()))) as u8;
            IpNet::new(IpAddr::V4(Ipv4Addr::from_bits(p)), len).expect("length <= 32").trunc()
        }
        (IpNet::V6(x), IpNet::V6(y)) => {
            let (p, q) = (x.network().to_bits(), y.network().to_bits());
            let len = (p ^ q).leading_zeros().min(u32::from(x.prefix_len().min(y.prefix_len()))) as u8;
            IpNet::new(IpAddr::V6(Ipv6Addr::from_bits(p)), len).expect("length <= 128").trunc()
        }
        _ => unreachable!("aggregate() merges one family at a time"),
    }
}

/// How the peers of one rule are named: a group whose members cover them, a prefix list
/// whose entries cover them, groups whose members together cover them (at most `max_cidrs`,
/// each covering some), or prefixes.
fn name_peers(rs: &RuleSet, peers: &BTreeSet<IpAddr>, max_cidrs: usize) -> Vec<Peer> {
    let covered = |nets: &[IpNet]| peers.iter().all(|p| nets.iter().any(|n| n.contains(p)));
    let groups: Vec<(&str, Vec<IpNet>)> = rs
        .groups
        .iter()
        .filter(|g| !g.members.is_empty())
        .map(|g| (g.name.as_str(), rs.peer_nets(&Peer::Group(g.name.clone()))))
        .collect();
    if let Some((g, _)) = groups.iter().find(|(_, nets)| covered(nets)) {
        return vec![Peer::Group((*g).to_string())];
    }
    if let Some(pl) = rs.prefix_lists.iter().find(|pl| !pl.entries.is_empty() && covered(&pl.entries)) {
        return vec![Peer::PrefixList(pl.name.clone())];
    }
    if let Some(union) = group_cover(&groups, peers, max_cidrs) {
        return union.into_iter().map(|g| Peer::Group(g.to_string())).collect();
    }
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = peers.iter().partition(|a| a.is_ipv4());
    [v4, v6].iter().filter(|f| !f.is_empty()).flat_map(|f| aggregate(f, max_cidrs)).map(Peer::Cidr).collect()
}

/// Groups whose members together cover `peers`, greedily (the group covering most of what is
/// left first, file order breaking ties), when at most `max` do.
fn group_cover<'a>(
    groups: &[(&'a str, Vec<IpNet>)],
    peers: &BTreeSet<IpAddr>,
    max: usize,
) -> Option<Vec<&'a str>> {
    let mut left = peers.clone();
    let mut chosen = Vec::new();
    while !left.is_empty() && chosen.len() < max {
        let covers = |nets: &[IpNet]| left.iter().filter(|p| nets.iter().any(|n| n.contains(*p))).count();
        // The first of the groups that cover the most (`max_by_key` would take the last).
        let mut best: Option<(&'a str, &[IpNet], usize)> = None;
        for (g, nets) in groups {
            let n = covers(nets);
            if n > best.map_or(0, |b| b.2) {
                best = Some((g, nets, n));
            }
        }
        let (g, nets, _) = best?;
        left.retain(|p| !nets.iter().any(|x| x.contains(p)));
        chosen.push(g);
    }
    left.is_empty().then_some(chosen)
}

/// A rule as sgctl prints it in a proposal.
fn show(r: &Rule, dir: Dir) -> String {
    let mut r = r.clone();
    r.description = None;
    r.describe(dir)
}

/// The proposal for `current` from `obs` (see the module documentation).
pub fn propose(current: &RuleSet, obs: &Observations, opts: &LearnOptions) -> Proposal {
    // (group, dir) -> (proto, service) -> evidence; and which existing rules saw flows.
    let mut learned: BTreeMap<(String, Dir), BTreeMap<(u8, u16), Seen>> = BTreeMap::new();
    let mut hit: BTreeMap<(String, Dir, usize), Seen> = BTreeMap::new();
    let mut used = 0;
    for (k, e) in obs.entries.iter().filter(|(k, e)| opts.covers(current, k, e)) {
        let Some(first_group) =
            current.interfaces.iter().find(|b| b.iface == k.iface).and_then(|b| b.groups.first())
        else {
            continue;
        };
        used += 1;
        let probe = k.probe(k.local_end());
        let rules = current.iface_rules(&k.iface);
        let group = match evaluate(current, &k.iface, k.dir, &probe).rule.map(|i| &rules[i]) {
            Some(r) => {
                let index = r.rule.index;
                hit.entry((r.group.clone(), k.dir, index)).or_default().add(k.peer, e);
                r.group.clone()
            }
            None => first_group.clone(),
        };
        learned.entry((group, k.dir)).or_default().entry((k.proto, k.service)).or_default().add(k.peer, e);
    }

    let mut candidate = current.clone();
    let mut changes = Vec::new();
    for ((group, dir), services) in &learned {
        let Some(g) = candidate.groups.iter_mut().find(|g| &g.name == group) else { continue };
        let rules = rules_of(current, group, *dir, services, opts.max_cidrs);
        let old = g.rules(*dir).to_vec();
        for r in &old {
            if !rules.iter().any(|(n, _)| same(n, r)) {
                let evidence = match hit.get(&(group.clone(), *dir, r.index)) {
                    Some(s) => format!("allowed {}; replaced by the rules below", s.text()),
                    None => "allowed no flow in the window".to_string(),
                };
                changes.push(Change {
                    change: '-',
                    group: group.clone(),
                    dir: *dir,
                    rule: show(r, *dir),
                    evidence,
                });
            }
        }
        for (r, seen) in &rules {
            if !old.iter().any(|o| same(r, o)) {
                changes.push(Change {
                    change: '+',
                    group: group.clone(),
                    dir: *dir,
                    rule: show(r, *dir),
                    evidence: seen.text(),
                });
            }
        }
        let new: Vec<Rule> = rules.into_iter().map(|(r, _)| r).collect();
        set_rules(g, *dir, new);
    }
    Proposal { candidate, changes, used, overflow: obs.overflow }
}

/// The interface a fleet proposal names `host`'s interface `iface` by (in the flattened rule
/// set [`flatten_fleet`] makes and in the observations [`merge_fleet`] makes).
pub fn fleet_iface(host: &str, iface: &str) -> String {
    format!("{host}/{iface}")
}

/// A fleet rule set with every host's interfaces as interfaces of its own
/// ([`fleet_iface`]), so that one proposal covers all hosts: a group bound on several hosts
/// gets its rules from the traffic of them all.
pub fn flatten_fleet(fleet: &RuleSet) -> RuleSet {
    let mut flat = fleet.clone();
    flat.interfaces = fleet
        .hosts
        .iter()
        .flat_map(|h| {
            h.interfaces.iter().map(|b| crate::Binding { iface: fleet_iface(&h.host, &b.iface), ..b.clone() })
        })
        .collect();
    flat.hosts = Vec::new();
    flat
}

/// Every host's observations in one table, keyed by [`fleet_iface`]. A host's word counts
/// only for the interfaces the policy binds on that host (an entry for another interface,
/// or from a host the policy does not know, is left out and counted in the second value).
pub fn merge_fleet(fleet: &RuleSet, hosts: &[(String, Observations)]) -> (Observations, u64) {
    let mut all = Observations::new(usize::MAX);
    let mut foreign = 0;
    for (host, obs) in hosts {
        let bound = fleet.hosts.iter().find(|h| &h.host == host);
        all.overflow += obs.overflow;
        all.missed_events += obs.missed_events;
        for (k, e) in &obs.entries {
            if !bound.is_some_and(|h| h.interfaces.iter().any(|b| b.iface == k.iface)) {
                foreign += 1;
                continue;
            }
            let key = ObsKey { iface: fleet_iface(host, &k.iface), ..k.clone() };
            let slot = all.entries.entry(key).or_default();
            slot.first_seen = if slot.flows == 0 { e.first_seen } else { slot.first_seen.min(e.first_seen) };
            slot.last_seen = slot.last_seen.max(e.last_seen);
            slot.flows += e.flows;
        }
    }
    (all, foreign)
}

/// The proposal for fleet rule set `fleet` (its groups' members as the hosts registered them)
/// from what the hosts observed, `merged` by [`merge_fleet`]: [`propose`] over
/// [`flatten_fleet`]. The candidate keeps the fleet's host tables (and no flattened interfaces).
pub fn propose_fleet(fleet: &RuleSet, merged: &Observations, opts: &LearnOptions) -> Proposal {
    let mut p = propose(&flatten_fleet(fleet), merged, opts);
    p.candidate.interfaces.clone_from(&fleet.interfaces);
    p.candidate.hosts.clone_from(&fleet.hosts);
    p
}

/// Same rule, descriptions aside.
fn same(a: &Rule, b: &Rule) -> bool {
    (a.proto, a.ports, &a.peer) == (b.proto, b.ports, &b.peer)
}

fn set_rules(g: &mut Group, dir: Dir, rules: Vec<Rule>) {
    match dir {
        Dir::Ingress => g.ingress = rules,
        Dir::Egress => {
            g.egress = rules;
            g.default_egress = false;
        }
    }
}

/// Services (port, or ICMP type and code) with what was seen of each.
type ServicesSeen<'a> = Vec<(u16, &'a Seen)>;

/// The rules of one group and direction from its observed services, with their evidence.
fn rules_of(
    rs: &RuleSet,
    group: &str,
    dir: Dir,
    services: &BTreeMap<(u8, u16), Seen>,
    max_cidrs: usize,
) -> Vec<(Rule, Seen)> {
    // Services with the same protocol and the same peers share rules.
    let mut by_peers: BTreeMap<(u8, Vec<IpAddr>), ServicesSeen<'_>> = BTreeMap::new();
    for ((proto, service), seen) in services {
        by_peers.entry((*proto, seen.peers.iter().copied().collect())).or_default().push((*service, seen));
    }
    let mut out = Vec::new();
    for ((proto, peers), list) in by_peers {
        let peers: BTreeSet<IpAddr> = peers.into_iter().collect();
        let named = name_peers(rs, &peers, max_cidrs);
        let spans: Vec<(Ports, Seen)> = if matches!(proto, TCP | UDP) {
            let ports: Vec<u16> = list.iter().map(|(p, _)| *p).collect();
            port_ranges(&ports)
                .into_iter()
                .map(|(lo, hi)| {
                    let mut s = Seen::default();
                    for (_, seen) in list.iter().filter(|(p, _)| (lo..=hi).contains(p)) {
                        s.merge(seen);
                    }
                    (Ports::Range(lo, hi), s)
                })
                .collect()
        } else if Proto::Num(proto).is_icmp() {
            list.iter()
                .map(|(svc, seen)| {
                    (
                        Ports::Icmp { icmp_type: Some((svc >> 8) as u8), code: Some(*svc as u8) },
                        (*seen).clone(),
                    )
                })
                .collect()
        } else {
            let mut s = Seen::default();
            for (_, seen) in &list {
                s.merge(seen);
            }
            vec![(Ports::All, s)]
        };
        for (ports, seen) in spans {
            for peer in &named {
                let rule = Rule {
                    proto: Proto::Num(proto),
                    ports,
                    peer: peer.clone(),
                    description: Some(format!("learned: {} flows", seen.flows)),
                    index: 0,
                    loc: Loc { file: format!("learned ({group} {})", dir.as_str()), line: 1, col: 1 },
                };
                out.push((rule, seen.clone()));
            }
        }
    }
    out.sort_by(|a, b| (a.0.proto, a.0.ports, &a.0.peer).cmp(&(b.0.proto, b.0.ports, &b.0.peer)));
    for (i, (r, _)) in out.iter_mut().enumerate() {
        r.index = i;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AwsContext, Format, parse_str};

    #[test]
    fn dense_ports_become_ranges_sparse_ones_stay_apart() {
        assert_eq!(port_ranges(&[22]), vec![(22, 22)]);
        assert_eq!(port_ranges(&[80, 443]), vec![(80, 80), (443, 443)]);
        assert_eq!(port_ranges(&[8080, 8081]), vec![(8080, 8081)]);
        // 50000-50010 with 8 of 11 seen: dense.
        let passive = [50000, 50001, 50002, 50004, 50005, 50007, 50009, 50010];
        assert_eq!(port_ranges(&passive), vec![(50000, 50010)]);
        // Three ports 8 apart: a span of 17 with 3 seen is not dense.
        assert_eq!(port_ranges(&[100, 108, 116]), vec![(100, 100), (108, 108), (116, 116)]);
        // Gaps larger than MAX_GAP split runs.
        assert_eq!(port_ranges(&[1, 2, 3, 100, 101, 102]), vec![(1, 3), (100, 102)]);
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_aggregate_minimally_under_the_limit() {
        let addrs = [a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.3"), a("198.51.100.7")];
        assert_eq!(aggregate(&addrs, 8).len(), 4, "under the limit: host prefixes");
        assert_eq!(aggregate(&addrs, 2), vec![n("192.0.2.0/30"), n("198.51.100.7/32")]);
        let one = aggregate(&addrs, 1);
        assert_eq!(one.len(), 1);
        assert!(addrs.iter().all(|x| one[0].contains(x)), "{one:?}");
        let v6 = [a("2001:db8::1"), a("2001:db8::2")];
        assert_eq!(aggregate(&v6, 1), vec![n("2001:db8::/126")]);
    }

    fn rules() -> RuleSet {
        let text = r#"
[groups.db]
ingress = [
  { proto = "tcp", ports = "0-65535", from = "0.0.0.0/0" },
  { proto = "udp", ports = "161", from = "203.0.113.0/24" },
]

[groups.web]
members = ["198.51.100.10", "198.51.100.11"]

[prefix_lists.office]
entries = ["203.0.113.0/28"]

[interfaces.eth0]
groups = ["db"]
"#;
        parse_str("t.toml", text, Format::Toml, &AwsContext::default()).unwrap()
    }

    fn key(dir: Dir, proto: u8, service: u16, peer: &str) -> ObsKey {
        ObsKey { iface: "eth0".into(), dir, proto, service, peer: a(peer) }
    }

    #[test]
    fn the_proposal_names_peers_and_removes_what_saw_nothing() {
        let rs = rules();
        let mut obs = Observations::new(100);
        for _ in 0..3 {
            obs.record(key(Dir::Ingress, TCP, 5432, "198.51.100.10"), 1_000);
            obs.record(key(Dir::Ingress, TCP, 5432, "198.51.100.11"), 2_000);
        }
        obs.record(key(Dir::Ingress, TCP, 22, "203.0.113.5"), 1_500);
        obs.record(key(Dir::Ingress, 1, 0x0800, "192.0.2.9"), 1_500);
        // Egress is not learned unless asked.
        obs.record(key(Dir::Egress, UDP, 53, "192.0.2.53"), 1_500);
        // Outside the window.
        obs.record(key(Dir::Ingress, TCP, 9999, "192.0.2.1"), 10);
        let p = propose(&rs, &obs, &LearnOptions { since: 100, max_cidrs: 4, tighten_egress: false });
        let db = p.candidate.groups.iter().find(|g| g.name == "db").unwrap();
        let shown: Vec<String> = db.ingress.iter().map(|r| show(r, Dir::Ingress)).collect();
        assert_eq!(
            shown,
            [
                "icmp type 8 code 0 from 192.0.2.9/32",
                "tcp 22 from prefix-list office",
                "tcp 5432 from group web"
            ],
            "{:#?}",
            p.changes
        );
        let was = rs.groups.iter().find(|g| g.name == "db").unwrap();
        assert_eq!(
            (&db.egress, db.default_egress),
            (&was.egress, was.default_egress),
            "egress changed without --tighten-egress"
        );
        let minus: Vec<&Change> = p.changes.iter().filter(|c| c.change == '-').collect();
        assert_eq!(minus.len(), 2, "{minus:#?}");
        assert!(
            minus
                .iter()
                .any(|c| c.rule.starts_with("udp 161") && c.evidence == "allowed no flow in the window")
        );
        assert!(
            minus
                .iter()
                .any(|c| c.rule.starts_with("tcp 0-65535") && c.evidence.contains("7 flows from 3 peers"))
        );
        let web = p.changes.iter().find(|c| c.rule == "tcp 5432 from group web").unwrap();
        assert!(
            web.evidence.starts_with("6 flows from 2 peers (198.51.100.10, 198.51.100.11)"),
            "{}",
            web.evidence
        );
        assert_eq!(p.used, 4, "in the window, ingress only");
        // Every observed flow in the window is allowed by the candidate (reference model).
        for (k, _) in obs.entries.iter().filter(|(k, e)| e.last_seen >= 100 && k.dir == Dir::Ingress) {
            let probe = k.probe(k.local_end());
            assert!(evaluate(&p.candidate, "eth0", Dir::Ingress, &probe).rule.is_some(), "{k:?}");
        }
    }

    /// A fleet: db on two hosts, web's members as its hosts registered them.
    fn fleet() -> RuleSet {
        let text = r#"
[groups.db]
ingress = [ { proto = "tcp", ports = "0-65535", from = "198.51.100.0/24" } ]

[groups.web]
members = ["198.51.100.10", "198.51.100.11"]
ingress = [ { proto = "tcp", ports = "80", from = "198.51.100.0/24" } ]

[hosts.db1.interfaces.eth0]
groups = ["db"]

[hosts.db2.interfaces.eth0]
groups = ["db"]

[hosts.web1.interfaces.eth0]
groups = ["web"]
"#;
        parse_str("fleet.toml", text, Format::Toml, &AwsContext::default()).unwrap()
    }

    #[test]
    fn a_fleet_proposal_merges_the_hosts_of_a_group_and_names_peers_by_group() {
        let rs = fleet();
        let (mut db1, mut db2) = (Observations::new(100), Observations::new(100));
        db1.record(key(Dir::Ingress, TCP, 5432, "198.51.100.10"), 1_000);
        db2.record(key(Dir::Ingress, TCP, 5432, "198.51.100.11"), 2_000);
        db2.record(key(Dir::Ingress, TCP, 5433, "198.51.100.240"), 2_000);
        // A host's word about an interface the policy does not bind there does not count.
        db1.record(ObsKey { iface: "eth9".into(), ..key(Dir::Ingress, TCP, 22, "192.0.2.66") }, 1_000);
        let hosts = vec![
            ("db1".to_string(), db1),
            ("db2".to_string(), db2),
            ("ghost".to_string(), {
                let mut o = Observations::new(10);
                o.record(key(Dir::Ingress, TCP, 23, "192.0.2.66"), 1_000);
                o
            }),
        ];
        let (merged, foreign) = merge_fleet(&rs, &hosts);
        assert_eq!((merged.entries.len(), foreign), (3, 2));
        let p = propose_fleet(&rs, &merged, &LearnOptions { since: 0, max_cidrs: 4, tighten_egress: false });
        let db = p.candidate.groups.iter().find(|g| g.name == "db").unwrap();
        let shown: Vec<String> = db.ingress.iter().map(|r| show(r, Dir::Ingress)).collect();
        // One rule for both db hosts' web clients, by group; the client by address.
        assert_eq!(shown, ["tcp 5432 from group web", "tcp 5433 from 198.51.100.240/32"], "{:#?}", p.changes);
        let web = p.candidate.groups.iter().find(|g| g.name == "web").unwrap();
        assert_eq!(
            web,
            rs.groups.iter().find(|g| g.name == "web").unwrap(),
            "web observed nothing: unchanged"
        );
        assert!(p.changes.iter().any(|c| c.change == '-' && c.rule.starts_with("tcp 0-65535")));
        assert_eq!((p.candidate.hosts.len(), p.candidate.interfaces.len()), (3, 0), "the host tables stay");
        assert!(p.changes.iter().all(|c| !c.rule.contains("192.0.2.66")), "{:#?}", p.changes);
    }

    #[test]
    fn peers_of_several_groups_are_named_by_those_groups() {
        let text = r#"
[groups.dns]
ingress = [ { proto = "udp", ports = "0-65535", from = "0.0.0.0/0" } ]

[groups.web]
members = ["198.51.100.10", "198.51.100.11"]

[groups.db]
members = ["198.51.100.20"]

[interfaces.eth0]
groups = ["dns"]
"#;
        let rs = parse_str("t.toml", text, Format::Toml, &AwsContext::default()).unwrap();
        let mut obs = Observations::new(100);
        for peer in ["198.51.100.10", "198.51.100.11", "198.51.100.20"] {
            obs.record(key(Dir::Ingress, UDP, 53, peer), 1_000);
        }
        let opts = LearnOptions { since: 0, max_cidrs: 4, tighten_egress: false };
        let shown: Vec<String> = propose(&rs, &obs, &opts)
            .candidate
            .group("dns")
            .unwrap()
            .ingress
            .iter()
            .map(|r| show(r, Dir::Ingress))
            .collect();
        assert_eq!(shown, ["udp 53 from group db", "udp 53 from group web"]);
        // A peer in no group: addresses, as before.
        obs.record(key(Dir::Ingress, UDP, 53, "198.51.100.99"), 1_000);
        let shown: Vec<String> = propose(&rs, &obs, &opts)
            .candidate
            .group("dns")
            .unwrap()
            .ingress
            .iter()
            .map(|r| show(r, Dir::Ingress))
            .collect();
        assert!(shown.iter().all(|r| !r.contains("group")), "{shown:?}");
        // More groups than the limit: addresses.
        let one = LearnOptions { max_cidrs: 1, ..opts };
        obs.entries.retain(|k, _| k.peer != a("198.51.100.99"));
        let shown: Vec<String> = propose(&rs, &obs, &one)
            .candidate
            .group("dns")
            .unwrap()
            .ingress
            .iter()
            .map(|r| show(r, Dir::Ingress))
            .collect();
        assert_eq!(shown, ["udp 53 from 198.51.100.0/27"]);
    }

    #[test]
    fn a_summary_keeps_the_busiest_entries_and_counts_the_rest() {
        let mut o = Observations::new(100);
        for (i, flows) in [(1u16, 5), (2, 1), (3, 9), (4, 2)] {
            for _ in 0..flows {
                o.record(key(Dir::Ingress, TCP, i, "198.51.100.1"), 10);
            }
        }
        let s = o.summary(2);
        let ports: Vec<u16> = s.entries.keys().map(|k| k.service).collect();
        assert_eq!((ports, s.overflow), (vec![1, 3], 2));
        assert_eq!(
            Observations::from_json(&s.to_json_compact(), 100).unwrap(),
            Observations { capacity: 100, ..s }
        );
    }

    #[test]
    fn egress_is_tightened_when_asked() {
        let rs = rules();
        let mut obs = Observations::new(100);
        obs.record(key(Dir::Egress, UDP, 53, "192.0.2.53"), 1_500);
        let p = propose(&rs, &obs, &LearnOptions { since: 0, max_cidrs: 4, tighten_egress: true });
        let db = p.candidate.groups.iter().find(|g| g.name == "db").unwrap();
        assert!(!db.default_egress);
        assert_eq!(
            db.egress.iter().map(|r| show(r, Dir::Egress)).collect::<Vec<_>>(),
            ["udp 53 to 192.0.2.53/32"]
        );
    }

    #[test]
    fn the_table_is_bounded_and_persists() {
        let mut obs = Observations::new(2);
        obs.record(key(Dir::Ingress, TCP, 1, "192.0.2.1"), 1);
        obs.record(key(Dir::Ingress, TCP, 2, "192.0.2.1"), 2);
        obs.record(key(Dir::Ingress, TCP, 3, "192.0.2.1"), 3);
        obs.record(key(Dir::Ingress, TCP, 1, "192.0.2.1"), 4);
        assert_eq!(obs.entries.len(), 2);
        assert_eq!(obs.overflow, 1);
        obs.missed_events = 7;
        assert_eq!(
            obs.entries[&key(Dir::Ingress, TCP, 1, "192.0.2.1")],
            Evidence { flows: 2, first_seen: 1, last_seen: 4 }
        );
        let back = Observations::from_json(&obs.to_json(), 2).unwrap();
        assert_eq!(back, obs);
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(day(0), "1970-01-01 00:00Z");
        assert_eq!(day(1_796_601_600 + 3_600 + 120), "2026-12-07 01:02Z");
    }
}
