//! Every map of an instance, declared with the sizes and flags of its entry in the map
//! registry (`sg_common::maps`), which says what each one is for; a static's name is its
//! entry's name (a test checks the loaded object against the registry). One instance (programs
//! and maps) per attached interface; userspace pins them under
//! `/sys/fs/bpf/sg/<netns cookie>/<interface>/`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sg_common::{
    Counter, IfaceConfig, PacketSummary,
    clock::ClockCache,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey},
    flowlog::{FlowLogConfig, FlowLogStats, RateKey},
    layout::InstanceMeta,
    local::LocalAddr,
    maps as reg,
    policy::{PortSetRef, PrefixNode, PrefixRoot, PrefixTip, Segment},
};

/// [`reg::CONFIG`]: the interface's config (one entry, index 0).
#[map]
pub static SG_CONFIG: Array<IfaceConfig> =
    Array::with_max_entries(reg::CONFIG.max_entries, reg::CONFIG.flags);

/// [`reg::META`]: the instance's layout number and build (userspace only).
#[map]
pub static SG_META: Array<InstanceMeta> = Array::with_max_entries(reg::META.max_entries, reg::META.flags);

/// [`reg::COUNTERS`]: packets and bytes per (direction, reason), per CPU.
#[map]
pub static SG_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(reg::COUNTERS.max_entries, reg::COUNTERS.flags);

/// [`reg::SCRATCH`]: the summary of the packet being decided, per CPU.
#[map]
pub static SG_SCRATCH: PerCpuArray<PacketSummary> =
    PerCpuArray::with_max_entries(reg::SCRATCH.max_entries, reg::SCRATCH.flags);

/// [`reg::LAST_PARSE`]: the last packet's summary (tests).
#[map]
pub static SG_LAST_PARSE: Array<PacketSummary> =
    Array::with_max_entries(reg::LAST_PARSE.max_entries, reg::LAST_PARSE.flags);

/// [`reg::PFX_ROOT`]: prefix table roots.
#[map]
pub static SG_PFX_ROOT: Array<PrefixRoot> =
    Array::with_max_entries(reg::PFX_ROOT.max_entries, reg::PFX_ROOT.flags);

/// [`reg::PFX_NODES`]: prefix table nodes.
#[map]
pub static SG_PFX_NODES: Array<PrefixNode> =
    Array::with_max_entries(reg::PFX_NODES.max_entries, reg::PFX_NODES.flags);

/// [`reg::PFX_TIPS`]: prefix table tips.
#[map]
pub static SG_PFX_TIPS: Array<PrefixTip> =
    Array::with_max_entries(reg::PFX_TIPS.max_entries, reg::PFX_TIPS.flags);

/// [`reg::PORT_SETS`]: the port sets of the prefix tables.
#[map]
pub static SG_PORT_SETS: Array<PortSetRef> =
    Array::with_max_entries(reg::PORT_SETS.max_entries, reg::PORT_SETS.flags);

/// [`reg::SEGMENTS`]: compiled port sets.
#[map]
pub static SG_SEGMENTS: Array<Segment> =
    Array::with_max_entries(reg::SEGMENTS.max_entries, reg::SEGMENTS.flags);

/// [`reg::RULE_HITS`]: packets each rule allowed, per CPU, by rule slot.
#[map]
pub static SG_RULE_HITS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(reg::RULE_HITS.max_entries, reg::RULE_HITS.flags);

/// [`reg::ACL_HITS`]: packets each network ACL entry decided, per CPU, by ACL slot.
#[map]
pub static SG_ACL_HITS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(reg::ACL_HITS.max_entries, reg::ACL_HITS.flags);

/// [`reg::CT`]: flows that saw both directions.
#[map]
pub static SG_CT: HashMap<CtKey, CtEntry> = HashMap::with_max_entries(reg::CT.max_entries, reg::CT.flags);

/// [`reg::CT_NEW`]: flows not answered yet (LRU).
#[map]
pub static SG_CT_NEW: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(reg::CT_NEW.max_entries, reg::CT_NEW.flags);

/// [`reg::CT_SEEN`]: presence filter of the two conntrack tables (see `conntrack.rs`).
#[map]
pub static SG_CT_SEEN: Array<u64> = Array::with_max_entries(reg::CT_SEEN.max_entries, reg::CT_SEEN.flags);

/// [`reg::FRAGS`]: datagrams whose first fragment was accepted.
#[map]
pub static SG_FRAGS: LruHashMap<FragKey, FragEntry> =
    LruHashMap::with_max_entries(reg::FRAGS.max_entries, reg::FRAGS.flags);

/// [`reg::LOCAL`]: the interface's own addresses.
#[map]
pub static SG_LOCAL: HashMap<LocalAddr, u8> =
    HashMap::with_max_entries(reg::LOCAL.max_entries, reg::LOCAL.flags);

/// [`reg::FLOW_EVENTS`]: flow-log events for the daemon.
#[map]
pub static SG_FLOW_EVENTS: RingBuf =
    RingBuf::with_byte_size(reg::FLOW_EVENTS.max_entries, reg::FLOW_EVENTS.flags);

/// [`reg::FLOW_CFG`]: flow-log rate limits.
#[map]
pub static SG_FLOW_CFG: Array<FlowLogConfig> =
    Array::with_max_entries(reg::FLOW_CFG.max_entries, reg::FLOW_CFG.flags);

/// [`reg::FLOW_RATE`]: per-source GCRA state of reject events.
#[map]
pub static SG_FLOW_RATE: LruHashMap<RateKey, u64> =
    LruHashMap::with_max_entries(reg::FLOW_RATE.max_entries, reg::FLOW_RATE.flags);

/// [`reg::FLOW_STATS`]: flow-log events emitted and suppressed, per CPU.
#[map]
pub static SG_FLOW_STATS: PerCpuArray<FlowLogStats> =
    PerCpuArray::with_max_entries(reg::FLOW_STATS.max_entries, reg::FLOW_STATS.flags);

/// [`reg::CLOCK`]: each CPU's cached coarse time and its jiffy.
#[map]
pub static SG_CLOCK: PerCpuArray<ClockCache> =
    PerCpuArray::with_max_entries(reg::CLOCK.max_entries, reg::CLOCK.flags);
