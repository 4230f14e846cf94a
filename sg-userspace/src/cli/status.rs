//! `sgctl status [--json] [--all]`: attached interfaces of the current network namespace.

use clap::Args;

use crate::status::collect;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (one object with an `interfaces` array).
    #[arg(long)]
    pub json: bool,
    /// Also list counters that are zero.
    #[arg(long)]
    pub all: bool,
}

fn id(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_string(), |i| i.to_string())
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let status = collect()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    if status.interfaces.is_empty() {
        println!("no interface attached in this network namespace");
        return Ok(());
    }
    for s in &status.interfaces {
        if !matches!(s.datapath.state, "current" | "differs") {
            println!("{} (ifindex {}): {}", s.iface, s.ifindex, s.datapath.note.as_deref().unwrap_or(""));
            continue;
        }
        if s.policy == "groups" {
            println!(
                "{} ({}, ifindex {}): security groups {}{}, rule set #{} from {}",
                s.iface,
                s.state,
                s.ifindex,
                if s.groups.is_empty() { "?".to_string() } else { s.groups.join(", ") },
                s.acl.as_ref().map_or_else(String::new, |a| format!(", network ACL {a}")),
                s.policy_seq,
                s.source
            );
        } else {
            println!(
                "{} ({}, ifindex {}): ingress {}, egress {}",
                s.iface, s.state, s.ifindex, s.ingress, s.egress
            );
        }
        if s.monitor {
            println!("  MONITOR MODE: nothing is dropped; the drop counters show what would have been");
        }
        let ingress = match &s.ingress_chain {
            Some(chain) => format!("ingress TCX ({chain})"),
            None if s.ingress_hook == "tcx" => "ingress TCX".to_string(),
            None => format!("XDP {}", s.xdp_mode),
        };
        println!(
            "  {ingress} prog {} link {}; TC {} prog {} link {}",
            id(s.ingress_prog_id),
            id(s.xdp_link_id),
            s.tc_kind,
            id(s.egress_prog_id),
            id(s.tc_link_id)
        );
        println!(
            "  datapath: sgctl {} (map layout {}){}",
            s.datapath.build,
            s.datapath.layout,
            if s.datapath.upgrades > 0 {
                format!(", upgraded {} time(s)", s.datapath.upgrades)
            } else {
                String::new()
            }
        );
        if let Some(note) = &s.datapath.note {
            println!("  NOTE: {note}");
        }
        println!(
            "  conntrack: {} established (of {}), {} new (of {}), {} drops for a full table",
            s.conntrack.established,
            s.conntrack.established_capacity,
            s.conntrack.new,
            s.conntrack.new_capacity,
            s.conntrack.ct_full_drops
        );
        if s.conntrack.adopted + s.conntrack.migrated > 0 {
            println!(
                "  of them {} adopted when sgctl was enabled (existing connections), {} carried over by an upgrade",
                s.conntrack.adopted, s.conntrack.migrated
            );
        }
        println!("  {:<8} {:<20} {:<6} {:>12} {:>14}", "dir", "reason", "action", "packets", "bytes");
        for c in s.counters.iter().filter(|c| args.all || c.packets > 0) {
            println!(
                "  {:<8} {:<20} {:<6} {:>12} {:>14}",
                c.direction, c.reason, c.action, c.packets, c.bytes
            );
        }
    }
    Ok(())
}
