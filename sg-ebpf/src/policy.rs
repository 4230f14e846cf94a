//! The rule lookup of security groups: the peer address (source on ingress, destination on
//! egress) in the prefix table of its generation, direction and family gives the compiled port
//! set of every rule covering it (`sg_common::policy`); a bounded binary search of that set's
//! segments finds the first rule (file order) allowing the packet's flow key (protocol, then
//! port or ICMP type and code). Array lookups only (the verifier inlines them: no call): a root
//! slot, at most `MAX_WALK` nodes and tips, the port set, at most `MAX_SEARCH_STEPS` segments,
//! whatever the number of rules.
//!
//! The network ACL ([`acl`]) is the same walk in its own layer of root tables, then the same
//! search: the segment found names the deciding entry (and whether it denies); none found is
//! the ACL's implicit final deny.

use sg_common::{
    Direction, PacketSummary, Reason,
    packet::{FAMILY_IPV4, FAMILY_IPV6},
    policy::{
        ACL_DENY, LAYER_ACL, LAYER_GROUPS, MAX_ACL_ENTRIES, MAX_RULES, MAX_SEARCH_STEPS, MAX_WALK,
        PortSetRef, SEGMENTS_PER_GEN, SLOT_KIND, SLOT_NODE, SLOT_SET, SLOT_TIP, Slot, acl_slot, addr_byte,
        flow_key, pool_index, root_index, root_slot, rule_slot,
    },
};

use crate::maps::{SG_PFX_NODES, SG_PFX_ROOT, SG_PFX_TIPS, SG_PORT_SETS, SG_SEGMENTS};

/// The 16 low bits of the packet's flow key ([`sg_common::policy::key_low16`]).
#[inline(always)]
pub fn key_low16(pkt: &PacketSummary) -> u16 {
    sg_common::policy::key_low16(pkt.family, pkt.proto, pkt.dport, pkt.icmp_type, pkt.icmp_code)
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
fn port_set(
    gen_: u8,
    layer: u32,
    dir: Direction,
    family: u8,
    peer: &[u64; 2],
) -> Result<Option<PortSetRef>, Reason> {
    let root = SG_PFX_ROOT
        .get(root_index(gen_, layer, dir as u32, family != FAMILY_IPV4))
        .ok_or(Reason::InternalError)?;
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

/// The `rule` of the segment of port set `set` (generation `gen_`) holding flow key `key`, if
/// any. A set or segment out of bounds is an `InternalError`.
#[inline(always)]
fn search(gen_: u8, set: PortSetRef, key: u32) -> Result<Option<u32>, Reason> {
    if set.count > SEGMENTS_PER_GEN || set.start > SEGMENTS_PER_GEN - set.count {
        return Err(Reason::InternalError);
    }
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
            return Ok(Some(seg.rule));
        }
    }
    Ok(None)
}

/// `sg_prefix_lookup`'s answer when no prefix or no segment holds the packet.
const FOUND_NONE: u64 = 0;
/// `sg_prefix_lookup`'s answer for a table it cannot read: `internal_error`.
const FOUND_ERROR: u64 = u64::MAX;

/// The prefix walk and the segment search of one layer, as a global function: the verifier
/// checks it once on its own, not once for every path of the pipeline that reaches a lookup
/// (both programs call it for the groups and for the ACL). Arguments: the peer's address
/// words, and `gen_ | layer << 1 | dir << 2 | v6 << 3 | key << 8` (the 24-bit flow key).
/// Returns [`FOUND_NONE`], [`FOUND_ERROR`] or the segment's `rule` + 1.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_prefix_lookup(w0: u64, w1: u64, packed: u64) -> u64 {
    let gen_ = (packed & 1) as u8;
    let layer = ((packed >> 1) & 1) as u32;
    let dir = if (packed >> 2) & 1 == 0 { Direction::Ingress } else { Direction::Egress };
    let family = if (packed >> 3) & 1 == 0 { FAMILY_IPV4 } else { FAMILY_IPV6 };
    let key = ((packed >> 8) & 0x00ff_ffff) as u32;
    let found = match port_set(gen_, layer, dir, family, &[w0, w1]) {
        Ok(Some(set)) => search(gen_, set, key),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(rule)) => u64::from(rule) + 1,
        Ok(None) => FOUND_NONE,
        Err(_) => FOUND_ERROR,
    }
}

/// The `rule` of the segment holding the packet in `layer` of generation `gen_`, if any.
#[inline(always)]
fn find(
    gen_: u8,
    layer: u32,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u64; 2],
    low16: u16,
) -> Result<Option<u32>, Reason> {
    let packed = u64::from(gen_ & 1)
        | u64::from(layer & 1) << 1
        | (dir as u64 & 1) << 2
        | u64::from(family != FAMILY_IPV4) << 3
        | u64::from(flow_key(proto, low16)) << 8;
    match sg_prefix_lookup(peer[0], peer[1], packed) {
        FOUND_NONE => Ok(None),
        FOUND_ERROR => Err(Reason::InternalError),
        n => Ok(Some((n - 1) as u32)),
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
    match find(gen_, LAYER_GROUPS, dir, family, proto, peer, low16)? {
        Some(rule) if rule >= MAX_RULES => Err(Reason::InternalError),
        Some(rule) => Ok(Some(rule_slot(gen_, rule))),
        None => Ok(None),
    }
}

/// What the network ACL of generation `gen_` says of a packet.
#[derive(Clone, Copy)]
pub enum AclHit {
    /// Allowed by the entry with this ACL slot (`policy::acl_slot`).
    Allow(u32),
    /// Denied by the entry with this ACL slot.
    Deny(u32),
    /// No entry matches: the implicit final deny.
    Default,
}

/// The network ACL's verdict on (`dir`, `proto`, `low16`) with `peer` as the remote address:
/// the lowest-numbered matching entry (the compiler labelled every key with it).
#[inline(always)]
pub fn acl(
    gen_: u8,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u64; 2],
    low16: u16,
) -> Result<AclHit, Reason> {
    let Some(rule) = find(gen_, LAYER_ACL, dir, family, proto, peer, low16)? else {
        return Ok(AclHit::Default);
    };
    let entry = rule & !ACL_DENY;
    if entry >= MAX_ACL_ENTRIES {
        return Err(Reason::InternalError);
    }
    let slot = acl_slot(gen_, entry);
    Ok(if rule & ACL_DENY != 0 { AclHit::Deny(slot) } else { AclHit::Allow(slot) })
}
