//! Every map of an instance. One instance (programs + maps) per attached interface; userspace
//! pins them under `/sys/fs/bpf/sg/<netns inode>/<interface>/`. Names: `sg_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use sg_common::{Counter, IfaceConfig, PacketSummary, maps::COUNTERS_LEN};

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
