//! Map and program names, and map sizes, shared by both sides.
//!
//! The maps themselves are declared in `sg-ebpf/src/maps.rs` (with a one-line purpose each);
//! userspace opens them by these names and pins them under
//! `/sys/fs/bpf/sg/<netns cookie>/<interface>/`.

use crate::reason::MAX_REASONS;

/// XDP program deciding ingress packets.
pub const PROG_INGRESS: &str = "sg_ingress";
/// TC (TCX or clsact) program deciding egress packets.
pub const PROG_EGRESS: &str = "sg_egress";

/// `Array<IfaceConfig>`, one entry: postures and attach metadata.
pub const MAP_CONFIG: &str = "SG_CONFIG";
/// `PerCpuArray<Counter>`: packets/bytes per (direction, reason).
pub const MAP_COUNTERS: &str = "SG_COUNTERS";
/// `Array<PacketSummary>`, one entry: the last parsed packet, when `CONFIG_RECORD_PARSE` is set.
pub const MAP_LAST_PARSE: &str = "SG_LAST_PARSE";

/// `PerCpuArray<PacketSummary>`, one entry: scratch space of the packet being decided.
pub const MAP_SCRATCH: &str = "SG_SCRATCH";

/// `LpmTrie<LpmDataV4, PortSetRef>`: IPv4 peer prefix -> port set, per generation/direction.
pub const MAP_LPM_V4: &str = "SG_LPM_V4";
/// `LpmTrie<LpmDataV6, PortSetRef>`: IPv6 peer prefix -> port set, per generation/direction.
pub const MAP_LPM_V6: &str = "SG_LPM_V6";
/// `Array<Segment>`: compiled port sets; generation g owns `g * SEGMENTS_PER_GEN ..`.
pub const MAP_SEGMENTS: &str = "SG_SEGMENTS";
/// `PerCpuArray<u64>`: hits per rule; generation g owns `g * MAX_RULES ..`.
pub const MAP_RULE_HITS: &str = "SG_RULE_HITS";

/// `HashMap<CtKey, CtEntry>` (no prealloc): flows that saw both directions.
pub const MAP_CT: &str = "SG_CT";
/// `LruHashMap<CtKey, CtEntry>`: flows not answered yet.
pub const MAP_CT_NEW: &str = "SG_CT_NEW";

/// Default size of `SG_CT` (settable at attach).
pub const CT_MAX_ENTRIES: u32 = 262_144;
/// Default size of `SG_CT_NEW` (settable at attach).
pub const CT_NEW_MAX_ENTRIES: u32 = 65_536;

/// `Array<u64>` (mmapable), `SEEN_BANKS` x `SEEN_WORDS`: presence filter of the conntrack
/// tables, one byte per slot (`conntrack::seen_slot`).
pub const MAP_CT_SEEN: &str = "SG_CT_SEEN";

/// `LruHashMap<FragKey, FragEntry>`: datagrams whose first fragment was accepted.
pub const MAP_FRAGS: &str = "SG_FRAGS";
/// Size of `SG_FRAGS`.
pub const FRAGS_MAX_ENTRIES: u32 = 8192;

/// `RingBuf` of `flowlog::FlowEvent` and `flowlog::FlowEnd`: flow-log events for the daemon.
pub const MAP_FLOW_EVENTS: &str = "SG_FLOW_EVENTS";
/// Size of `SG_FLOW_EVENTS` in bytes (4096 events).
pub const FLOW_EVENTS_BYTES: u32 = 256 * 1024;
/// `Array<flowlog::FlowLogConfig>`, one entry: event rate limits.
pub const MAP_FLOW_CFG: &str = "SG_FLOW_CFG";
/// `LruHashMap<flowlog::RateKey, u64>`: per-source GCRA state of reject events.
pub const MAP_FLOW_RATE: &str = "SG_FLOW_RATE";
/// Sources tracked by `SG_FLOW_RATE` (LRU: a spoofed flood evicts its own sources).
pub const FLOW_RATE_MAX_ENTRIES: u32 = 16_384;
/// `PerCpuArray<flowlog::FlowLogStats>`, one entry: events emitted and suppressed.
pub const MAP_FLOW_STATS: &str = "SG_FLOW_STATS";

/// Every map an instance owns (and pins).
pub const ALL_MAPS: &[&str] = &[
    MAP_CONFIG,
    MAP_COUNTERS,
    MAP_LAST_PARSE,
    MAP_SCRATCH,
    MAP_LPM_V4,
    MAP_LPM_V6,
    MAP_SEGMENTS,
    MAP_RULE_HITS,
    MAP_CT,
    MAP_CT_NEW,
    MAP_CT_SEEN,
    MAP_FRAGS,
    MAP_FLOW_EVENTS,
    MAP_FLOW_CFG,
    MAP_FLOW_RATE,
    MAP_FLOW_STATS,
];

pub const COUNTERS_LEN: u32 = 2 * MAX_REASONS;
