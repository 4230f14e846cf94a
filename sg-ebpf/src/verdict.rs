//! A decision ([`Verdict`]) and the single exit every packet leaves through ([`exit`]): count the
//! verdict's reason (and the rule that allowed the packet), emit its flow-log event, record the
//! packet's summary for tests, and return the reason's action.

use aya_ebpf::EbpfContext;
use sg_common::{
    Action, Direction, Reason,
    flowlog::{EV_ACCEPT, EV_REJECT},
    policy::NO_RULE,
    reason::counter_index,
};

use crate::{
    flowlog, log,
    maps::{SG_COUNTERS, SG_LAST_PARSE, SG_RULE_HITS, SG_SCRATCH},
};

/// A decision: its reason, and the rule-hit slot (`sg_common::policy::rule_slot`) of the rule
/// that allowed the packet, or `NO_RULE`.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub reason: Reason,
    pub rule_slot: u32,
    /// Record the packet's summary in `SG_LAST_PARSE` (`CONFIG_RECORD_PARSE`, tests).
    pub record: bool,
    /// Monitor mode (`CONFIG_MONITOR`): the verdict is counted, but a drop passes.
    pub monitor: bool,
    /// Flow logs on (`CONFIG_FLOW_LOG`): the exit emits the event of this verdict, if any.
    pub flow_log: bool,
    /// This packet started a tracked flow (an `EV_ACCEPT` event).
    pub new_flow: bool,
    /// `acl_deny`: the ACL slot (`sg_common::policy::acl_slot`) of the deny entry, recorded in
    /// the summary's `rule` for tests (the entry's hit is counted where the ACL decided).
    pub acl_slot: u32,
}

impl Verdict {
    #[inline(always)]
    pub const fn of(reason: Reason) -> Self {
        Verdict {
            reason,
            rule_slot: NO_RULE,
            record: false,
            monitor: false,
            flow_log: false,
            new_flow: false,
            acl_slot: NO_RULE,
        }
    }

    /// Allowed by the rule in `rule_slot`.
    #[inline(always)]
    pub const fn by_rule(reason: Reason, rule_slot: u32) -> Self {
        Verdict { rule_slot, ..Verdict::of(reason) }
    }
}

/// What the program returns: the verdict's action, except that monitor mode passes drops.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Pass,
    Drop,
}

/// Records `v` for `dir` (per-CPU counters, rule hits, flow log, test record) and returns
/// what the program does with the packet.
#[inline(always)]
pub fn exit<C: EbpfContext>(ctx: &C, dir: Direction, v: Verdict, bytes: u64) -> Exit {
    if v.reason == Reason::CtFull {
        log::ct_full(ctx);
    }
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
    let action = v.reason.action();
    if v.flow_log {
        // One call site: the emitter is inlined once.
        let kind = if v.new_flow {
            EV_ACCEPT
        } else if action == Action::Drop {
            EV_REJECT
        } else {
            0
        };
        if kind != 0 {
            flowlog::emit(dir, kind, v.reason, v.rule_slot, bytes);
        }
    }
    if v.record
        && let (Some(slot), Some(s)) = (SG_LAST_PARSE.get_ptr_mut(0), SG_SCRATCH.get_ptr_mut(0))
    {
        // SAFETY: valid map value pointers; the scratch entry holds this packet's summary
        // (parse() zeroed it first) and the slot is only used by tests.
        unsafe {
            (*s).seq = (*slot).seq.wrapping_add(1);
            (*s).reason = v.reason as u32;
            (*s).rule = if v.reason == Reason::AclDeny { v.acl_slot } else { v.rule_slot };
            *slot = *s;
        }
    }
    match action {
        Action::Pass => Exit::Pass,
        // Monitor mode: counted as a drop, passed.
        Action::Drop if v.monitor => Exit::Pass,
        Action::Drop => Exit::Drop,
    }
}
