//! Compiled security-group policy as the datapath reads it.
//!
//! Per interface and generation (0/1), per direction and family, an LPM trie maps the peer
//! address (source on ingress, destination on egress) to a [`PortSetRef`]: a slice of
//! `SG_SEGMENTS`. The slice is the compiled union of every rule whose CIDR covers the matched
//! prefix: disjoint, sorted [`Segment`]s over the 24-bit [`flow_key`] (protocol, then port or
//! ICMP type/code), each carrying the first rule (file order) that allows it. A packet is
//! allowed when its key falls in a segment; the lookup costs one trie lookup and a binary
//! search, whatever the number of rules.

/// Policy generations: userspace writes the inactive one, then flips `IfaceConfig::active_gen`.
pub const GENERATIONS: u32 = 2;
/// Rule ids per generation (a rule = one entry of a group's ingress or egress list).
pub const MAX_RULES: u32 = 16384;
/// Segment slots per generation in `SG_SEGMENTS`.
pub const SEGMENTS_PER_GEN: u32 = 131_072;
/// Binary-search steps: enough for `SEGMENTS_PER_GEN` segments in one port set.
pub const MAX_SEARCH_STEPS: u32 = 18;
/// Prefixes per LPM trie (both generations and directions of one family).
pub const LPM_MAX_ENTRIES: u32 = 65_536;

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

/// Bits of the LPM key taken by the header byte (generation and direction).
pub const LPM_HDR_BITS: u32 = 8;

/// The header byte of an LPM key: generation and direction.
#[inline(always)]
pub const fn lpm_hdr(gen_: u8, dir: u32) -> u8 {
    (gen_ << 1) | (dir as u8 & 1)
}

/// LPM key data of the IPv4 trie (with aya's `Key { prefix_len, data }`): `data[0]` =
/// [`lpm_hdr`], `data[1..5]` = address, the rest zero; `prefix_len` = 8 + CIDR length.
pub type LpmDataV4 = [u8; 8];
/// LPM key data of the IPv6 trie: `data[0]` = header, `data[1..17]` = address, the rest zero.
pub type LpmDataV6 = [u8; 20];

/// Key data for an IPv4 address (or prefix) in generation `gen_`, direction `dir`.
#[inline(always)]
pub const fn lpm_data_v4(gen_: u8, dir: u32, addr: [u8; 4]) -> LpmDataV4 {
    [lpm_hdr(gen_, dir), addr[0], addr[1], addr[2], addr[3], 0, 0, 0]
}

/// Key data for an IPv6 address (or prefix) in generation `gen_`, direction `dir`.
#[inline(always)]
pub const fn lpm_data_v6(gen_: u8, dir: u32, addr: [u8; 16]) -> LpmDataV6 {
    // Written out: a zeroed array filled in a loop becomes a memset call in the eBPF object.
    let a = addr;
    [
        lpm_hdr(gen_, dir),
        a[0],
        a[1],
        a[2],
        a[3],
        a[4],
        a[5],
        a[6],
        a[7],
        a[8],
        a[9],
        a[10],
        a[11],
        a[12],
        a[13],
        a[14],
        a[15],
        0,
        0,
        0,
    ]
}

/// Trie value: the segments `start..start+count` of the generation's half of `SG_SEGMENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSetRef {
    pub start: u32,
    pub count: u32,
}

const _: () = assert!(size_of::<PortSetRef>() == 8);

/// Flow keys `lo..=hi` are allowed by rule `rule`.
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

crate::impl_pod!(PortSetRef, Segment);

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
