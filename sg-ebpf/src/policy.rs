//! The rule lookup of security groups: the peer address (source on ingress, destination on
//! egress) in the prefix table of its generation, direction and family gives the compiled port
//! set of every rule covering it (`sg_common::policy`); a bounded binary search of that set's
//! segments finds the first rule (file order) allowing the packet's flow key (protocol, then
//! port or ICMP type and code). Both steps are `sg_common::lookup`'s, shared with userspace;
//! this file says where the datapath's tables are. Array lookups only (the verifier inlines them: no call): a root
//! slot, at most `MAX_WALK` nodes and tips, the port set, at most `MAX_SEARCH_STEPS` segments,
//! whatever the number of rules.
//!
//! The network ACL ([`acl`]) is the same walk in its own layer of root tables, then the same
//! search: the segment found names the deciding entry (and whether it denies); none found is
//! the ACL's implicit final deny.

use sg_common::{
    Direction, PacketSummary, Reason,
    lookup::{Found, LookupArg, PrefixPool, SegmentPool, find},
    packet::FAMILY_IPV4,
    policy::{
        ACL_DENY, LAYER_ACL, LAYER_GROUPS, MAX_ACL_ENTRIES, MAX_RULES, PortSetRef, PrefixNode, PrefixRoot,
        PrefixTip, SEGMENTS_PER_GEN, Segment, acl_slot, flow_key, pool_index, root_index, rule_slot,
    },
};

use crate::maps::{SG_PFX_NODES, SG_PFX_ROOT, SG_PFX_TIPS, SG_PORT_SETS, SG_SEGMENTS};

/// The 16 low bits of the packet's flow key ([`sg_common::policy::key_low16`]).
#[inline(always)]
pub fn key_low16(pkt: &PacketSummary) -> u16 {
    sg_common::policy::key_low16(pkt.family, pkt.proto, pkt.dport, pkt.icmp_type, pkt.icmp_code)
}

/// The tables of generation `gen_` in the datapath's array maps, read by the shared walk and
/// search (`sg_common::lookup`): generation-local indices interleave in the pools
/// (`pool_index`) and take the generation's half of `SG_SEGMENTS`.
struct Maps {
    gen_: u8,
}

impl PrefixPool for Maps {
    #[inline(always)]
    fn root(&self, layer: u32, dir: u32, v6: bool) -> Option<&PrefixRoot> {
        SG_PFX_ROOT.get(root_index(self.gen_, layer, dir, v6))
    }

    #[inline(always)]
    fn node(&self, at: u32) -> Option<&PrefixNode> {
        SG_PFX_NODES.get(pool_index(self.gen_, at))
    }

    #[inline(always)]
    fn tip(&self, at: u32) -> Option<&PrefixTip> {
        SG_PFX_TIPS.get(pool_index(self.gen_, at))
    }

    #[inline(always)]
    fn set(&self, at: u32) -> Option<PortSetRef> {
        SG_PORT_SETS.get(pool_index(self.gen_, at)).copied()
    }
}

impl SegmentPool for Maps {
    #[inline(always)]
    fn segment(&self, at: u32) -> Option<&Segment> {
        SG_SEGMENTS.get(u32::from(self.gen_) * SEGMENTS_PER_GEN + at)
    }
}

/// The prefix walk and the segment search of one layer (`sg_common::lookup::find`), as a
/// global function: the verifier checks it once on its own, not once for every path of the
/// pipeline that reaches a lookup (both programs call it for the groups and for the ACL).
/// Arguments: the peer's address words and a packed [`LookupArg`]; the answer is a packed
/// [`Found`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_prefix_lookup(w0: u64, w1: u64, packed: u64) -> u64 {
    let arg = LookupArg::unpack(packed);
    Found::pack(find(&Maps { gen_: arg.gen_ }, arg, &[w0, w1]))
}

/// The `rule` of the segment holding the packet in `layer` of generation `gen_`, if any.
#[inline(always)]
fn find_in(
    gen_: u8,
    layer: u32,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u64; 2],
    low16: u16,
) -> Result<Option<u32>, Reason> {
    let arg =
        LookupArg { gen_, layer, dir: dir as u32, v6: family != FAMILY_IPV4, key: flow_key(proto, low16) };
    Found::unpack(sg_prefix_lookup(peer[0], peer[1], arg.pack())).map_err(|_| Reason::InternalError)
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
    match find_in(gen_, LAYER_GROUPS, dir, family, proto, peer, low16)? {
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
    let Some(rule) = find_in(gen_, LAYER_ACL, dir, family, proto, peer, low16)? else {
        return Ok(AclHit::Default);
    };
    let entry = rule & !ACL_DENY;
    if entry >= MAX_ACL_ENTRIES {
        return Err(Reason::InternalError);
    }
    let slot = acl_slot(gen_, entry);
    Ok(if rule & ACL_DENY != 0 { AclHit::Deny(slot) } else { AclHit::Allow(slot) })
}
