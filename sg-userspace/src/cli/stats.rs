//! `sgctl stats [--json] [--iface IF]`: per-rule hit counters of the applied rule set
//! (`crate::hits`).

use clap::Args;

use crate::hits::rule_stats;

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
    /// Only this interface.
    #[arg(long)]
    pub iface: Option<String>,
}

pub fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let stats = rule_stats(args.iface.as_deref())?;
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
