//! `sgctl replay CAPTURE --rules FILE [--iface IF] [--iface-role ingress|egress]
//! [--local PREFIX]... [--json] [--fail-on-drop]`: runs every packet of a capture through the
//! real datapath programs (BPF_PROG_TEST_RUN) of a private instance holding the candidate
//! rules, in capture order, with conntrack carried across the capture, and reports the
//! verdicts, the hits of each rule, and every flow that would be dropped with its reason.
//! Nothing is attached: live interfaces, their maps and counters are untouched.
//!
//! A packet's direction: the capture's own (Linux cooked captures, `tcpdump -i any`, say
//! whether a packet was outgoing); else `--local`: a packet to a local address is ingress,
//! from one egress; else `--iface-role` (default ingress). Captures: pcap (not pcapng: convert
//! with `editcap -F pcap`), link types Ethernet, Linux cooked (SLL) and raw IP. Capture
//! timestamps are not replayed: conntrack sees the packets back to back, so no flow expires
//! during a replay.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::Args;
use etherparse::{LaxNetSlice, LaxSlicedPacket};
use ipnet::IpNet;
use pcap_file::{DataLink, pcap::PcapReader};
use serde::Serialize;
use sg_common::{Action, Direction, IfaceConfig, Reason, config::CONFIG_RECORD_PARSE};

use crate::{
    cli::{
        apply::AwsInput,
        conntrack::{addr, proto_name},
    },
    loader::PrivateInstance,
    pins,
    rules::{self, Format, compile},
};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture (pcap).
    pub capture: PathBuf,
    /// The candidate rules file.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Toml)]
    pub format: Format,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Whose rules to use, when the file binds several interfaces.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Direction of the packets neither the capture nor --local places.
    #[arg(long, value_enum, default_value_t = Role::Ingress)]
    pub iface_role: Role,
    /// This host's addresses (repeatable): packets to them are ingress, from them egress.
    #[arg(long, value_name = "PREFIX")]
    pub local: Vec<IpNet>,
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 if any packet would be dropped (a gate for CI pipelines).
    #[arg(long)]
    pub fail_on_drop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Ingress,
    Egress,
}

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub capture: String,
    pub rules: String,
    pub iface: String,
    /// Packets run through the programs, and frames skipped (link type not understood).
    pub packets: u64,
    pub skipped: u64,
    pub dropped: u64,
    /// Packets per (direction, reason) that occurred.
    pub verdicts: Vec<VerdictCount>,
    /// Every rule of the interface with the packets it allowed (flow starts; the rest of a
    /// flow passes as ct_established / ct_reply).
    pub rules_hits: Vec<RuleHits>,
    /// Every flow with a dropped packet, in order of its first drop.
    pub drops: Vec<DropFlow>,
}

