//! The map registry: every map of an instance, once. Name, kind, key and value types (with
//! their sizes), default size, flags and a one-line purpose, in one table ([`ALL`]).
//!
//! - The datapath declares each map (`sg-ebpf/src/maps.rs`) with this table's sizes and flags;
//!   its static is named as the entry, so that the kernel object carries the entry's name.
//! - Userspace opens, pins and lists the maps from this table (`sg_userspace::maps`), and the
//!   README's map table is rendered from it (`sg_userspace::maps::markdown_table`; a test keeps
//!   them equal).
//! - A test loads the real object and checks every map it holds against its entry (kind, key
//!   and value size, entries, flags), and that no entry is missing from the object.
//!
//! Instances are pinned under `/sys/fs/bpf/sg/<netns cookie>/<interface>/`, each map by its
//! name.

use core::mem::size_of;

use crate::{
    IfaceConfig, PacketSummary,
    clock::ClockCache,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey, SEEN_WORDS},
    counters::Counter,
    flowlog::{FlowLogConfig, FlowLogStats, RateKey},
    layout::InstanceMeta,
    local::{LOCAL_MAX_ENTRIES, LocalAddr},
    policy::{
        GENERATIONS, MAX_ACL_ENTRIES, MAX_RULES, PREFIX_CAPACITY, PortSetRef, PrefixNode, PrefixRoot,
        PrefixTip, ROOT_TABLES, SEGMENTS_PER_GEN, Segment, nodes_for,
    },
    reason::MAX_REASONS,
};

/// XDP program deciding ingress packets.
pub const PROG_INGRESS: &str = "sg_ingress";
/// TC (TCX or clsact) program deciding egress packets.
pub const PROG_EGRESS: &str = "sg_egress";
/// TC program deciding ingress packets where the interface's XDP hook is another program's
/// (`sgctl attach --ingress-hook tcx`); pinned as `PROG_INGRESS`, the instance's ingress program.
pub const PROG_INGRESS_TC: &str = "sg_ingress_tc";

/// `BPF_F_NO_PREALLOC`: entries are allocated on insert.
pub const F_NO_PREALLOC: u32 = 1 << 0;
/// `BPF_F_NO_COMMON_LRU`: an LRU hash keeps one LRU list per CPU (no shared list and lock on
/// insert); each CPU evicts only among the entries it inserted, and holds at most
/// `max_entries / CPUs` of them.
pub const F_NO_COMMON_LRU: u32 = 1 << 1;
/// `BPF_F_MMAPABLE`: userspace may map the array's memory.
pub const F_MMAPABLE: u32 = 1 << 10;

/// The kind of a map (the kernel's `BPF_MAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Array,
    PerCpuArray,
    Hash,
    LruHash,
    RingBuf,
}

impl MapKind {
    /// The kernel's map type number.
    pub const fn bpf_type(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PerCpuArray => 6,
            MapKind::LruHash => 9,
            MapKind::RingBuf => 27,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            MapKind::Array => "array",
            MapKind::PerCpuArray => "per-CPU array",
            MapKind::Hash => "hash",
            MapKind::LruHash => "LRU hash",
            MapKind::RingBuf => "ring buffer",
        }
    }
}

/// Who creates and pins a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// sgctl: pinned with the instance, opened by `InstanceMaps`.
    Sgctl,
    /// aya-log's own map: not pinned (the programs hold it), read through aya-log.
    AyaLog,
}

/// One map of an instance.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    /// The map's name in the object and its pin name.
    pub name: &'static str,
    pub kind: MapKind,
    /// Key and value types, as the datapath declares them (ring buffers have none).
    pub key: &'static str,
    pub value: &'static str,
    /// Sizes in bytes of a key and of a value, as the kernel reports them (a per-CPU value is
    /// one CPU's).
    pub key_size: u32,
    pub value_size: u32,
    /// Default number of entries (ring buffer: bytes).
    pub max_entries: u32,
    /// `F_NO_PREALLOC`, `F_NO_COMMON_LRU`, `F_MMAPABLE`.
    pub flags: u32,
    /// How the size can be changed, if it can, and how the entries are laid out.
    pub size_note: &'static str,
    pub owner: Owner,
    /// One line: what the map is for.
    pub purpose: &'static str,
}

const fn sz<T>() -> u32 {
    size_of::<T>() as u32
}

