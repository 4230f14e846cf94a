//! The prefix tables of one generation: longest-prefix match from the peer address to a port
//! set, built for the datapath's array maps (`sg_common::policy`: roots, nodes, tips, port
//! sets). Pure; no I/O.
//!
//! Per direction and family, the root table has a slot for each value of the address's first
//! 16 bits. A prefix of 16 bits or fewer paints its range of root slots (shorter first, so
//! that a longer prefix overwrites). The longer prefixes under one root slot form a *region*,
//! built recursively with the slot's value as the default:
//!
//! - up to `CHAIN_MAX` (3) prefixes: a chain of **tips** (is the address inside the first?
//!   then the chain of the prefixes within it, or its port set; else the next tip, and at the
//!   end the default);
//! - more: a **node** at the deepest whole byte that all of them share and that none of
//!   them ends before (path compression: bytes they all share cost no level). The node checks
//!   that prefix (else the default), and its 256 slots, one per value of the next byte, hold
//!   the prefixes that end within that byte (painted shorter first) and, below them, the
//!   regions of the longer ones.
//!
//! Every node consumes at least one byte, so a lookup takes at most 2 nodes and 3 tips below
//! an IPv4 root and 14 nodes and 3 tips below an IPv6 one (`MAX_WALK`). [`PrefixTables::lookup`]
//! runs the datapath's walk itself (`sg_common::lookup`, over these tables instead of the
//! maps); the tests hold it equal to a plain longest-prefix match.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use sg_common::{
    conntrack::addr_words,
    lookup::{PrefixPool, Unreadable, walk},
    policy::{
        CHAIN_MAX, LAYER_GROUPS, LAYERS, NODE_SLOTS, PortSetRef, PrefixNode, PrefixRoot, PrefixTip,
        ROOT_BITS, ROOT_SLOTS, SLOT_NODE, SLOT_NONE, SLOT_SET, SLOT_TIP, Slot, nodes_for,
    },
};

use crate::Dir;

/// What the datapath's prefix maps hold for one generation.
#[derive(Clone, PartialEq, Eq)]
pub struct PrefixTables {
    /// Root tables by [`table`] (direction, family).
    pub roots: Vec<Box<PrefixRoot>>,
    pub nodes: Vec<PrefixNode>,
    pub tips: Vec<PrefixTip>,
    /// Port sets, by slot payload - 1.
    pub sets: Vec<PortSetRef>,
}

impl std::fmt::Debug for PrefixTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The roots alone are 4 x 65,536 slots.
        f.debug_struct("PrefixTables")
            .field("nodes", &self.nodes.len())
            .field("tips", &self.tips.len())
            .field("sets", &self.sets.len())
            .finish_non_exhaustive()
    }
}

/// A table that does not fit its map: (what, needed, held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFull {
    pub what: &'static str,
    pub n: usize,
    pub max: usize,
}

/// The index of the root table of (`layer`, `dir`, family) in [`PrefixTables::roots`];
/// generation g's is at `policy::root_index(g, layer, dir, v6)`, which adds `8 * g`.
pub fn table(layer: u32, dir: Dir, v6: bool) -> usize {
    sg_common::policy::root_index(0, layer, dir.datapath() as u32, v6) as usize
}

/// Root tables per generation: layers x directions x families.
pub const TABLES: usize = (LAYERS * 2 * 2) as usize;

/// One prefix: its address as a u128 (IPv4 in the top 32 bits), its length, its slot.
#[derive(Clone, Copy, Debug)]
struct Pfx {
    bits: u128,
    len: u32,
    slot: Slot,
}

fn prefix_mask(len: u32) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - len) }
}

/// (mask, key) words of the first `len` bits of `bits`.
fn mask_key(bits: u128, len: u32) -> ([u64; 2], [u64; 2]) {
    let m = prefix_mask(len);
    (addr_words(&m.to_be_bytes()), addr_words(&(bits & m).to_be_bytes()))
}

/// The value of the 8 bits of `bits` starting at bit `at`.
fn byte_at(bits: u128, at: u32) -> usize {
    ((bits >> (120 - at)) & 0xff) as usize
}

