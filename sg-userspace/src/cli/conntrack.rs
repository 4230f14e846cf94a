//! `sgctl conntrack list|flush|gc`: the tracked flows of the attached interfaces
//! (`crate::conntrack`).

use std::net::IpAddr;

use clap::{Args, Subcommand};

use super::common::proto_number;
use crate::{
    conntrack::{FlowFilter, flows, flush, gc, targets},
    pins, state,
};

#[derive(Debug, Args)]
pub struct ConntrackArgs {
    #[command(subcommand)]
    pub op: ConntrackOp,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackOp {
    /// List tracked flows: endpoints, state, age, idle time, counters, rule.
    List(ListArgs),
    /// Remove tracked flows (all, or those matching the filters); their next packet is new.
    Flush(FlushArgs),
    /// Remove expired flows now (lookups already treat them as absent).
    Gc(IfaceFilter),
}

#[derive(Debug, Args)]
pub struct IfaceFilter {
    /// Only this interface.
    #[arg(long)]
    pub iface: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub iface: IfaceFilter,
    #[arg(long)]
    pub json: bool,
    /// Also list expired flows not yet removed.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    #[command(flatten)]
    pub iface: IfaceFilter,
    /// Only flows of this protocol (tcp, udp, icmp, icmpv6 or a number).
    #[arg(long, value_parser = proto_number)]
    pub proto: Option<u8>,
    /// Only flows with this address at either end.
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Only flows with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(args: &ConntrackArgs) -> anyhow::Result<()> {
    pins::check_root()?;
    pins::check_bpffs()?;
    match &args.op {
        ConntrackOp::List(l) => {
            let st = state::load()?;
            let mut all = Vec::new();
            for a in targets(l.iface.iface.as_deref())? {
                all.extend(flows(&a.maps, &a.iface, st.as_ref(), l.all)?);
            }
            if l.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<10} {:<6} {:<45} {:<45} {:<7} {:<13} {:>9} {:>9} {:>10} {:>10}  rule",
                "iface",
                "proto",
                "initiator",
                "responder",
                "origin",
                "state",
                "age s",
                "idle s",
                "pkts>",
                "pkts<"
            );
            for f in &all {
                println!(
                    "{:<10} {:<6} {:<45} {:<45} {:<7} {:<13} {:>9.1} {:>9.1} {:>10} {:>10}  {}",
                    f.iface,
                    f.proto,
                    f.initiator,
                    f.responder,
                    f.origin,
                    if f.expired { "expired" } else { f.state },
                    f.age_s,
                    f.idle_s,
                    f.packets[0],
                    f.packets[1],
                    f.rule.as_deref().unwrap_or("-")
                );
            }
            println!("{} flows", all.len());
        }
        ConntrackOp::Flush(f) => {
            let filter = FlowFilter { proto: f.proto, addr: f.addr, port: f.port };
            let mut n = 0;
            for mut a in targets(f.iface.iface.as_deref())? {
                n += flush(&mut a, &filter)?;
            }
            println!("flushed {n} flows");
        }
        ConntrackOp::Gc(filter) => {
            let mut n = 0;
            for mut a in targets(filter.iface.as_deref())? {
                let r = gc(&mut a)?;
                n += r.removed;
                println!(
                    "{}: presence filter rebuilt for {} flows ({:.2}% of slots set)",
                    a.iface,
                    r.flows,
                    100.0 * r.filled
                );
            }
            println!("removed {n} expired flows");
        }
    }
    Ok(())
}