impl MapSpec {
    /// An array or per-CPU array of `V`, indexed by a u32, owned by sgctl, no flags.
    const fn indexed<V>(name: &'static str, kind: MapKind, value: &'static str, max_entries: u32) -> Self {
        MapSpec {
            name,
            kind,
            key: "u32",
            value,
            key_size: 4,
            value_size: sz::<V>(),
            max_entries,
            flags: 0,
            size_note: "",
            owner: Owner::Sgctl,
            purpose: "",
        }
    }

    /// A hash or LRU hash from `K` (as the kernel sizes it) to `V`.
    const fn keyed<K, V>(
        name: &'static str,
        kind: MapKind,
        (key, value): (&'static str, &'static str),
        max_entries: u32,
    ) -> Self {
        MapSpec { key, key_size: sz::<K>(), ..Self::indexed::<V>(name, kind, value, max_entries) }
    }

    /// A ring buffer of `bytes`.
    const fn ring(name: &'static str, value: &'static str, bytes: u32) -> Self {
        MapSpec {
            key: "-",
            key_size: 0,
            value_size: 0,
            ..Self::indexed::<()>(name, MapKind::RingBuf, value, bytes)
        }
    }

    const fn flags(self, flags: u32) -> Self {
        MapSpec { flags, ..self }
    }

    const fn note(self, size_note: &'static str) -> Self {
        MapSpec { size_note, ..self }
    }

    const fn purpose(self, purpose: &'static str) -> Self {
        MapSpec { purpose, ..self }
    }

    const fn owned_by(self, owner: Owner) -> Self {
        MapSpec { owner, ..self }
    }
}

/// Default size of `SG_CT` (settable at attach).
pub const CT_MAX_ENTRIES: u32 = 262_144;
/// Default size of `SG_CT_NEW` (settable at attach).
pub const CT_NEW_MAX_ENTRIES: u32 = 65_536;
/// Size of `SG_FRAGS`.
pub const FRAGS_MAX_ENTRIES: u32 = 8192;
/// Size of `SG_FLOW_EVENTS` in bytes (4096 `FlowEvent`s).
pub const FLOW_EVENTS_BYTES: u32 = 256 * 1024;
/// Sources tracked by `SG_FLOW_RATE` (LRU: a spoofed flood evicts its own sources).
pub const FLOW_RATE_MAX_ENTRIES: u32 = 16_384;
/// Entries of `SG_COUNTERS`: one per (direction, reason), `reason::counter_index`.
pub const COUNTERS_LEN: u32 = 2 * MAX_REASONS;

pub const CONFIG: MapSpec = MapSpec::indexed::<IfaceConfig>("SG_CONFIG", MapKind::Array, "IfaceConfig", 1)
    .purpose(
        "policy mode (posture or groups), postures, active generation, rule set and revoke numbers, \
              ACL epoch, conntrack timeouts, flags (monitor, flow logs, implicit allowances, ACL), \
              attach metadata",
    );

pub const META: MapSpec = MapSpec::indexed::<InstanceMeta>("SG_META", MapKind::Array, "InstanceMeta", 1)
    .purpose(
        "what the instance says about itself: its map layout number, the build and object hash of \
         its programs, upgrades done (userspace only; checked before any pinned map is reused)",
    );

pub const COUNTERS: MapSpec =
    MapSpec::indexed::<Counter>("SG_COUNTERS", MapKind::PerCpuArray, "Counter", COUNTERS_LEN)
        .note("one per direction and reason")
        .purpose("packets and bytes per (direction, verdict reason): every packet counts once");

pub const SCRATCH: MapSpec =
    MapSpec::indexed::<PacketSummary>("SG_SCRATCH", MapKind::PerCpuArray, "PacketSummary", 1)
        .purpose("the summary of the packet being decided (keeps the 512-byte BPF stack free)");

pub const LAST_PARSE: MapSpec =
    MapSpec::indexed::<PacketSummary>("SG_LAST_PARSE", MapKind::Array, "PacketSummary", 1).purpose(
        "the last packet's summary with its verdict and rule slot, written only with \
              CONFIG_RECORD_PARSE (verdict tables, replay)",
    );

