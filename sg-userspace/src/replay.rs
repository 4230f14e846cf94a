//! Replaying a capture: every packet of a pcap through the real datapath programs
//! (BPF_PROG_TEST_RUN) of a private instance holding candidate rules, in capture order, with
//! conntrack carried across the capture; the verdicts, the hits of each rule, and every flow
//! that would be dropped with its reason (`sgctl replay`). Nothing is attached: live
//! interfaces, their maps and counters are untouched.
//!
//! A packet's direction: the capture's own (Linux cooked captures, `tcpdump -i any`, say
//! whether a packet was outgoing); else [`Options::local`]: a packet to a local address is
//! ingress, from one egress; else [`Options::role`]. Captures: pcap (not pcapng), link types
//! Ethernet, Linux cooked (SLL) and raw IP. Capture timestamps are not replayed: conntrack sees
//! the packets back to back, so no flow expires during a replay.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use etherparse::{LaxNetSlice, LaxSlicedPacket};
use ipnet::IpNet;
use pcap_file::{DataLink, pcap::PcapReader};
use serde::Serialize;
use sg_common::{Action, Direction, IfaceConfig, Reason, config::CONFIG_RECORD_PARSE};

use crate::{
    error::{Context as _, Error, Result},
    layer::Layer,
    loader::PrivateInstance,
    names::{addr, proto_name},
    pins,
    rules::{RuleSet, compile},
};

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
    /// With a network ACL: every entry with the packets it decided (allowed or denied; an
    /// ACL is stateless, so every packet counts).
    pub acl_hits: Vec<crate::hits::AclStat>,
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

/// A packet's direction: the capture's own, else by `--local`, else the default role.
fn direction(opts: &Options<'_>, frame: &[u8], given: Option<Direction>) -> Direction {
    if let Some(d) = given {
        return d;
    }
    if let Some((src, dst)) = addrs(frame) {
        if opts.local.iter().any(|n| n.contains(&dst)) {
            return Direction::Ingress;
        }
        if opts.local.iter().any(|n| n.contains(&src)) {
            return Direction::Egress;
        }
    }
    opts.role
}

/// What to replay, through which rules.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// The capture (pcap).
    pub capture: &'a Path,
    /// The candidate rules, and the name of their file (for the report).
    pub rules: &'a RuleSet,
    pub rules_name: &'a str,
    /// Whose rules, when the file binds several interfaces.
    pub iface: Option<&'a str>,
    /// The direction of packets neither the capture nor `local` places.
    pub role: Direction,
    /// This host's addresses: packets to them are ingress, from them egress.
    pub local: &'a [IpNet],
}

fn usage(what: String, detail: &str) -> Error {
    Error::Usage { what, detail: detail.to_string() }
}

/// Runs the capture through a private instance holding the rules (see the module
/// documentation).
pub fn replay(opts: &Options<'_>) -> Result<ReplayReport> {
    pins::check_root()?;
    let rs = opts.rules;
    let name = opts.rules_name;
    let iface = match (opts.iface, rs.interfaces.as_slice()) {
        (Some(i), _) if rs.binding(i).is_some() => i.to_string(),
        (Some(i), _) => {
            return Err(usage(format!("{name} binds no groups to {i}"), "choose another --iface"));
        }
        (None, [one]) => one.iface.clone(),
        (None, []) => return Err(usage(format!("{name} binds no groups to any interface"), "bind some")),
        (None, _) => {
            return Err(usage(format!("{name} binds several interfaces"), "choose one with --iface"));
        }
    };
    let plan = compile::compile_iface(rs, &iface)?;
    let mut inst =
        PrivateInstance::load(&IfaceConfig { flags: CONFIG_RECORD_PARSE, ..IfaceConfig::default() })?;
    inst.apply_plan(&plan, 1)?;
    let gen_ = inst.maps().config()?.active_gen & 1;

    let capture_error = |detail: String| Error::Capture { path: opts.capture.to_path_buf(), detail };
    let file = std::fs::File::open(opts.capture).context(|| format!("opening {}", opts.capture.display()))?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file)).map_err(|e| {
        capture_error(format!("not a pcap capture ({e}; pcapng: convert with `editcap -F pcap`)"))
    })?;
    let link = reader.header().datalink;
    let (mut packets, mut skipped, mut dropped, mut n) = (0u64, 0u64, 0u64, 0u64);
    // Per dropped flow (direction, family, proto, src, dst, sport, dport, reason): its first
    // packet's number and how many were dropped.
    type FlowKey = (u8, u8, u8, [u8; 16], [u8; 16], u16, u16, u32);
    let mut drops: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
    while let Some(p) = reader.next_packet() {
        let p = p.map_err(|e| capture_error(format!("packet {}: {e}", n + 1)))?;
        n += 1;
        let Some((frame, given)) = to_ethernet(link, &p.data).filter(|(f, _)| f.len() >= 14) else {
            skipped += 1;
            continue;
        };
        let dir = direction(opts, &frame, given);
        let before = inst.maps().last_parse()?.seq;
        inst.run(dir, &frame)?;
        let s = inst.maps().last_parse()?;
        if s.seq == before {
            return Err(Error::Inconsistent {
                iface: "(replay instance)".into(),
                detail: format!("packet {n}: the datapath recorded no verdict"),
            });
        }
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
            group: r.group.clone(),
            direction: r.dir.as_str(),
            index: r.rule.index,
            rule: r.rule.describe(r.dir),
            location: r.rule.loc.to_string(),
            hits: inst.maps().hits(Layer::Rules, gen_, id as u32)?,
        });
    }
    let acl_hits = match rs.iface_acl(&iface) {
        Some(acl) => {
            let totals = (0..acl.by_id().count() as u32)
                .map(|id| inst.maps().hits(Layer::Acl, gen_, id))
                .collect::<Result<Vec<_>>>()?;
            crate::hits::acl_rows(&iface, acl, totals)
        }
        None => Vec::new(),
    };
    Ok(ReplayReport {
        capture: opts.capture.display().to_string(),
        rules: name.to_string(),
        iface,
        packets,
        skipped,
        dropped,
        verdicts,
        rules_hits,
        acl_hits,
        drops: drop_list,
    })
}

fn reason_of(r: u32) -> Reason {
    Reason::from_u32(r).unwrap_or(Reason::InternalError)
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
