//! `sgctl stats [--json] [--iface IF] [--acl]`: per-rule hit counters of the applied rule set,
//! and those of the network ACL entries (`crate::hits`).

use clap::Args;

use crate::hits::{acl_stats, rule_stats};

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    pub json: bool,
    /// Only this interface.
    #[arg(long)]
    pub iface: Option<String>,
    /// The network ACL entries only (packets each entry decided since it was first applied); with
    /// --json, their rows instead of the rules'.
    #[arg(long)]
    pub acl: bool,
}

pub fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let acl = acl_stats(args.iface.as_deref())?;
    if args.json {
        let out = if args.acl {
            serde_json::to_string_pretty(&acl)?
        } else {
            serde_json::to_string_pretty(&rule_stats(args.iface.as_deref())?)?
        };
        println!("{out}");
        return Ok(());
    }
    if !args.acl {
        let stats = rule_stats(args.iface.as_deref())?;
        println!(
            "{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  rule",
            "iface", "id", "group", "dir", "index", "hits"
        );
        for s in &stats {
            println!(
                "{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  {}",
                s.iface, s.id, s.group, s.direction, s.index, s.hits, s.rule
            );
        }
        if acl.is_empty() {
            return Ok(());
        }
        println!();
    }
    println!(
        "{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  network ACL entry",
        "iface", "id", "acl", "dir", "rule", "hits"
    );
    for s in &acl {
        println!(
            "{:<12} {:>4} {:<16} {:<8} {:>5} {:>12}  {}",
            s.iface, s.id, s.acl, s.direction, s.number, s.hits, s.entry
        );
    }
    Ok(())
}
