//! The two lookups of a policy layer, written once for the datapath and for userspace: the
//! prefix walk from a peer address to a port set ([`walk`]) and the binary search of that
//! set's segments for a flow key ([`search`]). They read the tables through two small
//! interfaces: the datapath implements them over its array maps (`sg-ebpf/src/policy.rs`),
//! the compiler over the tables it built (`sg-rules`), so the proofs in userspace (every
//! walk equals a plain longest-prefix match; the kernel's verdicts equal the reference model)
//! exercise the code the datapath runs.
//!
//! Both are `#[inline(always)]` and bounded by constants (`MAX_WALK`, `MAX_SEARCH_STEPS`), as
//! the verifier needs; every read that can miss is an error ([`Unreadable`]), which the
//! datapath turns into `internal_error` (fail closed).
//!
//! The datapath runs them inside one global function (verified once, called for both layers
//! of both programs), whose scalar argument and answer are packed and unpacked here
//! ([`LookupArg`], [`Found`]).

use crate::policy::{
    MAX_SEARCH_STEPS, MAX_WALK, PortSetRef, PrefixNode, PrefixRoot, PrefixTip, SEGMENTS_PER_GEN, SLOT_KIND,
    SLOT_NODE, SLOT_SET, SLOT_TIP, Segment, addr_byte, root_slot,
};

/// The prefix tables of one generation, indexed as the compiler numbers them (generation-
/// local: the datapath adds its generation, `policy::pool_index`).
pub trait PrefixPool {
    /// The root table of (`layer`, `dir`, family).
    fn root(&self, layer: u32, dir: u32, v6: bool) -> Option<&PrefixRoot>;
    fn node(&self, at: u32) -> Option<&PrefixNode>;
    fn tip(&self, at: u32) -> Option<&PrefixTip>;
    /// Port set `at` (a set slot's payload - 1).
    fn set(&self, at: u32) -> Option<PortSetRef>;
}

/// The segments of one generation (generation-local indices, below `SEGMENTS_PER_GEN`).
pub trait SegmentPool {
    fn segment(&self, at: u32) -> Option<&Segment>;
}

/// The segments of a generation held in memory (userspace's compiled plan).
impl SegmentPool for [Segment] {
    #[inline(always)]
    fn segment(&self, at: u32) -> Option<&Segment> {
        self.get(at as usize)
    }
}

/// What a lookup could not read: a table the compiler did not build (the datapath answers
/// `internal_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    Root,
    Node,
    Tip,
    Set,
    Segment,
    /// A walk longer than any table the compiler builds.
    WalkTooLong,
    /// A port set reaching past its generation's segments.
    SetOutOfBounds,
}

impl Unreadable {
    pub const fn what(self) -> &'static str {
        match self {
            Unreadable::Root => "root table out of bounds",
            Unreadable::Node => "node out of bounds",
            Unreadable::Tip => "tip out of bounds",
            Unreadable::Set => "port set out of bounds",
            Unreadable::Segment => "segment out of bounds",
            Unreadable::WalkTooLong => "walk longer than MAX_WALK",
            Unreadable::SetOutOfBounds => "port set past its generation's segments",
        }
    }
}

/// Do the address words match a prefix (`mask`, `key`)?
#[inline(always)]
fn within(peer: &[u64; 2], mask: &[u64; 2], key: &[u64; 2]) -> bool {
    peer[0] & mask[0] == key[0] && peer[1] & mask[1] == key[1]
}

/// The port set of the longest prefix of (`layer`, `dir`, family) covering `peer` (as words,
/// `conntrack::addr_words`): `Ok(None)` when no prefix covers it. At most `MAX_WALK` steps
/// below the root slot, whatever the number of prefixes.
#[inline(always)]
pub fn walk<P: PrefixPool + ?Sized>(
    pool: &P,
    layer: u32,
    dir: u32,
    v6: bool,
    peer: &[u64; 2],
) -> Result<Option<PortSetRef>, Unreadable> {
    let root = pool.root(layer, dir, v6).ok_or(Unreadable::Root)?;
    let mut slot = root[root_slot(peer)];
    for _ in 0..MAX_WALK {
        let at = slot & !SLOT_KIND;
        match slot & SLOT_KIND {
            SLOT_NODE => {
                let node = pool.node(at).ok_or(Unreadable::Node)?;
                slot = if within(peer, &node.mask, &node.key) {
                    node.slots[addr_byte(peer, node.byte) as usize]
                } else {
                    node.miss
                };
            }
            SLOT_TIP => {
                let tip = pool.tip(at).ok_or(Unreadable::Tip)?;
                slot = if within(peer, &tip.mask, &tip.key) { tip.inside } else { tip.outside };
            }
            _ => break,
        }
    }
    if slot & SLOT_KIND != SLOT_SET {
        return Err(Unreadable::WalkTooLong);
    }
    match slot {
        0 => Ok(None),
        n => pool.set(n - 1).map(Some).ok_or(Unreadable::Set),
    }
}

