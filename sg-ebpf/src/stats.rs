//! The single exit: count the verdict reason (and the rule that allowed the packet), record
//! the packet's summary for tests, return the reason's action.

use sg_common::{Action, Direction, policy::NO_RULE, reason::counter_index};

use crate::{
    maps::{SG_COUNTERS, SG_LAST_PARSE, SG_RULE_HITS, SG_SCRATCH},
    policy::Verdict,
};

/// Records `v` for `dir` (per-CPU counters) and returns its action.
#[inline(always)]
pub fn verdict(dir: Direction, v: Verdict, bytes: u64) -> Action {
    if let Some(c) = SG_COUNTERS.get_ptr_mut(counter_index(dir, v.reason)) {
        // SAFETY: per-CPU slot, valid for the program's run; no concurrent writer on this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
    if v.rule_slot != NO_RULE
        && let Some(h) = SG_RULE_HITS.get_ptr_mut(v.rule_slot)
    {
        // SAFETY: as above.
        unsafe { *h += 1 };
    }
    if v.flow_log {
        crate::flowlog::emit(dir, &v, bytes);
    }
    if v.record
        && let (Some(slot), Some(s)) = (SG_LAST_PARSE.get_ptr_mut(0), SG_SCRATCH.get_ptr_mut(0))
    {
        // SAFETY: valid map value pointers; the scratch entry holds this packet's summary
        // (parse() zeroed it first) and the slot is only used by tests.
        unsafe {
            (*s).seq = (*slot).seq.wrapping_add(1);
            (*s).reason = v.reason as u32;
            (*s).rule = v.rule_slot;
            *slot = *s;
        }
    }
    v.reason.action()
}
