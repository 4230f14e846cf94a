//! Hit totals of both policy layers (`layer::Layer`: rules, network ACL entries), computed here
//! only: `sgctl stats`, `sgctl audit --live`, the metrics endpoint and the carrying of counts
//! across applies all use [`totals`].
//!
//! The datapath counts in `SG_RULE_HITS` and `SG_ACL_HITS` per generation, and a generation's
//! counters restart when it is written again. The total of an item is its base
//! (`State::bases`: what earlier generations counted for the same item, carried over by each
//! apply) plus the live count of the generation that holds it.

use serde::Serialize;

use crate::{
    error::Result,
    layer::Layer,
    loader,
    maps::InstanceMaps,
    state::{self, State},
};

/// Totals of every item of `layer` on `iface` (id order) under `state`, with `gen_` the
/// generation of `maps` that holds them.
pub fn totals(layer: Layer, state: &State, iface: &str, maps: &InstanceMaps, gen_: u8) -> Result<Vec<u64>> {
    (0..layer.len(&state.ruleset, iface))
        .map(|id| Ok(state.base(layer, iface, id) + maps.hits(layer, gen_, id as u32)?))
        .collect()
}

/// Totals of every item of `layer` on `iface`, in the generation the datapath reads now.
pub fn live_totals(layer: Layer, state: &State, iface: &str, maps: &InstanceMaps) -> Result<Vec<u64>> {
    totals(layer, state, iface, maps, maps.config()?.active_gen & 1)
}

/// One rule of the applied rule set with its hits, as `sgctl stats` shows it: one line of a
/// group's ingress or egress list. Its number everywhere (stats, top, conntrack, flows,
/// explain, replay, metrics, `rule remove`) is `index`, its position in that list (0-based),
/// with the group and the direction.
#[derive(Debug, Serialize)]
pub struct RuleStat {
    pub iface: String,
    pub group: String,
    pub direction: &'static str,
    /// The rule's number: its position in the group's list for the direction (0-based).
    pub index: usize,
    /// The rule as a line (its peers joined).
    pub rule: String,
    pub description: Option<String>,
    pub location: String,
    /// Packets this rule allowed (the first rule in file order that allows a packet counts
    /// it), since the rule was first applied; all its peers together.
    pub hits: u64,
}

/// Every rule of the applied rule set on the attached interfaces (or on `iface` only), one
/// per line of the file (a line with several peers is one rule).
pub fn rule_stats(iface: Option<&str>) -> Result<Vec<RuleStat>> {
    let state = state::applied()?;
    let mut out: Vec<RuleStat> = Vec::new();
    for b in &state.ruleset.interfaces {
        if iface.is_some_and(|i| i != b.iface) {
            continue;
        }
        let Some(att) = loader::open_attached(&b.iface)? else { continue };
        let hits = live_totals(Layer::Rules, &state, &b.iface, &att.maps)?;
        for (r, hits) in state.ruleset.iface_rules(&b.iface).into_iter().zip(hits) {
            let dir = r.dir.as_str();
            if let Some(line) = out.iter_mut().find(|s| {
                s.iface == b.iface && s.group == r.group && s.direction == dir && s.index == r.rule.index
            }) {
                line.hits += hits;
                line.rule = join_peer(&line.rule, &r.rule.describe(r.dir));
                continue;
            }
            out.push(RuleStat {
                iface: b.iface.clone(),
                group: r.group.clone(),
                direction: dir,
                index: r.rule.index,
                rule: r.rule.describe(r.dir),
                description: r.rule.description.clone(),
                location: r.rule.loc.to_string(),
                hits,
            });
        }
    }
    Ok(out)
}

/// `tcp 443 from 0.0.0.0/0` and `tcp 443 from ::/0` as `tcp 443 from 0.0.0.0/0, ::/0`.
pub(crate) fn join_peer(line: &str, another: &str) -> String {
    let peer = another.rsplit_once(" from ").or_else(|| another.rsplit_once(" to ")).map(|(_, p)| p);
    match peer {
        Some(p) if !line.contains(p) => format!("{line}, {p}"),
        _ => line.to_string(),
    }
}

/// One entry of an interface's network ACL with its hits, as `sgctl stats --acl` shows it.
#[derive(Debug, Serialize)]
pub struct AclStat {
    pub iface: String,
    pub acl: String,
    pub direction: &'static str,
    pub number: u16,
    pub action: &'static str,
    pub entry: String,
    pub location: String,
    /// Packets this entry decided (allowed or denied) since the entry was first applied: an
    /// ACL is stateless, so every packet of a flow counts.
    pub hits: u64,
}

/// Every network ACL entry of the applied rule set on the attached interfaces (or on `iface`).
pub fn acl_stats(iface: Option<&str>) -> Result<Vec<AclStat>> {
    let state = state::applied()?;
    let mut out = Vec::new();
    for b in &state.ruleset.interfaces {
        if iface.is_some_and(|i| i != b.iface) {
            continue;
        }
        let Some(acl) = state.ruleset.iface_acl(&b.iface) else { continue };
        let Some(att) = loader::open_attached(&b.iface)? else { continue };
        out.extend(acl_rows(&b.iface, acl, live_totals(Layer::Acl, &state, &b.iface, &att.maps)?));
    }
    Ok(out)
}

/// The rows of `acl` on `iface`, with `totals` in entry id order (`Acl::by_id`): for `stats
/// --acl` and `replay`.
pub fn acl_rows(iface: &str, acl: &crate::rules::acl::Acl, totals: Vec<u64>) -> Vec<AclStat> {
    acl.by_id()
        .zip(totals)
        .map(|((dir, e), hits)| AclStat {
            iface: iface.to_string(),
            acl: acl.name.clone(),
            direction: dir.as_str(),
            number: e.number,
            action: e.action.as_str(),
            entry: e.describe(dir),
            location: e.loc.to_string(),
            hits,
        })
        .collect()
}
