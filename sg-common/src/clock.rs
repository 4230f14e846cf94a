//! The datapath's clock cache. Timestamps are `CLOCK_MONOTONIC_COARSE` (what
//! `bpf_ktime_get_coarse_ns` reads, and userspace with `clock_gettime`), which only moves once
//! per tick. `bpf_jiffies64` counts the same ticks and, unlike the clock helper, is rewritten
//! by the verifier into a plain load (no call, no retpoline): so each CPU keeps the last
//! coarse time it read with the jiffy it read it in, and calls the helper again only when the
//! jiffy has moved. The values are those of the coarse clock, possibly one tick late.

/// One CPU's entry of `SG_CLOCK`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockCache {
    /// `bpf_jiffies64` when `ns` was read.
    pub jiffies: u64,
    /// `bpf_ktime_get_coarse_ns` then.
    pub ns: u64,
    /// When this CPU last swept `SG_CT` for expired flows (the sweep a full table triggers;
    /// see `sg-ebpf/src/conntrack.rs`), on the same clock.
    pub reaped_ns: u64,
}

const _: () = assert!(size_of::<ClockCache>() == 24);

crate::impl_pod!(ClockCache);