#[derive(Debug, Serialize)]
pub struct VerdictCount {
    pub direction: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct RuleHits {
    pub id: usize,
    pub group: String,
    pub direction: &'static str,
    pub index: usize,
    pub rule: String,
    pub location: String,
    pub hits: u64,
}

#[derive(Debug, Serialize, Clone)]
pub struct DropFlow {
    pub direction: &'static str,
    pub proto: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub reason: &'static str,
    pub packets: u64,
    /// 1-based number of the first dropped packet in the capture.
    pub first_packet: u64,
}

/// Linux cooked capture (SLL) packet types.
const SLL_OUTGOING: u16 = 4;

/// The frame as Ethernet, and the direction the capture gives it (if any).
fn to_ethernet(link: DataLink, data: &[u8]) -> Option<(Vec<u8>, Option<Direction>)> {
    let eth = |ethertype: [u8; 2], l3: &[u8]| {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, ethertype[0], ethertype[1]];
        f.extend_from_slice(l3);
        f
    };
    match link {
        DataLink::ETHERNET => Some((data.to_vec(), None)),
        // 16-byte header: packet type, ARPHRD, address length, address (8), protocol.
        DataLink::LINUX_SLL if data.len() >= 16 => {
            let ptype = u16::from_be_bytes([data[0], data[1]]);
            let dir = if ptype == SLL_OUTGOING { Direction::Egress } else { Direction::Ingress };
            Some((eth([data[14], data[15]], &data[16..]), Some(dir)))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => match data.first().map(|b| b >> 4) {
            Some(4) => Some((eth([0x08, 0x00], data), None)),
            Some(6) => Some((eth([0x86, 0xdd], data), None)),
            _ => None,
        },
        _ => None,
    }
}

fn addrs(frame: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match LaxSlicedPacket::from_ethernet(frame).ok()?.net? {
        LaxNetSlice::Ipv4(s) => Some((s.header().source_addr().into(), s.header().destination_addr().into())),
        LaxNetSlice::Ipv6(s) => Some((s.header().source_addr().into(), s.header().destination_addr().into())),
        LaxNetSlice::Arp(_) => None,
    }
}

fn direction(args: &ReplayArgs, frame: &[u8], given: Option<Direction>) -> Direction {
    if let Some(d) = given {
        return d;
    }
    if let Some((src, dst)) = addrs(frame) {
        if args.local.iter().any(|n| n.contains(&dst)) {
            return Direction::Ingress;
        }
        if args.local.iter().any(|n| n.contains(&src)) {
            return Direction::Egress;
        }
    }
    match args.iface_role {
        Role::Ingress => Direction::Ingress,
        Role::Egress => Direction::Egress,
    }
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<ReplayReport> {
    pins::check_root()?;
    let rs = rules::load(&args.rules, args.format, &args.aws.context()?)?;
    let iface = match (&args.iface, rs.interfaces.as_slice()) {
        (Some(i), _) if rs.binding(i).is_some() => i.clone(),
        (Some(i), _) => anyhow::bail!("{} binds no groups to {i}", args.rules.display()),
        (None, [one]) => one.iface.clone(),
        (None, []) => anyhow::bail!("{} binds no groups to any interface", args.rules.display()),
        (None, _) => {
            anyhow::bail!("{} binds several interfaces: choose one with --iface", args.rules.display())
        }
    };
    let plan = compile::compile_iface(&rs, &iface)?;
    let mut inst =
        PrivateInstance::load(&IfaceConfig { flags: CONFIG_RECORD_PARSE, ..IfaceConfig::default() })?;
    inst.apply_plan(&plan, 1)?;
    let gen_ = inst.maps().config()?.active_gen & 1;

    let file =
        std::fs::File::open(&args.capture).with_context(|| format!("opening {}", args.capture.display()))?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file)).with_context(|| {
        format!("{}: not a pcap capture (pcapng: convert with `editcap -F pcap`)", args.capture.display())
    })?;
    let link = reader.header().datalink;
    let (mut packets, mut skipped, mut dropped, mut n) = (0u64, 0u64, 0u64, 0u64);
    // Per dropped flow (direction, family, proto, src, dst, sport, dport, reason): its first
    // packet's number and how many were dropped.
    type FlowKey = (u8, u8, u8, [u8; 16], [u8; 16], u16, u16, u32);
    let mut drops: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
    while let Some(p) = reader.next_packet() {
        let p = p.with_context(|| format!("{}: packet {}", args.capture.display(), n + 1))?;
        n += 1;
        let Some((frame, given)) = to_ethernet(link, &p.data).filter(|(f, _)| f.len() >= 14) else {
            skipped += 1;
            continue;
        };
        let dir = direction(args, &frame, given);
        let before = inst.maps().last_parse()?.seq;
        inst.run(dir, &frame)?;
        let s = inst.maps().last_parse()?;
        anyhow::ensure!(s.seq != before, "packet {n}: the datapath recorded no verdict");
        packets += 1;
        if reason_of(s.reason).action() == Action::Drop {
            dropped += 1;
            let key = (dir as u8, s.family, s.proto, s.src, s.dst, s.sport, s.dport, s.reason);
            drops.entry(key).or_insert((n, 0)).1 += 1;
        }
    }
    let mut drop_list: Vec<DropFlow> = drops
        .into_iter()
        .map(|((dir, family, proto, src, dst, sport, dport, reason), (at, count))| DropFlow {
            direction: if dir == Direction::Ingress as u8 { "ingress" } else { "egress" },
            proto: proto_name(proto),
            src: addr(family, &src),
            dst: addr(family, &dst),
            sport,
            dport,
            reason: reason_of(reason).name(),
            packets: count,
            first_packet: at,
        })
        .collect();
    drop_list.sort_by_key(|d| d.first_packet);
    let verdicts = inst
        .maps()
        .counters()?
        .into_iter()
        .filter(|c| c.packets > 0)
        .map(|c| VerdictCount {
            direction: c.direction,
            reason: c.reason,
            action: c.action,
            packets: c.packets,
        })
        .collect();
    let mut rules_hits = Vec::new();
    for (id, r) in plan.rules.iter().enumerate() {
        rules_hits.push(RuleHits {
            id,
            group: r.group.clone(),
            direction: r.dir.as_str(),
            index: r.rule.index,
            rule: r.rule.describe(r.dir),
            location: r.rule.loc.to_string(),
            hits: inst.maps().rule_hits(gen_, id as u32)?,
        });
    }
    Ok(ReplayReport {
        capture: args.capture.display().to_string(),
        rules: args.rules.display().to_string(),
        iface,
        packets,
        skipped,
        dropped,
        verdicts,
        rules_hits,
        drops: drop_list,
    })
}

