//! Live rates for `sgctl top`: packets/s and bits/s per interface, direction and verdict
//! reason, and the rules and network ACL entries with the most hits per second, from two reads of the per-CPU counters
//! of every interface attached in this network namespace (the datapath pays nothing for it).

use std::{
    collections::HashMap,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::{
    error::{Error, Result},
    layer::Layer,
    loader,
    maps::InstanceMaps,
    pins,
    state::current_state,
};

/// One sample.
#[derive(Debug, Serialize)]
pub struct Sample {
    /// Unix time of the sample, seconds.
    pub time: f64,
    /// Seconds the rates are averaged over.
    pub interval: f64,
    pub interfaces: Vec<IfaceRates>,
}

#[derive(Debug, Serialize)]
pub struct IfaceRates {
    pub iface: String,
    /// Packets/s and bits/s per direction (all reasons).
    pub ingress_pps: f64,
    pub ingress_bps: f64,
    pub egress_pps: f64,
    pub egress_bps: f64,
    /// Every (direction, reason) that moved during the interval.
    pub reasons: Vec<ReasonRate>,
    /// The busiest rules, most hits per second first.
    pub top_rules: Vec<RuleRate>,
    /// The busiest network ACL entries (packets each decided per second), most first; `id`
    /// is the entry id on the interface.
    pub top_acl_entries: Vec<RuleRate>,
}

#[derive(Debug, Serialize)]
pub struct ReasonRate {
    pub direction: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub pps: f64,
    pub bps: f64,
}

#[derive(Debug, Serialize)]
pub struct RuleRate {
    #[serde(flatten)]
    pub line: Line,
    pub hits_per_s: f64,
}

/// A rule line (`group`, `direction`, `index`, `rule`: as stats, explain, conntrack and flows
/// name it) or a network ACL entry (`acl`, `direction`, `rule`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub rule: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.group, &self.acl, self.index) {
            (Some(g), _, Some(i)) => write!(f, "{g} {} #{i}: {}", self.direction, self.rule),
            (_, Some(a), _) => write!(f, "acl {a}/{}: {}", self.direction, self.rule),
            _ => write!(f, "{}", self.rule),
        }
    }
}

/// Absolute counters of one interface at one moment.
struct Snapshot {
    counters: Vec<(&'static str, &'static str, &'static str, u64, u64)>,
    /// (generation, hits per rule id), of the active generation.
    rules: (u8, Vec<u64>),
    /// Hits per network ACL entry id, of the same generation.
    acl: Vec<u64>,
}

fn snapshot(maps: &InstanceMaps, names: &Names) -> Result<Snapshot> {
    let counters =
        maps.counters()?.into_iter().map(|c| (c.direction, c.reason, c.action, c.packets, c.bytes)).collect();
    let cfg = maps.config()?;
    let gen_ = cfg.active_gen & 1;
    let hits = (0..names.rules.len() as u32)
        .map(|id| maps.hits(Layer::Rules, gen_, id))
        .collect::<Result<Vec<_>>>()?;
    let acl =
        (0..names.acl.len() as u32).map(|id| maps.hits(Layer::Acl, gen_, id)).collect::<Result<Vec<_>>>()?;
    Ok(Snapshot { counters, rules: (gen_, hits), acl })
}

/// The descriptions of an interface's rules and network ACL entries, by id.
#[derive(Clone, Debug, Default)]
struct Names {
    rules: Vec<Line>,
    acl: Vec<Line>,
}

/// Rule and ACL entry descriptions per interface, from the applied state (empty in posture
/// mode).
fn rule_names() -> Result<HashMap<String, Names>> {
    let Some(state) = current_state()? else { return Ok(HashMap::new()) };
    let rs = &state.ruleset;
    Ok(rs
        .interfaces
        .iter()
        .map(|b| {
            let rules = rs
                .iface_rules(&b.iface)
                .iter()
                .map(|r| Line {
                    group: Some(r.group.clone()),
                    acl: None,
                    direction: r.dir.as_str(),
                    index: Some(r.rule.index),
                    rule: r.rule.describe(r.dir),
                })
                .collect();
            let acl = rs.iface_acl(&b.iface).map_or_else(Vec::new, |a| {
                crate::rules::Dir::BOTH
                    .into_iter()
                    .flat_map(|d| {
                        a.entries(d).iter().map(move |e| Line {
                            group: None,
                            acl: Some(a.name.clone()),
                            direction: d.as_str(),
                            index: None,
                            rule: e.describe(d),
                        })
                    })
                    .collect()
            });
            (b.iface.clone(), Names { rules, acl })
        })
        .collect())
}

/// The entries of `before` -> `after` that moved, as rates, busiest first, at most `top`.
/// The peers of one rule line (one name up to its text) count together.
fn busiest(before: &[u64], after: &[u64], names: &[Line], secs: f64, top: usize) -> Vec<RuleRate> {
    let mut rates: Vec<RuleRate> = Vec::new();
    for (id, (b, a)) in before.iter().zip(after).enumerate().filter(|(_, (b, a))| a > b) {
        let line = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| Line { rule: format!("rule id {id}"), ..Line::default() });
        let rate = (a - b) as f64 / secs;
        let same = |r: &&mut RuleRate| {
            line.index.is_some()
                && (&r.line.group, &r.line.acl, r.line.direction, r.line.index)
                    == (&line.group, &line.acl, line.direction, line.index)
        };
        match rates.iter_mut().find(same) {
            Some(r) => {
                r.hits_per_s += rate;
                r.line.rule = crate::hits::join_peer(&r.line.rule, &line.rule);
            }
            None => rates.push(RuleRate { line, hits_per_s: rate }),
        }
    }
    rates.sort_by(|x, y| y.hits_per_s.total_cmp(&x.hits_per_s));
    rates.truncate(top);
    rates
}

