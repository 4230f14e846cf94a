//! Policy decision for a parsed IP packet: the interface's posture, or its security groups
//! (LPM trie on the peer address, then a bounded binary search of the compiled port set).

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    Direction, IfaceConfig, PacketSummary, Posture, Reason,
    config::{POLICY_GROUPS, POLICY_POSTURE},
    packet::{
        FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PKT_LATER_FRAGMENT,
    },
    policy::{
        LPM_HDR_BITS, MAX_RULES, MAX_SEARCH_STEPS, NO_RULE, PortSetRef, SEGMENTS_PER_GEN, flow_key,
        lpm_data_v4, lpm_data_v6,
    },
};

use crate::maps::{SG_LPM_V4, SG_LPM_V6, SG_SEGMENTS};

/// A decision: its reason, and the rule-hit slot (`gen * MAX_RULES + rule`) or `NO_RULE`.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub reason: Reason,
    pub rule_slot: u32,
}

impl Verdict {
    #[inline(always)]
    pub const fn of(reason: Reason) -> Self {
        Verdict { reason, rule_slot: NO_RULE }
    }
}

#[inline(always)]
pub fn decide(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary) -> Result<Verdict, Reason> {
    match cfg.policy_mode {
        POLICY_POSTURE => posture(cfg, dir).map(Verdict::of),
        POLICY_GROUPS => groups(cfg, dir, pkt),
        _ => Err(Reason::NoConfig),
    }
}

#[inline(always)]
fn posture(cfg: &IfaceConfig, dir: Direction) -> Result<Reason, Reason> {
    let posture = match dir {
        Direction::Ingress => cfg.ingress_posture,
        Direction::Egress => cfg.egress_posture,
    };
    match Posture::from_u8(posture) {
        Some(Posture::Allow) => Ok(Reason::PostureAllow),
        Some(Posture::Deny) => Ok(Reason::PostureDeny),
        None => Err(Reason::NoConfig),
    }
}

/// The 16 low bits of the flow key: destination port (TCP/UDP), ICMP type and code (ICMP on
/// IPv4, ICMPv6 on IPv6), 0 for any other protocol.
#[inline(always)]
fn key_low16(pkt: &PacketSummary) -> u16 {
    match (pkt.proto, pkt.family) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => pkt.dport,
        (IPPROTO_ICMP, FAMILY_IPV4) | (IPPROTO_ICMPV6, FAMILY_IPV6) => {
            (u16::from(pkt.icmp_type) << 8) | u16::from(pkt.icmp_code)
        }
        _ => 0,
    }
}

#[inline(always)]
fn port_set(gen_: u8, dir: Direction, pkt: &PacketSummary) -> Option<PortSetRef> {
    // The peer: source address of ingress packets, destination of egress packets.
    let peer = match dir {
        Direction::Ingress => &pkt.src,
        Direction::Egress => &pkt.dst,
    };
    if pkt.family == FAMILY_IPV4 {
        let addr = [peer[0], peer[1], peer[2], peer[3]];
        let key = Key::new(LPM_HDR_BITS + 32, lpm_data_v4(gen_, dir as u32, addr));
        SG_LPM_V4.get(&key).copied()
    } else {
        let key = Key::new(LPM_HDR_BITS + 128, lpm_data_v6(gen_, dir as u32, *peer));
        SG_LPM_V6.get(&key).copied()
    }
}

#[inline(always)]
fn groups(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary) -> Result<Verdict, Reason> {
    if pkt.flags & PKT_LATER_FRAGMENT != 0 {
        return Ok(Verdict::of(Reason::FragmentNoPorts));
    }
    let gen_ = cfg.active_gen & 1;
    let Some(set) = port_set(gen_, dir, pkt) else {
        return Ok(Verdict::of(Reason::NoRule));
    };
    if set.count > SEGMENTS_PER_GEN || set.start > SEGMENTS_PER_GEN - set.count {
        return Err(Reason::InternalError);
    }
    let key = flow_key(pkt.proto, key_low16(pkt));
    let base = u32::from(gen_) * SEGMENTS_PER_GEN;
    let mut lo = set.start;
    let mut hi = set.start + set.count;
    for _ in 0..MAX_SEARCH_STEPS {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let seg = SG_SEGMENTS.get(base + mid).ok_or(Reason::InternalError)?;
        if key < seg.lo {
            hi = mid;
        } else if key > seg.hi {
            lo = mid + 1;
        } else {
            if seg.rule >= MAX_RULES {
                return Err(Reason::InternalError);
            }
            return Ok(Verdict {
                reason: Reason::RuleAllow,
                rule_slot: u32::from(gen_) * MAX_RULES + seg.rule,
            });
        }
    }
    Ok(Verdict::of(Reason::NoRule))
}