/// Paints `prefs` (all ending within the `width` bits after bit `at`) into `slots`, shorter
/// first.
fn paint(slots: &mut [Slot], prefs: &mut [Pfx], at: u32, width: u32) {
    prefs.sort_by_key(|p| p.len);
    for p in prefs.iter() {
        let free = at + width - p.len;
        let first = ((p.bits >> (128 - at - width)) as usize & ((1 << width) - 1)) & !((1 << free) - 1);
        slots[first..first + (1 << free)].fill(p.slot);
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<PrefixNode>,
    tips: Vec<PrefixTip>,
}

impl Builder {
    /// The root table of one direction and family.
    fn root(&mut self, prefs: &[Pfx]) -> Box<PrefixRoot> {
        let mut root: Box<PrefixRoot> =
            vec![SLOT_NONE; ROOT_SLOTS].into_boxed_slice().try_into().expect("ROOT_SLOTS slots");
        let (mut short, long): (Vec<Pfx>, Vec<Pfx>) = prefs.iter().partition(|p| p.len <= ROOT_BITS);
        paint(&mut root[..], &mut short, 0, ROOT_BITS);
        let mut regions: BTreeMap<usize, Vec<Pfx>> = BTreeMap::new();
        for p in long {
            regions.entry((p.bits >> (128 - ROOT_BITS)) as usize).or_default().push(p);
        }
        for (at, group) in regions {
            root[at] = self.region(root[at], group);
        }
        root
    }

    /// The slot of a region: `prefs` (at least one, all inside the region and longer than
    /// it), `default` for the rest of it.
    fn region(&mut self, default: Slot, mut prefs: Vec<Pfx>) -> Slot {
        if prefs.len() <= CHAIN_MAX as usize {
            return self.chain(default, prefs);
        }
        let first = prefs[0].bits;
        let common = prefs.iter().map(|p| (p.bits ^ first).leading_zeros()).min().unwrap_or(128);
        let shortest = prefs.iter().map(|p| p.len).min().unwrap_or(128);
        let depth = common.min(shortest - 1) / 8 * 8;
        let (mut within, deeper): (Vec<Pfx>, Vec<Pfx>) = prefs.drain(..).partition(|p| p.len <= depth + 8);
        let mut slots = [default; NODE_SLOTS];
        paint(&mut slots, &mut within, depth, 8);
        let mut regions: BTreeMap<usize, Vec<Pfx>> = BTreeMap::new();
        for p in deeper {
            regions.entry(byte_at(p.bits, depth)).or_default().push(p);
        }
        for (at, group) in regions {
            slots[at] = self.region(slots[at], group);
        }
        let (mask, key) = mask_key(first, depth);
        self.nodes.push(PrefixNode { mask, key, miss: default, byte: depth / 8, slots });
        SLOT_NODE | (self.nodes.len() - 1) as u32
    }

    /// A chain of tips for a few prefixes: the outer ones (inside no other) one after the
    /// other, each tip's inside the chain of the prefixes within it. A lookup visits at most
    /// one tip per prefix.
    fn chain(&mut self, default: Slot, mut prefs: Vec<Pfx>) -> Slot {
        prefs.sort_by_key(|p| p.len);
        let mut outer: Vec<(Pfx, Vec<Pfx>)> = Vec::new();
        for p in prefs {
            match outer.iter_mut().find(|(o, _)| (p.bits & prefix_mask(o.len)) == o.bits) {
                Some((_, inner)) => inner.push(p),
                None => outer.push((p, Vec::new())),
            }
        }
        let mut next = default;
        for (o, inner) in outer.into_iter().rev() {
            let inside = if inner.is_empty() { o.slot } else { self.chain(o.slot, inner) };
            let (mask, key) = mask_key(o.bits, o.len);
            self.tips.push(PrefixTip { mask, key, inside, outside: next });
            next = SLOT_TIP | (self.tips.len() - 1) as u32;
        }
        next
    }
}

/// Builds the tables of `entries` of the groups' layer alone (see [`build_layers`]).
pub fn build(entries: impl IntoIterator<Item = (Dir, IpNet, PortSetRef)>) -> PrefixTables {
    build_layers(entries.into_iter().map(|(dir, net, set)| (LAYER_GROUPS, dir, net, set)))
}

/// Builds the tables of `entries` (one per (layer, direction, network): the compiler's trie
/// entries, each naming its port set), every layer's roots over the same pools. Whether they
/// fit an instance is [`PrefixTables::check`]'s.
pub fn build_layers(entries: impl IntoIterator<Item = (u32, Dir, IpNet, PortSetRef)>) -> PrefixTables {
    let mut sets: Vec<PortSetRef> = Vec::new();
    let mut interned: HashMap<PortSetRef, Slot> = HashMap::new();
    let mut by_table: [Vec<Pfx>; TABLES] = Default::default();
    for (layer, dir, net, set) in entries {
        let slot = *interned.entry(set).or_insert_with(|| {
            sets.push(set);
            SLOT_SET | sets.len() as u32
        });
        let (bits, len, v6) = match net.trunc() {
            IpNet::V4(n) => (u128::from(n.addr().to_bits()) << 96, u32::from(n.prefix_len()), false),
            IpNet::V6(n) => (n.addr().to_bits(), u32::from(n.prefix_len()), true),
        };
        by_table[table(layer, dir, v6)].push(Pfx { bits, len, slot });
    }
    let mut b = Builder::default();
    let mut roots = Vec::with_capacity(TABLES);
    for prefs in &mut by_table {
        prefs.sort_by_key(|p| (p.bits, p.len));
        roots.push(b.root(prefs));
    }
    PrefixTables { roots, nodes: b.nodes, tips: b.tips, sets }
}

/// What an instance's prefix maps hold per generation (`sgctl attach --prefix-capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub nodes: usize,
    pub tips: usize,
    pub sets: usize,
}

