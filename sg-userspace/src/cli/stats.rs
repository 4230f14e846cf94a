//! `sgctl stats [--json] [--iface IF] [--acl]`: per-rule hit counters of the applied rule set,
//! and those of the network ACL entries (`crate::hits`).

use std::fmt::Display;

use clap::Args;

use crate::hits::{acl_stats, rule_stats};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON.
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
        row([&"iface", &"group", &"dir", &"#", &"hits"], &"rule");
        for s in rule_stats(args.iface.as_deref())? {
            row([&s.iface, &s.group, &s.direction, &format!("#{}", s.index), &s.hits], &s.rule);
        }
        if acl.is_empty() {
            return Ok(());
        }
        println!();
    }
    row([&"iface", &"acl", &"dir", &"rule", &"hits"], &"network ACL entry");
    for s in &acl {
        row([&s.iface, &s.acl, &s.direction, &s.number, &s.hits], &s.entry);
    }
    Ok(())
}

/// One line of either table: interface, group or ACL, direction, the rule's number (a
/// rule's index in its group and direction, an ACL entry's rule number), hits, then what the
/// row counts.
fn row(c: [&dyn Display; 5], what: &dyn Display) {
    let [iface, owner, dir, number, hits] = c.map(ToString::to_string);
    println!("{iface:<12} {owner:<16} {dir:<8} {number:>5} {hits:>12}  {what}");
}