pub const PFX_ROOT: MapSpec =
    MapSpec::indexed::<PrefixRoot>("SG_PFX_ROOT", MapKind::Array, "PrefixRoot", ROOT_TABLES)
        .note("2 generations x 2 layers (groups, ACL) x 2 directions x 2 families, by `policy::root_index`; a value is 65,536 slots")
        .purpose(
            "prefix table roots: the peer address's first 16 bits -> a slot (port set, node, tip or \
              nothing)",
        );

pub const PFX_NODES: MapSpec = MapSpec::indexed::<PrefixNode>(
    "SG_PFX_NODES",
    MapKind::Array,
    "PrefixNode",
    GENERATIONS * nodes_for(PREFIX_CAPACITY),
)
.note("2 generations x 2,048 (attach --prefix-capacity / 16), by `policy::pool_index`")
.purpose("prefix table nodes: below a prefix (path-compressed), the next address byte -> a slot");

pub const PFX_TIPS: MapSpec = MapSpec::indexed::<PrefixTip>(
    "SG_PFX_TIPS",
    MapKind::Array,
    "PrefixTip",
    GENERATIONS * PREFIX_CAPACITY,
)
.note("2 generations x 32,768 (attach --prefix-capacity)")
.purpose(
    "prefix table tips: one prefix -> the slot inside it, the slot outside (a chain for a few prefixes)",
);

pub const PORT_SETS: MapSpec = MapSpec::indexed::<PortSetRef>(
    "SG_PORT_SETS",
    MapKind::Array,
    "PortSetRef",
    GENERATIONS * PREFIX_CAPACITY,
)
.note("2 generations x 32,768 (attach --prefix-capacity)")
.purpose("the port sets a prefix table's slots name: slices of SG_SEGMENTS");

pub const SEGMENTS: MapSpec =
    MapSpec::indexed::<Segment>("SG_SEGMENTS", MapKind::Array, "Segment", GENERATIONS * SEGMENTS_PER_GEN)
        .note("2 generations x 131,072")
        .purpose(
            "compiled port sets: sorted disjoint flow-key ranges, each with the first rule (file order) \
              allowing it",
        );

pub const RULE_HITS: MapSpec =
    MapSpec::indexed::<u64>("SG_RULE_HITS", MapKind::PerCpuArray, "u64", GENERATIONS * MAX_RULES)
        .note("2 generations x 16,384, by `policy::rule_slot`")
        .purpose(
            "packets each rule allowed (verdict rule_allow: a flow's first packet, or an allowed packet \
              no flow tracks); tracked packets count as ct_established / ct_reply instead",
        );

pub const ACL_HITS: MapSpec =
    MapSpec::indexed::<u64>("SG_ACL_HITS", MapKind::PerCpuArray, "u64", GENERATIONS * MAX_ACL_ENTRIES)
        .note("2 generations x 16,384, by `policy::acl_slot`")
        .purpose(
            "packets each network ACL entry decided (allowed or denied), every packet: ACLs are stateless",
        );

pub const CT: MapSpec =
    MapSpec::keyed::<CtKey, CtEntry>("SG_CT", MapKind::Hash, ("CtKey", "CtEntry"), CT_MAX_ENTRIES)
        .flags(F_NO_PREALLOC)
        .note("attach --ct-size")
        .purpose(
            "flows that saw both directions; never evicted (full: the flow that would join gets ct_full); \
             an entry (96 bytes) holds state, counters, the allowing rule, each side's cached ACL allow \
             and TCP sequence space",
        );

pub const CT_NEW: MapSpec =
    MapSpec::keyed::<CtKey, CtEntry>("SG_CT_NEW", MapKind::LruHash, ("CtKey", "CtEntry"), CT_NEW_MAX_ENTRIES)
        .flags(F_NO_COMMON_LRU)
        .note("attach --ct-new-size; each CPU's LRU list holds its share")
        .purpose(
            "flows not answered yet (TCP handshakes, one-way UDP, ICMP echo): floods evict each other, \
              never an established flow",
        );

pub const CT_SEEN: MapSpec = MapSpec::indexed::<u64>("SG_CT_SEEN", MapKind::Array, "u64", SEEN_WORDS)
    .flags(F_MMAPABLE)
    .note("2 MiB: 1,048,576 slots x 2 banks, a slot's two bytes side by side")
    .purpose(
        "presence filter of SG_CT and SG_CT_NEW: one byte per slot and bank; a packet whose slot is \
              clear in both banks skips both lookups (rebuilt by conntrack gc)",
    );

