//! `sgctl conntrack list|flush|gc`: the tracked flows of the attached interfaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clap::{Args, Subcommand};
use serde::Serialize;
use sg_common::{
    conntrack::{CT_F_SEEN_REPLY, CtEntry, CtKey, state_name},
    packet::FAMILY_IPV4,
    policy::NO_RULE,
};

use crate::{
    error::Result,
    loader,
    maps::{CtTable, InstanceMaps, ct_now_ns},
    pins,
    state::{self, State},
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
    #[arg(long)]
    pub proto: Option<String>,
    /// Only flows with this address at either end.
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Only flows with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Serialize)]
pub struct Flow {
    pub iface: String,
    pub proto: u8,
    /// The endpoint that opened the flow.
    pub initiator: String,
    pub responder: String,
    /// `ingress` (opened from outside) or `egress` (opened by this host).
    pub origin: &'static str,
    pub state: &'static str,
    pub table: CtTable,
    pub age_s: f64,
    pub idle_s: f64,
    pub expired: bool,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub replied: bool,
    /// The rule that allowed the flow, as `sgctl stats` names it (when still applied).
    pub rule: Option<String>,
}

/// An address of a key or summary (IPv4 in the first 4 bytes).
pub fn addr(family: u8, a: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*a))
    }
}

/// A tracked flow's initiator and responder, from its normalised key.
pub fn endpoints(k: &CtKey, e: &CtEntry) -> (SocketAddr, SocketAddr) {
    let lo = SocketAddr::new(addr(k.family, &k.addr_lo), k.port_lo);
    let hi = SocketAddr::new(addr(k.family, &k.addr_hi), k.port_hi);
    if e.initiator_lo != 0 { (lo, hi) } else { (hi, lo) }
}

/// The interfaces to look at, with their maps.
fn targets(filter: &IfaceFilter) -> Result<Vec<loader::Attached>> {
    let names = match &filter.iface {
        Some(i) => vec![i.clone()],
        None => pins::attached_ifaces()?,
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(a) = loader::open_attached(&n)? {
            out.push(a);
        } else if filter.iface.is_some() {
            return Err(crate::Error::NotAttached { iface: n.clone(), dir: pins::iface_dir(&n)? });
        }
    }
    Ok(out)
}

fn rule_name(state: Option<&State>, iface: &str, e: &CtEntry) -> Option<String> {
    rule_label(state, iface, e.rule, e.policy_seq)
}

/// How `sgctl stats` names rule `rule` of rule set `seq` (low 32 bits) on `iface`; `None` for
/// `NO_RULE` (a posture allowed it).
pub fn rule_label(state: Option<&State>, iface: &str, rule: u32, seq: u32) -> Option<String> {
    if rule == NO_RULE {
        return None;
    }
    match state {
        Some(s) if s.seq as u32 == seq => {
            s.ruleset.iface_rules(iface).get(rule as usize).map(|r| {
                format!("{} {} #{}: {}", r.group, r.dir.as_str(), r.rule.index, r.rule.describe(r.dir))
            })
        }
        _ => Some(format!("rule id {rule} of rule set #{seq}")),
    }
}

/// A protocol number as sgctl spells it (tcp, udp, icmp, icmpv6, or the number).
pub fn proto_name(p: u8) -> String {
    crate::rules::Proto::Num(p).aws_name()
}

pub fn flows(maps: &InstanceMaps, iface: &str, state: Option<&State>, all: bool) -> Result<Vec<Flow>> {
    let cfg = maps.config()?;
    let now = ct_now_ns();
    let mut out = Vec::new();
    for (table, k, e) in maps.ct_entries()? {
        let expired = cfg.ct_timeouts.expired(k.proto, &e, now);
        if expired && !all {
            continue;
        }
        let (initiator, responder) = endpoints(&k, &e);
        out.push(Flow {
            iface: iface.to_string(),
            proto: k.proto,
            initiator: initiator.to_string(),
            responder: responder.to_string(),
            origin: if e.origin == 0 { "ingress" } else { "egress" },
            state: state_name(e.state),
            table,
            age_s: now.saturating_sub(e.created_ns) as f64 / 1e9,
            idle_s: now.saturating_sub(e.last_seen_ns) as f64 / 1e9,
            expired,
            packets: e.packets,
            bytes: e.bytes,
            replied: e.flags & CT_F_SEEN_REPLY != 0,
            rule: rule_name(state, iface, &e),
        });
    }
    out.sort_by(|a, b| a.age_s.total_cmp(&b.age_s).reverse());
    Ok(out)
}

fn proto_number(p: &str) -> anyhow::Result<u8> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        n => n.parse().map_err(|_| anyhow::anyhow!("unknown protocol '{p}'"))?,
    })
}

fn matches(f: &FlushArgs, proto: Option<u8>, k: &CtKey) -> bool {
    if proto.is_some_and(|p| p != k.proto) {
        return false;
    }
    if let Some(a) = f.addr
        && addr(k.family, &k.addr_lo) != a
        && addr(k.family, &k.addr_hi) != a
    {
        return false;
    }
    if let Some(p) = f.port
        && k.port_lo != p
        && k.port_hi != p
    {
        return false;
    }
    true
}

pub fn run(args: &ConntrackArgs) -> anyhow::Result<()> {
    pins::check_root()?;
    pins::check_bpffs()?;
    match &args.op {
        ConntrackOp::List(l) => {
            let st = state::load()?;
            let mut all = Vec::new();
            for a in targets(&l.iface)? {
                all.extend(flows(&a.maps, &a.iface, st.as_ref(), l.all)?);
            }
            if l.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            println!(
                "{:<10} {:>5} {:<45} {:<45} {:<7} {:<13} {:>9} {:>9} {:>10} {:>10}  rule",
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
                    "{:<10} {:>5} {:<45} {:<45} {:<7} {:<13} {:>9.1} {:>9.1} {:>10} {:>10}  {}",
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
            let proto = f.proto.as_deref().map(proto_number).transpose()?;
            let mut n = 0;
            for mut a in targets(&f.iface)? {
                for (t, k, _) in a.maps.ct_entries()? {
                    if matches(f, proto, &k) {
                        a.maps.ct_remove(t, &k)?;
                        n += 1;
                    }
                }
            }
            println!("flushed {n} flows");
        }
        ConntrackOp::Gc(filter) => {
            let now = ct_now_ns();
            let mut n = 0;
            for mut a in targets(filter)? {
                n += a.maps.ct_gc(now)?.len();
                let st = a.maps.seen_rebuild()?;
                println!(
                    "{}: presence filter rebuilt for {} flows ({:.2}% of slots set)",
                    a.iface,
                    st.flows,
                    100.0 * f64::from(st.filled[0]) / f64::from(sg_common::conntrack::SEEN_SLOTS)
                );
            }
            println!("removed {n} expired flows");
        }
    }
    Ok(())
}
