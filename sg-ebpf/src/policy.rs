//! The rule lookup of security groups: the peer address (source on ingress, destination on
//! egress) in the LPM trie of its family gives the compiled port set of every rule covering it
//! (`sg_common::policy`); a bounded binary search of that set's segments finds the first rule
//! (file order) allowing the packet's flow key (protocol, then port or ICMP type and code).
//! One trie lookup and at most `MAX_SEARCH_STEPS` array lookups, whatever the number of rules.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    Direction, PacketSummary, Reason,
    packet::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    policy::{
        LPM_HDR_BITS, MAX_RULES, MAX_SEARCH_STEPS, PortSetRef, SEGMENTS_PER_GEN, flow_key, lpm_data_v4,
        lpm_data_v6, rule_slot,
    },
};

use crate::maps::{SG_LPM_V4, SG_LPM_V6, SG_SEGMENTS};

/// The 16 low bits of the flow key: destination port (TCP/UDP), ICMP type and code (ICMP on
/// IPv4, ICMPv6 on IPv6), 0 for any other protocol.
#[inline(always)]
pub fn key_low16(pkt: &PacketSummary) -> u16 {
    match (pkt.proto, pkt.family) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => pkt.dport,
        (IPPROTO_ICMP, FAMILY_IPV4) | (IPPROTO_ICMPV6, FAMILY_IPV6) => {
            (u16::from(pkt.icmp_type) << 8) | u16::from(pkt.icmp_code)
        }
        _ => 0,
    }
}

/// The port set of the longest prefix covering `peer` in generation `gen_`, direction `dir`.
#[inline(always)]
fn port_set(gen_: u8, dir: Direction, family: u8, peer: &[u8; 16]) -> Option<PortSetRef> {
    if family == FAMILY_IPV4 {
        let addr = [peer[0], peer[1], peer[2], peer[3]];
        let key = Key::new(LPM_HDR_BITS + 32, lpm_data_v4(gen_, dir as u32, addr));
        SG_LPM_V4.get(&key).copied()
    } else {
        let key = Key::new(LPM_HDR_BITS + 128, lpm_data_v6(gen_, dir as u32, *peer));
        SG_LPM_V6.get(&key).copied()
    }
}

/// The rule-hit slot of the first rule of generation `gen_` allowing (`dir`, `proto`, flow-key
/// low bits `low16`) with `peer` as the remote address; `None` when none does. A port set or
/// segment out of bounds is an `InternalError` (fail closed).
#[inline(always)]
pub fn lookup(
    gen_: u8,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u8; 16],
    low16: u16,
) -> Result<Option<u32>, Reason> {
    let Some(set) = port_set(gen_, dir, family, peer) else {
        return Ok(None);
    };
    if set.count > SEGMENTS_PER_GEN || set.start > SEGMENTS_PER_GEN - set.count {
        return Err(Reason::InternalError);
    }
    let key = flow_key(proto, low16);
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
            return Ok(Some(rule_slot(gen_, seg.rule)));
        }
    }
    Ok(None)
}
