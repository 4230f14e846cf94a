//! The single exit: count the verdict reason, return its action.

use sg_common::{Action, Direction, Reason, reason::counter_index};

use crate::maps::SG_COUNTERS;

/// Records `reason` for `dir` (packets and bytes, per CPU) and returns its action.
#[inline(always)]
pub fn verdict(dir: Direction, reason: Reason, bytes: u64) -> Action {
    if let Some(c) = SG_COUNTERS.get_ptr_mut(counter_index(dir, reason)) {
        // SAFETY: per-CPU slot, valid for the program's run; no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    reason.action()
}
