//! Every map of an instance. One instance (programs + maps) per attached interface; userspace
//! pins them under `/sys/fs/bpf/sg/<netns cookie>/<interface>/`. Names: `sg_common::maps`.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use sg_common::{
    Counter, IfaceConfig, PacketSummary,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey, SEEN_BANKS, SEEN_WORDS},
    flowlog::{FlowLogConfig, FlowLogStats, RateKey},
    maps::{
        COUNTERS_LEN, CT_MAX_ENTRIES, CT_NEW_MAX_ENTRIES, FLOW_EVENTS_BYTES, FLOW_RATE_MAX_ENTRIES,
        FRAGS_MAX_ENTRIES,
    },
    policy::{
        GENERATIONS, LPM_MAX_ENTRIES, LpmDataV4, LpmDataV6, MAX_RULES, PortSetRef, SEGMENTS_PER_GEN, Segment,
    },
};

/// Postures and attach metadata of the interface (one entry, index 0).
#[map]
pub static SG_CONFIG: Array<IfaceConfig> = Array::with_max_entries(1, 0);

/// Packets and bytes per (direction, reason), per CPU: `reason::counter_index`.
#[map]
pub static SG_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Per-CPU scratch space for the summary of the packet being decided (keeps the 512-byte
/// BPF stack free).
#[map]
pub static SG_SCRATCH: PerCpuArray<PacketSummary> = PerCpuArray::with_max_entries(1, 0);

/// Last parsed packet, written only with `CONFIG_RECORD_PARSE` (tests).
#[map]
pub static SG_LAST_PARSE: Array<PacketSummary> = Array::with_max_entries(1, 0);

/// IPv4 peer prefix (per generation and direction) -> compiled port set.
#[map]
pub static SG_LPM_V4: LpmTrie<LpmDataV4, PortSetRef> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);

/// IPv6 peer prefix (per generation and direction) -> compiled port set.
#[map]
pub static SG_LPM_V6: LpmTrie<LpmDataV6, PortSetRef> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);

/// Compiled port sets: sorted disjoint flow-key segments, generation g at g * SEGMENTS_PER_GEN.
#[map]
pub static SG_SEGMENTS: Array<Segment> = Array::with_max_entries(GENERATIONS * SEGMENTS_PER_GEN, 0);

/// Packets allowed per rule, per CPU; generation g at g * MAX_RULES.
#[map]
pub static SG_RULE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GENERATIONS * MAX_RULES, 0);

/// Flows that saw both directions (never evicted; full means new flows get `ct_full`).
/// Entries are allocated on insert; size set at attach.
#[map]
pub static SG_CT: HashMap<CtKey, CtEntry> = HashMap::with_max_entries(CT_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Flows not answered yet (TCP handshakes, one-way UDP, ICMP echo): LRU, so floods of new
/// flows evict each other, never an established flow.
#[map]
pub static SG_CT_NEW: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_NEW_MAX_ENTRIES, 0);

/// Presence filter of `SG_CT` and `SG_CT_NEW`: one byte per slot of a hash of the flow, two
/// banks. Set in both banks whenever a flow is inserted; a packet whose slot is clear in both
/// belongs to no tracked flow and skips the two table lookups. Userspace rebuilds one bank at a
/// time (`sgctl conntrack gc`) through a shared mapping (byte stores, never read-modify-write).
#[map]
pub static SG_CT_SEEN: Array<u64> = Array::with_max_entries(SEEN_BANKS * SEEN_WORDS, BPF_F_MMAPABLE);

/// Datagrams whose first fragment was accepted (their other fragments may pass).
#[map]
pub static SG_FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAGS_MAX_ENTRIES, 0);

/// Flow-log events (`flowlog::FlowEvent`) for the daemon, when `CONFIG_FLOW_LOG` is set.
#[map]
pub static SG_FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(FLOW_EVENTS_BYTES, 0);

/// Rate limits of flow-log events (one entry; zero means no limit).
#[map]
pub static SG_FLOW_CFG: Array<FlowLogConfig> = Array::with_max_entries(1, 0);

/// Per-source GCRA state (theoretical arrival time, ns) of reject events.
#[map]
pub static SG_FLOW_RATE: LruHashMap<RateKey, u64> = LruHashMap::with_max_entries(FLOW_RATE_MAX_ENTRIES, 0);

/// Per-CPU: events emitted and suppressed (rate limits, full ring buffer), and the CPU limit's
/// GCRA state.
#[map]
pub static SG_FLOW_STATS: PerCpuArray<FlowLogStats> = PerCpuArray::with_max_entries(1, 0);