pub const FRAGS: MapSpec = MapSpec::keyed::<FragKey, FragEntry>(
    "SG_FRAGS",
    MapKind::LruHash,
    ("FragKey", "FragEntry"),
    FRAGS_MAX_ENTRIES,
)
.purpose(
    "datagrams (source, destination, protocol, id) whose first fragment was accepted, with an \
              expiry: their other fragments may pass",
);

pub const LOCAL: MapSpec =
    MapSpec::keyed::<LocalAddr, u8>("SG_LOCAL", MapKind::Hash, ("LocalAddr", "u8"), LOCAL_MAX_ENTRIES)
        .purpose(
            "the interface's own addresses (from the kernel, kept current by userspace): a packet arriving \
     with one as its source is dropped (src_is_local) and creates no state",
        );

pub const FLOW_EVENTS: MapSpec = MapSpec::ring("SG_FLOW_EVENTS", "FlowEvent or FlowEnd", FLOW_EVENTS_BYTES)
    .note("bytes, 4,096 events")
    .purpose(
        "flow-log events for the daemon, with CONFIG_FLOW_LOG: accept and reject (FlowEvent), flows \
              the datapath ended (FlowEnd: key and final entry)",
    );

pub const FLOW_CFG: MapSpec =
    MapSpec::indexed::<FlowLogConfig>("SG_FLOW_CFG", MapKind::Array, "FlowLogConfig", 1).purpose(
        "flow-log rate limits: per-source reject and per-CPU GCRA interval and burst (zero: no limit)",
    );

pub const FLOW_RATE: MapSpec = MapSpec::keyed::<RateKey, u64>(
    "SG_FLOW_RATE",
    MapKind::LruHash,
    ("RateKey", "u64"),
    FLOW_RATE_MAX_ENTRIES,
)
.purpose("per-source GCRA state (theoretical arrival time, ns) of reject events");

pub const FLOW_STATS: MapSpec =
    MapSpec::indexed::<FlowLogStats>("SG_FLOW_STATS", MapKind::PerCpuArray, "FlowLogStats", 1).purpose(
        "flow-log events emitted, suppressed (rate_limited, cpu_limited) and lost (ring_full); the \
              per-CPU limit's and the datapath warning's GCRA state",
    );

pub const CLOCK: MapSpec = MapSpec::indexed::<ClockCache>("SG_CLOCK", MapKind::PerCpuArray, "ClockCache", 1)
    .purpose(
        "the coarse monotonic time each CPU last read and the jiffy it read it in: the clock helper \
              is called once per tick per CPU, not per packet",
    );

pub const AYA_LOGS: MapSpec = MapSpec::ring("AYA_LOGS", "aya-log record", 1 << 17)
    .owned_by(Owner::AyaLog)
    .note("bytes, aya-log's own")
    .purpose(
        "datapath log records (a conntrack-full warning, at most one per second per CPU), forwarded by \
              the daemon to its log",
    );

/// Every map of an instance, in the order of the map table of docs/datapath.md.
pub const ALL: &[MapSpec] = &[
    CONFIG,
    META,
    COUNTERS,
    SCRATCH,
    LAST_PARSE,
    PFX_ROOT,
    PFX_NODES,
    PFX_TIPS,
    PORT_SETS,
    SEGMENTS,
    RULE_HITS,
    ACL_HITS,
    CT,
    CT_NEW,
    CT_SEEN,
    FRAGS,
    LOCAL,
    FLOW_EVENTS,
    FLOW_CFG,
    FLOW_RATE,
    FLOW_STATS,
    CLOCK,
    AYA_LOGS,
];

/// The maps sgctl owns (and pins): every map of the registry but the datapath's own.
pub fn owned() -> impl Iterator<Item = &'static MapSpec> {
    ALL.iter().filter(|m| m.owner == Owner::Sgctl)
}

/// The entry named `name`, if any.
pub fn spec(name: &str) -> Option<&'static MapSpec> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sizes_sane() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
            assert!(a.max_entries > 0, "{}", a.name);
            assert!(!a.purpose.is_empty(), "{}", a.name);
            assert_eq!(a.kind == MapKind::RingBuf, a.key_size == 0 && a.value_size == 0, "{}", a.name);
        }
        assert_eq!(spec("SG_CT").map(|m| m.max_entries), Some(CT_MAX_ENTRIES));
        assert!(spec("SG_NOPE").is_none());
    }
}