/// The `rule` of the segment of `set` holding flow key `key`, if any: a binary search of the
/// set's sorted disjoint segments, at most `MAX_SEARCH_STEPS` reads.
#[inline(always)]
pub fn search<S: SegmentPool + ?Sized>(
    pool: &S,
    set: PortSetRef,
    key: u32,
) -> Result<Option<u32>, Unreadable> {
    if set.count > SEGMENTS_PER_GEN || set.start > SEGMENTS_PER_GEN - set.count {
        return Err(Unreadable::SetOutOfBounds);
    }
    let mut lo = set.start;
    let mut hi = set.start + set.count;
    for _ in 0..MAX_SEARCH_STEPS {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let seg = pool.segment(mid).ok_or(Unreadable::Segment)?;
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

/// The walk then the search: the `rule` of the segment holding (`peer`, `key`) in one layer.
#[inline(always)]
pub fn find<P: PrefixPool + SegmentPool + ?Sized>(
    pool: &P,
    arg: LookupArg,
    peer: &[u64; 2],
) -> Result<Option<u32>, Unreadable> {
    match walk(pool, arg.layer, arg.dir, arg.v6, peer)? {
        Some(set) => search(pool, set, arg.key),
        None => Ok(None),
    }
}

/// The scalar argument of the datapath's lookup function, besides the peer's two address
/// words: generation, layer, direction and family in the low bits, the 24-bit flow key
/// (`policy::flow_key`) above them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupArg {
    pub gen_: u8,
    pub layer: u32,
    /// `Direction as u32`.
    pub dir: u32,
    pub v6: bool,
    /// The flow key (24 bits).
    pub key: u32,
}

impl LookupArg {
    #[inline(always)]
    pub const fn pack(self) -> u64 {
        (self.gen_ as u64 & 1)
            | (self.layer as u64 & 1) << 1
            | (self.dir as u64 & 1) << 2
            | (self.v6 as u64) << 3
            | (self.key as u64 & 0x00ff_ffff) << 8
    }

    #[inline(always)]
    pub const fn unpack(packed: u64) -> Self {
        LookupArg {
            gen_: (packed & 1) as u8,
            layer: ((packed >> 1) & 1) as u32,
            dir: ((packed >> 2) & 1) as u32,
            v6: (packed >> 3) & 1 != 0,
            key: ((packed >> 8) & 0x00ff_ffff) as u32,
        }
    }
}

/// A lookup that could not read its tables, as its packed answer says (which table is lost in
/// the packing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupFailed;

/// The answer of the datapath's lookup function as one scalar: 0 for none, `u64::MAX` for a
/// table it could not read, else the segment's `rule` + 1.
pub struct Found;

impl Found {
    const NONE: u64 = 0;
    const ERROR: u64 = u64::MAX;

    #[inline(always)]
    pub fn pack(found: Result<Option<u32>, Unreadable>) -> u64 {
        match found {
            Ok(Some(rule)) => u64::from(rule) + 1,
            Ok(None) => Found::NONE,
            Err(_) => Found::ERROR,
        }
    }

    /// `Err` for a table the lookup could not read.
    #[inline(always)]
    pub fn unpack(packed: u64) -> Result<Option<u32>, LookupFailed> {
        match packed {
            Found::NONE => Ok(None),
            Found::ERROR => Err(LookupFailed),
            n => Ok(Some((n - 1) as u32)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{LAYER_ACL, LAYER_GROUPS, flow_key};

    #[test]
    fn the_lookup_argument_round_trips() {
        for gen_ in [0, 1] {
            for layer in [LAYER_GROUPS, LAYER_ACL] {
                for dir in [0, 1] {
                    for v6 in [false, true] {
                        for key in [0, 1, flow_key(6, 443), flow_key(58, 0x8000), flow_key(255, u16::MAX)] {
                            let arg = LookupArg { gen_, layer, dir, v6, key };
                            assert_eq!(LookupArg::unpack(arg.pack()), arg, "{arg:?}");
                        }
                    }
                }
            }
        }
        // Every field has bits of its own.
        let one = |a: LookupArg| a.pack().count_ones();
        let zero = LookupArg { gen_: 0, layer: 0, dir: 0, v6: false, key: 0 };
        assert_eq!(zero.pack(), 0);
        assert_eq!(
            one(LookupArg { gen_: 1, layer: 1, dir: 1, v6: true, key: 0x00ff_ffff }),
            4 + 24,
            "fields overlap"
        );
    }

    #[test]
    fn the_answer_round_trips() {
        for found in [Ok(None), Ok(Some(0)), Ok(Some(7)), Ok(Some(u32::MAX - 1))] {
            assert_eq!(Found::unpack(Found::pack(found)), found.map_err(|_: Unreadable| LookupFailed));
        }
        assert_eq!(Found::unpack(Found::pack(Err(Unreadable::Node))), Err(LookupFailed));
    }

    /// A port set of three segments, searched for every key around them.
    #[test]
    fn the_search_finds_the_segment_holding_the_key() {
        let seg = |lo, hi, rule| Segment { lo, hi, rule, _pad: 0 };
        let pool = [seg(0, 0, 9), seg(10, 20, 1), seg(22, 22, 2), seg(30, 40, 3)];
        let pool = &pool[..];
        let set = PortSetRef { start: 1, count: 3 };
        for key in 0..50 {
            let want = pool[1..].iter().find(|s| s.lo <= key && key <= s.hi).map(|s| s.rule);
            assert_eq!(search(pool, set, key), Ok(want), "key {key}");
        }
        assert_eq!(search(pool, PortSetRef { start: 3, count: 2 }, 50), Err(Unreadable::Segment));
        assert_eq!(
            search(pool, PortSetRef { start: SEGMENTS_PER_GEN, count: 1 }, 0),
            Err(Unreadable::SetOutOfBounds)
        );
    }
}
