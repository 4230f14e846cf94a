//! Benchmark stage stops: where the datapath returns early when its read-only global
//! `SG_STAGE_STOP` says so. Only a second build of the datapath object has them (feature
//! `stages` of sg-ebpf, `sg_bench::STAGED_OBJECT`), which the benchmark loads into private
//! instances to measure the cost of a path up to each stage ("where the time goes"); the
//! object sgctl attaches is built without them.

/// The global's name in the datapath object.
pub const STAGE_STOP_GLOBAL: &str = "SG_STAGE_STOP";

/// No stop: the whole pipeline (every attached instance).
pub const STAGE_FULL: u32 = 0;
/// After the packet is parsed into its summary: passed (`posture_allow`).
pub const STAGE_PARSED: u32 = 1;
/// A packet the presence filter says may be tracked, once its flow key is built: passed
/// (`ct_established`), before any lookup.
pub const STAGE_CT_KEYED: u32 = 2;
/// A packet found in `SG_CT` (established flows), before the entry is updated: passed.
pub const STAGE_CT_FOUND: u32 = 3;
/// A packet the policy allowed, before its flow is created: passed (`rule_allow`).
pub const STAGE_POLICY: u32 = 4;
/// A flow start the policy allowed, once its flow key is built, before the insert: passed.
pub const STAGE_NEW_KEYED: u32 = 5;