fn rates(
    iface: &str,
    before: &Snapshot,
    after: &Snapshot,
    secs: f64,
    names: &Names,
    top: usize,
) -> IfaceRates {
    let mut r = IfaceRates {
        iface: iface.to_string(),
        ingress_pps: 0.0,
        ingress_bps: 0.0,
        egress_pps: 0.0,
        egress_bps: 0.0,
        reasons: Vec::new(),
        top_rules: Vec::new(),
        top_acl_entries: Vec::new(),
    };
    for (b, a) in before.counters.iter().zip(&after.counters) {
        let pps = a.3.saturating_sub(b.3) as f64 / secs;
        let bps = a.4.saturating_sub(b.4) as f64 * 8.0 / secs;
        if pps == 0.0 {
            continue;
        }
        if a.0 == "ingress" {
            r.ingress_pps += pps;
            r.ingress_bps += bps;
        } else {
            r.egress_pps += pps;
            r.egress_bps += bps;
        }
        r.reasons.push(ReasonRate { direction: a.0, reason: a.1, action: a.2, pps, bps });
    }
    // Rule hits are comparable only within one generation (an apply in between restarts them).
    if before.rules.0 == after.rules.0 {
        r.top_rules = busiest(&before.rules.1, &after.rules.1, &names.rules, secs, top);
        r.top_acl_entries = busiest(&before.acl, &after.acl, &names.acl, secs, top);
    }
    r
}

/// Takes samples of the attached interfaces: each one the rates since the one before.
pub struct Sampler {
    /// Per interface: its maps, its rules' descriptions, the last snapshot.
    ifaces: Vec<(String, InstanceMaps, Names, Snapshot)>,
    last: Instant,
    /// How many of the busiest rules per interface.
    top: usize,
}

impl Sampler {
    /// Starts on every attached interface, or on `only`; the first sample's rates count from
    /// now.
    pub fn new(only: Option<&str>, top: usize) -> Result<Self> {
        pins::check_root()?;
        pins::check_bpffs()?;
        let dir = pins::netns_dir()?;
        let mut names: Vec<String> = pins::attached_ifaces()?;
        if let Some(only) = only {
            if !names.iter().any(|n| n == only) {
                return Err(Error::NotAttached { iface: only.to_string(), dir: dir.join(only) });
            }
            names.retain(|n| n == only);
        }
        let described = rule_names()?;
        let mut ifaces = Vec::new();
        for name in names {
            let Some(maps) = loader::open_pinned(&dir.join(&name))? else { continue };
            let rules = described.get(&name).cloned().unwrap_or_default();
            let snap = snapshot(&maps, &rules)?;
            ifaces.push((name, maps, rules, snap));
        }
        Ok(Sampler { ifaces, last: Instant::now(), top })
    }

    /// The rates since the last sample (or since [`Sampler::new`]).
    pub fn sample(&mut self) -> Result<Sample> {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut sample = Sample {
            time: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            interval: secs,
            interfaces: Vec::new(),
        };
        let mut described: Option<HashMap<String, Names>> = None;
        for (name, maps, rules, prev) in &mut self.ifaces {
            let mut cur = snapshot(maps, rules)?;
            if cur.rules.0 != prev.rules.0 {
                // An apply flipped the generation: the rule list may have changed.
                if described.is_none() {
                    described = Some(rule_names()?);
                }
                *rules = described.as_ref().and_then(|d| d.get(name.as_str())).cloned().unwrap_or_default();
                cur = snapshot(maps, rules)?;
            }
            sample.interfaces.push(rates(name, prev, &cur, secs, rules, self.top));
            *prev = cur;
        }
        Ok(sample)
    }
}
