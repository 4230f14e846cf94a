//! Compiled security-group policy as the datapath reads it.
//!
//! Per interface and generation (0/1), per direction and family, a prefix table (below) maps
//! the peer address (source on ingress, destination on egress), by longest prefix, to a
//! [`PortSetRef`]: a slice of `SG_SEGMENTS`. The slice is the compiled union of every rule whose CIDR covers the matched
//! prefix: disjoint, sorted [`Segment`]s over the 24-bit [`flow_key`] (protocol, then port or
//! ICMP type/code), each carrying the first rule (file order) that allows it. A packet is
//! allowed when its key falls in a segment; the network ACL's layer has tables of its own
//! ([`LAYER_ACL`]) whose segments carry the deciding entry instead; the lookup costs at most `2 + MAX_WALK` array
//! reads (IPv4: 7) and a binary search, whatever the number of rules.

/// Policy generations: userspace writes the inactive one, then flips `IfaceConfig::active_gen`.
pub const GENERATIONS: u32 = 2;
/// Rule ids per generation (a rule = one entry of a group's ingress or egress list).
pub const MAX_RULES: u32 = 16384;
/// Segment slots per generation in `SG_SEGMENTS`.
pub const SEGMENTS_PER_GEN: u32 = 131_072;
/// Binary-search steps: enough for `SEGMENTS_PER_GEN` segments in one port set.
pub const MAX_SEARCH_STEPS: u32 = 18;

const _: () = assert!(1 << MAX_SEARCH_STEPS > SEGMENTS_PER_GEN);

/// `Segment::rule` / verdict rule of a packet no rule decided.
pub const NO_RULE: u32 = u32::MAX;

/// The rule-hit slot of rule `rule` in generation `gen_`: its index in `SG_RULE_HITS`, and what
/// the datapath records as the deciding rule (`PacketSummary::rule`). Generation g owns slots
/// `g * MAX_RULES .. (g + 1) * MAX_RULES`.
#[inline(always)]
pub const fn rule_slot(gen_: u8, rule: u32) -> u32 {
    (gen_ as u32 & 1) * MAX_RULES + rule
}

/// The rule id (within its generation) of a rule-hit slot; `NO_RULE` stays `NO_RULE`.
#[inline(always)]
pub const fn slot_rule(slot: u32) -> u32 {
    if slot == NO_RULE { NO_RULE } else { slot % MAX_RULES }
}

/// The generation of a rule-hit slot (meaningless for `NO_RULE`).
#[inline(always)]
pub const fn slot_gen(slot: u32) -> u8 {
    ((slot / MAX_RULES) & 1) as u8
}

// The prefix table: a multibit trie in array maps (no LPM trie, no helper call: the
// verifier inlines array lookups). Per generation, direction and family a root table indexed by
// the address's first 16 bits; below it stride-8 nodes (indexed by one address byte, with a
// path-compressed prefix check) and tips (one prefix test, for a prefix alone in its region).
// Every slot is a [`Slot`]: nothing, a port set, a node or a tip.
// A region of up to `CHAIN_MAX` prefixes is a chain of tips instead of a node. Built by userspace
// (`sg_userspace::rules::prefix_table`), which proves each lookup equal to longest-prefix
// match.

/// Layers of a generation's prefix tables: the security groups and the network ACL.
pub const LAYERS: u32 = 2;
/// The security groups' layer: a segment's `rule` is the first rule (file order) allowing it.
pub const LAYER_GROUPS: u32 = 0;
/// The network ACL's layer: a segment's `rule` is the deciding entry, [`ACL_DENY`] set for a
/// deny entry; a key in no segment meets the ACL's implicit final deny.
pub const LAYER_ACL: u32 = 1;
/// ACL entries per generation (both directions; `SG_ACL_HITS` holds a counter each).
pub const MAX_ACL_ENTRIES: u32 = 16384;
/// `Segment::rule` flag of an ACL segment decided by a deny entry.
pub const ACL_DENY: u32 = 0x8000_0000;

