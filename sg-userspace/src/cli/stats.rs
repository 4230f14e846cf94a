//! `sgctl stats [--json] [--iface IF]`: per-rule hit counters of the applied rule set.

use clap::Args;
use serde::Serialize;

use crate::{apply::applied, loader};

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
    /// Only this interface.
    #[arg(long)]
    pub iface: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RuleStat {
    pub iface: String,
    /// Rule id on the interface (file order).
    pub id: usize,
    pub group: String,
    pub direction: &'static str,
    /// Position in the group's list for the direction.
    pub index: usize,
    pub rule: String,
    pub description: Option<String>,
    pub location: String,
    /// Packets this rule allowed (the first rule in file order that allows a packet counts it).
    pub hits: u64,
}

pub fn collect(iface: Option<&str>) -> anyhow::Result<Vec<RuleStat>> {
    let state = applied()?;
    let mut out = Vec::new();
    for b in &state.ruleset.interfaces {
        if iface.is_some_and(|i| i != b.iface) {
            continue;
        }
        let Some(att) = loader::open_attached(&b.iface)? else { continue };
        let cfg = att.maps.config()?;
        for (id, r) in state.ruleset.iface_rules(&b.iface).into_iter().enumerate() {
            out.push(RuleStat {
                iface: b.iface.clone(),
                id,
                group: r.group.clone(),
                direction: r.dir.as_str(),
                index: r.rule.index,
                rule: r.rule.describe(r.dir),
                description: r.rule.description.clone(),
                location: r.rule.loc.to_string(),
                hits: state.base_hits(&b.iface, id) + att.maps.rule_hits(cfg.active_gen & 1, id as u32)?,
            });
        }
    }
    Ok(out)
}

pub fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let stats = collect(args.iface.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    println!("{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  rule", "iface", "id", "group", "dir", "index", "hits");
    for s in &stats {
        println!(
            "{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  {}",
            s.iface, s.id, s.group, s.direction, s.index, s.hits, s.rule
        );
    }
    Ok(())
}
