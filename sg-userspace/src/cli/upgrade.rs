//! `sgctl upgrade [IFACE..] [--force] [--json]`: the attached instances to this build's
//! datapath, without an unfiltered instant and without losing a tracked flow.

use clap::Args;

use crate::{loader, pins};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Interfaces to upgrade (default: every interface attached in this network namespace).
    pub ifaces: Vec<String>,
    /// Replace the programs even of instances that already run this build's datapath.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object per line (the upgrade report).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &UpgradeArgs) -> anyhow::Result<()> {
    let ifaces = if args.ifaces.is_empty() { pins::attached_ifaces()? } else { args.ifaces.clone() };
    if ifaces.is_empty() {
        println!("no interface attached in this network namespace");
        return Ok(());
    }
    let opts = loader::upgrade::UpgradeOptions { force: args.force };
    if let [one] = ifaces.as_slice() {
        // One interface: its error is the command's (one line).
        return print(&loader::upgrade::upgrade(one, opts)?, args.json);
    }
    let mut failed = 0;
    for iface in &ifaces {
        match loader::upgrade::upgrade(iface, opts) {
            Ok(r) => print(&r, args.json)?,
            Err(e) => {
                // The error names the interface.
                eprintln!("sgctl: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} interface(s) not upgraded (see above; each was left as it was)",
            ifaces.len()
        );
    }
    Ok(())
}

fn print(r: &loader::upgrade::UpgradeReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    if let Some(what) = &r.recovered {
        println!("{}: {what}", r.iface);
    }
    if r.path == "current" {
        println!("{}: already runs this build's datapath ({}); nothing to do", r.iface, r.to_build);
        return Ok(());
    }
    println!(
        "{}: upgraded from sgctl {} (layout {}) to {} (layout {}), {}: programs {} -> {} (ingress), {} -> {} (egress); \
                     {} maps reused, {} converted ({} flows carried, {} again after the switch), {:.1} ms",
        r.iface,
        r.from_build,
        r.from_layout,
        r.to_build,
        r.to_layout,
        r.path,
        r.ingress_prog[0],
        r.ingress_prog[1],
        r.egress_prog[0],
        r.egress_prog[1],
        r.reused.len(),
        r.converted.len(),
        r.flows_copied,
        r.flows_recopied,
        r.millis
    );
    Ok(())
}
