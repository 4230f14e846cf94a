//! Map and program names, and map sizes, shared by both sides.
//!
//! The maps themselves are declared in `sg-ebpf/src/maps.rs` (with a one-line purpose each);
//! userspace opens them by these names and pins them under
//! `/sys/fs/bpf/sg/<netns inode>/<interface>/`.

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

/// Every map an instance owns (and pins).
pub const ALL_MAPS: &[&str] = &[MAP_CONFIG, MAP_COUNTERS, MAP_LAST_PARSE, MAP_SCRATCH];

pub const COUNTERS_LEN: u32 = 2 * MAX_REASONS;