impl Capacity {
    /// For a prefix capacity (tips and port sets; nodes: `policy::nodes_for`).
    pub const fn of(prefixes: u32) -> Self {
        Capacity { nodes: nodes_for(prefixes) as usize, tips: prefixes as usize, sets: prefixes as usize }
    }
}

impl PrefixTables {
    /// Do the tables fit `cap`? The first map that is too small otherwise.
    pub fn check(&self, cap: Capacity) -> Result<(), TableFull> {
        for (what, n, max) in [
            ("prefix nodes", self.nodes.len(), cap.nodes),
            ("prefix tips", self.tips.len(), cap.tips),
            ("distinct port sets", self.sets.len(), cap.sets),
        ] {
            if n > max {
                return Err(TableFull { what, n, max });
            }
        }
        Ok(())
    }

    /// [`PrefixTables::lookup_in`] the groups' layer.
    pub fn lookup(&self, dir: Dir, peer: std::net::IpAddr) -> Result<Option<PortSetRef>, &'static str> {
        self.lookup_in(LAYER_GROUPS, dir, peer)
    }

    /// The port set of the longest prefix of (`layer`, `dir`, family of `peer`) covering
    /// `peer`, by the datapath's own walk (`sg_common::lookup::walk`). `Err` where the datapath would
    /// answer `internal_error` (a table this module did not build).
    pub fn lookup_in(
        &self,
        layer: u32,
        dir: Dir,
        peer: std::net::IpAddr,
    ) -> Result<Option<PortSetRef>, &'static str> {
        let (bytes, v6) = match peer {
            std::net::IpAddr::V4(a) => ((u128::from(a.to_bits()) << 96).to_be_bytes(), false),
            std::net::IpAddr::V6(a) => (a.octets(), true),
        };
        walk(self, layer, dir.datapath() as u32, v6, &addr_words(&bytes)).map_err(Unreadable::what)
    }
}

/// The tables as the shared walk reads them (`sg_common::lookup`), as the datapath reads its
/// maps.
impl PrefixPool for PrefixTables {
    fn root(&self, layer: u32, dir: u32, v6: bool) -> Option<&PrefixRoot> {
        let at = sg_common::policy::root_index(0, layer, dir, v6) as usize;
        self.roots.get(at).map(|r| &**r)
    }

    fn node(&self, at: u32) -> Option<&PrefixNode> {
        self.nodes.get(at as usize)
    }

    fn tip(&self, at: u32) -> Option<&PrefixTip> {
        self.tips.get(at as usize)
    }

