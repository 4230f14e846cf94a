//! The rule lookup of security groups: the peer address (source on ingress, destination on
//! egress) in the prefix table of its generation, direction and family gives the compiled port
//! set of every rule covering it (`sg_common::policy`); a bounded binary search of that set's
//! segments finds the first rule (file order) allowing the packet's flow key (protocol, then
//! port or ICMP type and code). Array lookups only (the verifier inlines them: no call): a root
//! slot, at most `MAX_WALK` nodes and tips, the port set, at most `MAX_SEARCH_STEPS` segments,
//! whatever the number of rules.

use sg_common::{
    Direction, PacketSummary, Reason,
    packet::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    policy::{
        MAX_RULES, MAX_SEARCH_STEPS, MAX_WALK, PortSetRef, SEGMENTS_PER_GEN, SLOT_KIND, SLOT_NODE, SLOT_SET,
        SLOT_TIP, Slot, addr_byte, flow_key, pool_index, root_index, root_slot, rule_slot,
    },
};

use crate::maps::{SG_PFX_NODES, SG_PFX_ROOT, SG_PFX_TIPS, SG_PORT_SETS, SG_SEGMENTS};

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

/// Do the address words match a prefix (`mask`, `key`)?
#[inline(always)]
fn within(peer: &[u64; 2], mask: &[u64; 2], key: &[u64; 2]) -> bool {
    peer[0] & mask[0] == key[0] && peer[1] & mask[1] == key[1]
}

/// The port set of the longest prefix covering `peer` (as words, see `addr_byte`) in
/// generation `gen_`, direction `dir`: `Ok(None)` when no prefix covers it. A slot past the
/// end of its map, or a walk longer than any table the compiler builds, is an `InternalError`.
#[inline(always)]
fn port_set(gen_: u8, dir: Direction, family: u8, peer: &[u64; 2]) -> Result<Option<PortSetRef>, Reason> {
    let root =
        SG_PFX_ROOT.get(root_index(gen_, dir as u32, family != FAMILY_IPV4)).ok_or(Reason::InternalError)?;
    let mut slot: Slot = root[root_slot(peer)];
    for _ in 0..MAX_WALK {
        let at = pool_index(gen_, slot & !SLOT_KIND);
        match slot & SLOT_KIND {
            SLOT_NODE => {
                let node = SG_PFX_NODES.get(at).ok_or(Reason::InternalError)?;
                slot = if within(peer, &node.mask, &node.key) {
                    node.slots[usize::from(addr_byte(peer, node.byte))]
                } else {
                    node.miss
                };
            }
            SLOT_TIP => {
                let tip = SG_PFX_TIPS.get(at).ok_or(Reason::InternalError)?;
                slot = if within(peer, &tip.mask, &tip.key) { tip.inside } else { tip.outside };
            }
            _ => break,
        }
    }
    if slot & SLOT_KIND != SLOT_SET {
        return Err(Reason::InternalError);
    }
    match slot {
        0 => Ok(None),
        n => Ok(Some(*SG_PORT_SETS.get(pool_index(gen_, n - 1)).ok_or(Reason::InternalError)?)),
    }
}

/// The rule-hit slot of the first rule of generation `gen_` allowing (`dir`, `proto`, flow-key
/// low bits `low16`) with `peer` (the remote address, as words) as the remote address; `None`
/// when none does. A port set or segment out of bounds is an `InternalError` (fail closed).
#[inline(always)]
pub fn lookup(
    gen_: u8,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u64; 2],
    low16: u16,
) -> Result<Option<u32>, Reason> {
    let Some(set) = port_set(gen_, dir, family, peer)? else {
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