fn reason_of(r: u32) -> Reason {
    Reason::from_u32(r).unwrap_or(Reason::InternalError)
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let r = replay(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: {} packets through the rules of {} in {} ({} dropped, {} frames skipped)",
            r.capture, r.packets, r.iface, r.rules, r.dropped, r.skipped
        );
        println!("\nverdicts:");
        for v in &r.verdicts {
            println!("  {:<8} {:<22} {:<5} {:>10}", v.direction, v.reason, v.action, v.packets);
        }
        println!("\nrule hits:");
        for h in &r.rules_hits {
            println!(
                "  {:>10}  {} {} #{}: {}  ({})",
                h.hits, h.group, h.direction, h.index, h.rule, h.location
            );
        }
        println!("\ndropped flows:");
        if r.drops.is_empty() {
            println!("  none");
        }
        for d in &r.drops {
            println!(
                "  packet {:>6}  {:<7} {:<6} {} -> {}  {:<20} x{}",
                d.first_packet,
                d.direction,
                d.proto,
                std::net::SocketAddr::new(d.src, d.sport),
                std::net::SocketAddr::new(d.dst, d.dport),
                d.reason,
                d.packets
            );
        }
    }
    if args.fail_on_drop && r.dropped > 0 {
        anyhow::bail!("{} packets would be dropped", r.dropped);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_cooked_frames_become_ethernet_with_their_direction() {
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&[0x45, 0, 0, 20]);
        let (eth, dir) = to_ethernet(DataLink::LINUX_SLL, &sll).unwrap();
        assert_eq!(dir, Some(Direction::Egress));
        assert_eq!(&eth[12..], &[0x08, 0x00, 0x45, 0, 0, 20]);
        sll[1] = 0; // to us
        assert_eq!(to_ethernet(DataLink::LINUX_SLL, &sll).unwrap().1, Some(Direction::Ingress));
        let (eth, dir) = to_ethernet(DataLink::RAW, &[0x60, 0, 0, 0]).unwrap();
        assert_eq!((dir, &eth[12..14]), (None, &[0x86, 0xdd][..]));
        assert!(to_ethernet(DataLink::RAW, &[0x10]).is_none());
        assert!(to_ethernet(DataLink::LINUX_SLL, &[0; 10]).is_none());
    }
}