/// The hit-counter slot of ACL entry `entry` in generation `gen_` (its index in `SG_ACL_HITS`).
#[inline(always)]
pub const fn acl_slot(gen_: u8, entry: u32) -> u32 {
    (gen_ as u32 & 1) * MAX_ACL_ENTRIES + entry
}

/// Address bits indexing a root table.
pub const ROOT_BITS: u32 = 16;
/// Slots of a root table.
pub const ROOT_SLOTS: usize = 1 << ROOT_BITS;
/// Root tables: one per (generation, layer, direction, family).
pub const ROOT_TABLES: u32 = GENERATIONS * LAYERS * 2 * 2;
/// Slots of a node (one address byte).
pub const NODE_SLOTS: usize = 256;
/// Default capacity of an instance's prefix tables, per generation: tips and port sets
/// (`sgctl attach --prefix-capacity`); nodes get [`nodes_for`] of it.
pub const PREFIX_CAPACITY: u32 = 32_768;
/// A region of at most this many prefixes is a chain of tips, not a node.
pub const CHAIN_MAX: u32 = 3;
/// Steps of a lookup below the root: a node per address byte after the first two (14 for
/// IPv6), then a chain of tips.
pub const MAX_WALK: u32 = 14 + CHAIN_MAX;

/// Nodes per generation for a prefix capacity (a node stands for a region of more than
/// `CHAIN_MAX` prefixes).
pub const fn nodes_for(capacity: u32) -> u32 {
    let n = capacity / 16;
    if n < 64 { 64 } else { n }
}

/// The index in `SG_PFX_NODES`, `SG_PFX_TIPS` or `SG_PORT_SETS` of entry `at` of generation
/// `gen_`: the two generations interleave, so the programs need not know the maps' sizes
/// (an index past the end is a failed lookup: `internal_error`).
#[inline(always)]
pub const fn pool_index(gen_: u8, at: u32) -> u32 {
    (at << 1) | (gen_ as u32 & 1)
}

/// A slot of a root table or node: the top two bits are its kind, the rest its payload.
pub type Slot = u32;
/// Slot kind bits.
pub const SLOT_KIND: Slot = 0xc000_0000;
/// A port set: payload = its number in the generation + 1 (payload 0: no rule covers the
/// address); see [`pool_index`].
pub const SLOT_SET: Slot = 0;
/// A node: payload = its number in the generation (`SG_PFX_NODES`, see [`pool_index`]).
pub const SLOT_NODE: Slot = 0x8000_0000;
/// A tip: payload = its number in the generation (`SG_PFX_TIPS`).
pub const SLOT_TIP: Slot = 0x4000_0000;
/// The slot of an address no prefix covers.
pub const SLOT_NONE: Slot = 0;

/// The root table of (generation, layer, direction, family): its index in `SG_PFX_ROOT`.
#[inline(always)]
pub const fn root_index(gen_: u8, layer: u32, dir: u32, v6: bool) -> u32 {
    ((gen_ as u32 & 1) << 3) | ((layer & 1) << 2) | ((dir & 1) << 1) | v6 as u32
}

const _: () = assert!(root_index(1, LAYER_ACL, 1, true) == ROOT_TABLES - 1);

/// Byte `i` (0..16) of an address held as two native-endian words (`conntrack::addr_words`;
/// the datapath reads the packet summary's 8-byte aligned address fields as words).
#[inline(always)]
pub const fn addr_byte(words: &[u64; 2], i: u32) -> u8 {
    let w = words[((i >> 3) & 1) as usize];
    let b = i & 7;
    #[cfg(target_endian = "little")]
    let shift = b * 8;
    #[cfg(target_endian = "big")]
    let shift = (7 - b) * 8;
    (w >> shift) as u8
}

/// The root-table slot index of an address: its first 16 bits.
#[inline(always)]
pub const fn root_slot(words: &[u64; 2]) -> usize {
    ((addr_byte(words, 0) as usize) << 8) | addr_byte(words, 1) as usize
}

/// A root table: a slot per value of the address's first 16 bits.
pub type PrefixRoot = [Slot; ROOT_SLOTS];

const _: () = assert!(size_of::<PrefixRoot>() == 4 * ROOT_SLOTS);

