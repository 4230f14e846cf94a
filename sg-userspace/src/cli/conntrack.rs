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
    /// Print JSON.
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
            print_table(&all);
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

/// An endpoint as listed: `addr:port` (`[v6]:port`), the address alone without ports.
fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => std::net::SocketAddr::new(addr, p).to_string(),
        None => addr.to_string(),
    }
}

/// The flows as a table whose columns are as wide as their contents (an IPv4 table fits 120
/// columns); ICMP echo flows by their identifier.
fn print_table(all: &[crate::conntrack::Flow]) {
    let rows: Vec<[String; 8]> = all
        .iter()
        .map(|f| {
            [
                f.iface.clone(),
                f.icmp_id.map_or_else(|| f.proto.clone(), |id| format!("{} id {id}", f.proto)),
                endpoint(f.src, f.sport),
                endpoint(f.dst, f.dport),
                format!(
                    "{} {}",
                    if f.direction == "ingress" { "in" } else { "out" },
                    if f.expired { "expired" } else { f.state }
                ),
                format!("{:.0}", f.idle_s),
                format!("{}/{}", f.packets[0], f.packets[1]),
                f.rule.short(f.direction).unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let head = ["iface", "proto", "from", "to", "state", "idle s", "pkts >/<", "rule"];
    let mut w: [usize; 8] = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |c: [&str; 8]| {
        let cols: Vec<String> =
            c.iter().enumerate().map(|(i, s)| format!("{s:<width$}", width = w[i])).collect();
        println!("{}", cols.join(" ").trim_end());
    };
    line(head);
    for r in &rows {
        line(std::array::from_fn(|i| r[i].as_str()));
    }
}