    fn set(&self, at: u32) -> Option<PortSetRef> {
        self.sets.get(at as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    fn set(i: u32) -> PortSetRef {
        PortSetRef { start: i, count: 1 }
    }

    /// Plain longest-prefix match: what the tables must answer.
    fn lpm(entries: &[(Dir, IpNet, PortSetRef)], dir: Dir, peer: IpAddr) -> Option<PortSetRef> {
        entries
            .iter()
            .filter(|(d, n, _)| *d == dir && n.contains(&peer))
            .max_by_key(|(_, n, _)| n.prefix_len())
            .map(|(_, _, s)| *s)
    }

    /// A random address near `net` (inside, at its edges, or just outside).
    fn near(rng: &mut StdRng, net: &IpNet) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let base = match rng.random_range(0..4) {
                    0 => n.network().to_bits(),
                    1 => n.broadcast().to_bits(),
                    2 => n.network().to_bits().wrapping_sub(1),
                    _ => n.broadcast().to_bits().wrapping_add(1),
                };
                IpAddr::V4(Ipv4Addr::from_bits(base ^ (rng.random::<u32>() >> rng.random_range(8..32))))
            }
            IpNet::V6(n) => {
                let base = match rng.random_range(0..4) {
                    0 => n.network().to_bits(),
                    1 => n.broadcast().to_bits(),
                    2 => n.network().to_bits().wrapping_sub(1),
                    _ => n.broadcast().to_bits().wrapping_add(1),
                };
                IpAddr::V6(Ipv6Addr::from_bits(base ^ (rng.random::<u128>() >> rng.random_range(16..128))))
            }
        }
    }

    /// Random prefixes clustered under a few bases, so that they nest and share bytes.
    fn random_entries(rng: &mut StdRng, n: usize) -> Vec<(Dir, IpNet, PortSetRef)> {
        let bases4: Vec<u32> = (0..4).map(|_| rng.random()).collect();
        let bases6: Vec<u128> = (0..4).map(|_| rng.random()).collect();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while out.len() < n {
            let dir = if rng.random_bool(0.5) { Dir::Ingress } else { Dir::Egress };
            let net = if rng.random_bool(0.5) {
                let b = bases4[rng.random_range(0..4)] ^ (rng.random::<u32>() >> rng.random_range(0..32));
                IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from_bits(b), rng.random_range(0..=32)).unwrap())
                    .trunc()
            } else {
                let b = bases6[rng.random_range(0..4)] ^ (rng.random::<u128>() >> rng.random_range(0..128));
                IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from_bits(b), rng.random_range(0..=128)).unwrap())
                    .trunc()
            };
            if seen.insert((dir, net)) {
                out.push((dir, net, set(rng.random_range(0..50))));
            }
        }
        out
    }

    #[test]
    fn walk_equals_longest_prefix_match() {
        let mut rng = StdRng::seed_from_u64(17);
        for round in 0..60 {
            let entries = random_entries(&mut rng, [1, 2, 5, 40, 300][round % 5]);
            let t = build(entries.iter().copied());
            for _ in 0..3000 {
                let (_, net, _) = entries[rng.random_range(0..entries.len())];
                let peer = near(&mut rng, &net);
                for dir in Dir::BOTH {
                    assert_eq!(
                        t.lookup(dir, peer),
                        Ok(lpm(&entries, dir, peer)),
                        "{dir:?} {peer} round {round}"
                    );
                }
            }
        }
    }

    #[test]
    fn few_prefixes_are_tip_chains_and_more_a_node() {
        let e = |net: &str| (Dir::Ingress, net.parse::<IpNet>().unwrap(), set(1));
        let t = build([e("192.0.2.0/24"), e("2001:db8::/32")]);
        assert_eq!((t.nodes.len(), t.tips.len()), (0, 2));
        // Three prefixes under one /16 (one nested): three tips.
        let t = build([e("198.51.100.0/24"), e("198.51.100.7/32"), e("198.51.99.0/24")]);
        assert_eq!((t.nodes.len(), t.tips.len()), (0, 3));
        // Four: a node at the third byte, the nested /32 a tip below it.
        let t = build([e("198.51.100.0/24"), e("198.51.100.7/32"), e("198.51.99.0/24"), e("198.51.1.0/24")]);
        assert_eq!((t.nodes.len(), t.tips.len()), (1, 1));
        assert_eq!(t.nodes[0].byte, 2);
        // Short prefixes paint the root; /0 everything.
        let t = build([e("0.0.0.0/0"), e("203.0.0.0/8")]);
        assert_eq!((t.nodes.len(), t.tips.len()), (0, 0));
        assert_eq!(t.lookup(Dir::Ingress, "203.0.113.9".parse().unwrap()), Ok(Some(set(1))));
        assert_eq!(t.lookup(Dir::Egress, "203.0.113.9".parse().unwrap()), Ok(None));
        assert_eq!(t.lookup(Dir::Ingress, "2001:db8::1".parse().unwrap()), Ok(None));
    }

    #[test]
    fn deepest_walk_fits_max_walk() {
        // Every IPv6 length nested under one address: a node per byte, then the /128.
        let a: Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let entries: Vec<_> = (0..=128u8)
            .map(|l| (Dir::Ingress, IpNet::V6(ipnet::Ipv6Net::new(a, l).unwrap()).trunc(), set(u32::from(l))))
            .collect();
        let t = build(entries.iter().copied());
        assert_eq!(t.lookup(Dir::Ingress, IpAddr::V6(a)), Ok(Some(set(128))));
        let other: Ipv6Addr = "2001:db8:1:2:3:4:5:7".parse().unwrap();
        assert_eq!(t.lookup(Dir::Ingress, IpAddr::V6(other)), Ok(Some(set(127))));
    }

    #[test]
    fn tables_larger_than_the_capacity_are_refused() {
        // Isolated /32s, one per /16: one tip each.
        let entries: Vec<_> = (0..100u32)
            .map(|i| {
                (
                    Dir::Ingress,
                    IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from_bits(i << 16), 32).unwrap()),
                    set(1),
                )
            })
            .collect();
        let t = build(entries);
        assert_eq!(t.check(Capacity { nodes: 0, tips: 100, sets: 1 }), Ok(()));
        let err = t.check(Capacity { nodes: 0, tips: 99, sets: 1 }).unwrap_err();
        assert_eq!((err.what, err.n, err.max), ("prefix tips", 100, 99));
        assert_eq!(
            Capacity::of(sg_common::policy::PREFIX_CAPACITY),
            Capacity { nodes: 2048, tips: 32_768, sets: 32_768 }
        );
    }
}