/// A node: addresses whose words masked by `mask` equal `key` (the node's prefix, all bits
/// above `byte`) take `slots[address byte `byte`]`; others take `miss`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixNode {
    pub mask: [u64; 2],
    pub key: [u64; 2],
    pub miss: Slot,
    /// The address byte indexing `slots` (2..16).
    pub byte: u32,
    pub slots: [Slot; NODE_SLOTS],
}

const _: () = assert!(size_of::<PrefixNode>() == 40 + 4 * NODE_SLOTS);

/// A tip: addresses inside the prefix (`mask`, `key`) take `inside`, others `outside`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixTip {
    pub mask: [u64; 2],
    pub key: [u64; 2],
    pub inside: Slot,
    pub outside: Slot,
}

const _: () = assert!(size_of::<PrefixTip>() == 40);

/// A port set: the segments `start..start+count` of the generation's half of `SG_SEGMENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSetRef {
    pub start: u32,
    pub count: u32,
}

const _: () = assert!(size_of::<PortSetRef>() == 8);

/// Flow keys `lo..=hi` are allowed by rule `rule` (groups), or decided by ACL entry
/// `rule & !ACL_DENY` (ACL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Segment {
    pub lo: u32,
    pub hi: u32,
    pub rule: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<Segment>() == 16);

/// The 24-bit key a packet is matched on: protocol in bits 16..24, then the destination port
/// (TCP, UDP), or ICMP type << 8 | code (ICMP over IPv4, ICMPv6 over IPv6), or 0.
#[inline(always)]
pub const fn flow_key(proto: u8, low16: u16) -> u32 {
    ((proto as u32) << 16) | low16 as u32
}

/// The 16 low bits of the flow key, for the datapath (a packet, a tracked flow re-checked)
/// and the reference model alike: the destination port (TCP, UDP), ICMP type << 8 | code for
/// ICMP over IPv4 and ICMPv6 over IPv6, and 0 for anything else, ICMP of the other family
/// included (its type means nothing there: only a rule for the protocol as a whole, all
/// types, matches it).
#[inline(always)]
pub const fn key_low16(family: u8, proto: u8, dport: u16, icmp_type: u8, icmp_code: u8) -> u16 {
    use crate::packet::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
    match (proto, family) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => dport,
        (IPPROTO_ICMP, FAMILY_IPV4) | (IPPROTO_ICMPV6, FAMILY_IPV6) => {
            ((icmp_type as u16) << 8) | icmp_code as u16
        }
        _ => 0,
    }
}

crate::impl_pod!(PortSetRef, Segment, PrefixNode, PrefixTip);

#[cfg(test)]
mod key_tests {
    use super::key_low16;
    use crate::packet::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};

    #[test]
    fn icmp_type_counts_only_in_its_own_family() {
        assert_eq!(key_low16(FAMILY_IPV4, IPPROTO_TCP, 443, 9, 9), 443);
        assert_eq!(key_low16(FAMILY_IPV4, IPPROTO_ICMP, 7, 8, 1), 0x0801);
        assert_eq!(key_low16(FAMILY_IPV6, IPPROTO_ICMPV6, 7, 128, 0), 0x8000);
        assert_eq!(key_low16(FAMILY_IPV4, IPPROTO_ICMPV6, 7, 128, 0), 0, "ICMPv6 over IPv4");
        assert_eq!(key_low16(FAMILY_IPV6, IPPROTO_ICMP, 7, 8, 0), 0, "ICMP over IPv6");
        assert_eq!(key_low16(FAMILY_IPV6, 132, 7, 8, 0), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_slots_round_trip() {
        for gen_ in [0u8, 1] {
            for rule in [0, 1, MAX_RULES - 1] {
                let slot = rule_slot(gen_, rule);
                assert_eq!((slot_gen(slot), slot_rule(slot)), (gen_, rule));
            }
        }
        assert_eq!(rule_slot(1, 5), MAX_RULES + 5);
        assert_eq!(slot_rule(NO_RULE), NO_RULE);
        assert!(rule_slot(1, MAX_RULES - 1) < GENERATIONS * MAX_RULES);
    }
}
