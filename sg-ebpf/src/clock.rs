//! The datapath's one clock (`sg_common::clock`): coarse monotonic nanoseconds, with the
//! helper called at most once per tick per CPU.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::maps::SG_CLOCK;

/// `CLOCK_MONOTONIC_COARSE` in ns (possibly one tick late).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments (the verifier turns it into a load of jiffies_64).
    let j = unsafe { bpf_jiffies64() };
    let Some(c) = SG_CLOCK.get_ptr_mut(0) else {
        // SAFETY: helper without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's entry of a per-CPU map, valid for the program's run; programs on one
    // CPU do not preempt each other in the middle of XDP or TC.
    let c = unsafe { &mut *c };
    if c.jiffies != j || c.ns == 0 {
        // SAFETY: helper without arguments.
        c.ns = unsafe { bpf_ktime_get_coarse_ns() };
        c.jiffies = j;
    }
    c.ns
}
