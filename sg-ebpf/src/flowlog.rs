//! Flow-log events (`sg_common::flowlog`): a new accepted flow, or a rejected packet
//! (rate-limited per source, then per CPU), or a flow the datapath ended, written to
//! `SG_FLOW_EVENTS`. Only called when the interface's config has `CONFIG_FLOW_LOG`. Never
//! changes the verdict.

use core::mem::MaybeUninit;

use sg_common::{
    Direction, Reason,
    conntrack::{CtEntry, CtKey},
    flowlog::{EV_END, EV_REJECT, FlowEnd, FlowEvent, FlowLogConfig, FlowLogStats, RateKey, gcra_allow},
    policy::slot_rule,
};

use crate::maps::{SG_CONFIG, SG_FLOW_CFG, SG_FLOW_EVENTS, SG_FLOW_RATE, SG_FLOW_STATS, SG_SCRATCH};

/// Copies `n` words of type `W` (an array or struct copy becomes a byte-at-a-time loop or a
/// `memcpy` call in BPF).
///
/// # Safety
/// `to` and `from` must be valid for `n` words and aligned for `W`.
#[inline(always)]
unsafe fn copy_words<W: Copy>(to: *mut W, from: *const W, n: usize) {
    for i in 0..n {
        // SAFETY: in bounds and aligned, as the caller promises.
        unsafe { to.add(i).write(from.add(i).read()) };
    }
}

/// Copies a 16-byte address as four 32-bit words.
///
/// # Safety
/// `to` must be valid for 16 bytes and 4-byte aligned; `from` is 4-byte aligned (an address
/// field of the 8-byte aligned packet summary).
#[inline(always)]
unsafe fn copy_addr(to: *mut u8, from: &[u8; 16]) {
    #[allow(clippy::cast_ptr_alignment, reason = "both 4-byte aligned, as the caller promises")]
    // SAFETY: as the caller promises.
    unsafe {
        copy_words(to.cast::<u32>(), from.as_ptr().cast::<u32>(), 4);
    }
}

/// The per-CPU limit every event passes (counted when it does not).
#[inline(always)]
fn cpu_allows(stats: &mut FlowLogStats, lim: &FlowLogConfig, now: u64) -> bool {
    if gcra_allow(&mut stats.cpu_tat, now, lim.cpu_interval_ns, lim.cpu_burst_ns) {
        return true;
    }
    stats.cpu_limited += 1;
    false
}

/// Deletes a flow the datapath ends (`delete`, true when this run removed it) and emits its
/// `EV_END` with the final counters. The entry is copied before the delete (a preallocated
/// map may hand a deleted element to another CPU's insert at once) and submitted only when
/// this run's delete removed it (two CPUs may find the same expired flow).
#[inline(always)]
pub fn end_flow(dir: Direction, key: &CtKey, e: &CtEntry, cause: u8, delete: impl FnOnce() -> bool) {
    let (Some(stats), Some(lim)) = (SG_FLOW_STATS.get_ptr_mut(0), SG_FLOW_CFG.get(0)) else {
        delete();
        return;
    };
    // SAFETY: this CPU's entry of a per-CPU map, valid for the program's run.
    let stats: &mut FlowLogStats = unsafe { &mut *stats };
    let now = crate::clock::now_ns();
    if !cpu_allows(stats, lim, now) {
        delete();
        return;
    }
    let Some(mut entry) = SG_FLOW_EVENTS.reserve::<FlowEnd>(0) else {
        delete();
        stats.ring_full += 1;
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved, 8-byte aligned slot of size_of::<FlowEnd>() bytes, every
    // field written; the key (2-byte aligned) is copied as u16 words, the entry (a map value,
    // 8-byte aligned) as u64 words.
    unsafe {
        copy_words((&raw mut (*ev).key).cast::<u16>(), core::ptr::from_ref(key).cast::<u16>(), KEY_U16S);
        copy_words((&raw mut (*ev).entry).cast::<u64>(), core::ptr::from_ref(e).cast::<u64>(), ENTRY_U64S);
        (*ev).kind = EV_END;
        (*ev).cause = cause;
        (*ev).dir = dir as u8;
        (*ev)._pad = [0; 5];
    }
    if delete() {
        entry.submit(0);
        stats.emitted += 1;
    } else {
        entry.discard(0);
    }
}

const KEY_U16S: usize = size_of::<CtKey>() / 2;
const ENTRY_U64S: usize = size_of::<CtEntry>() / 8;

/// Emits an `EV_ACCEPT` (a new flow) or `EV_REJECT` (a drop) event for the packet being
/// decided (its summary is in `SG_SCRATCH`), decided by `reason` and the rule in `rule_slot`.
#[inline(always)]
pub fn emit(dir: Direction, kind: u8, reason: Reason, rule_slot: u32, bytes: u64) {
    let (Some(stats), Some(lim), Some(s)) =
        (SG_FLOW_STATS.get_ptr_mut(0), SG_FLOW_CFG.get(0), SG_SCRATCH.get_ptr(0))
    else {
        return;
    };
    // SAFETY: valid map value pointers for the program's run; the stats and scratch entries
    // are this CPU's.
    let (stats, s): (&mut FlowLogStats, _) = unsafe { (&mut *stats, &*s) };
    let now = crate::clock::now_ns();
    if kind == EV_REJECT && lim.reject_interval_ns != 0 {
        let mut key = MaybeUninit::<RateKey>::uninit();
        let k = key.as_mut_ptr();
        // SAFETY: every byte of the key is written (a struct literal would copy the address a
        // byte at a time and call memset for padding); the key is 4-byte aligned.
        let key = unsafe {
            copy_addr((*k).addr.as_mut_ptr(), &s.src);
            (*k).family = u32::from(s.family);
            key.assume_init()
        };
        match SG_FLOW_RATE.get_ptr_mut(key) {
            // SAFETY: a value of the LRU map; a concurrent update on another CPU can only
            // make the limit slightly looser.
            Some(tat) => {
                if !gcra_allow(unsafe { &mut *tat }, now, lim.reject_interval_ns, lim.reject_burst_ns) {
                    stats.rate_limited += 1;
                    return;
                }
            }
            None => {
                let mut tat = 0;
                gcra_allow(&mut tat, now, lim.reject_interval_ns, lim.reject_burst_ns);
                let _ = SG_FLOW_RATE.insert(key, tat, 0);
            }
        }
    }
    if !cpu_allows(stats, lim, now) {
        return;
    }
    let Some(mut entry) = SG_FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        stats.ring_full += 1;
        return;
    };
    let policy_seq = SG_CONFIG.get(0).map_or(0, |c| c.policy_seq as u32);
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is a reserved, 8-byte aligned slot of size_of::<FlowEvent>() bytes; every
    // field is written (the ring buffer must not leak kernel memory).
    unsafe {
        (*e).ts_ns = now;
        copy_addr((*e).src.as_mut_ptr(), &s.src);
        copy_addr((*e).dst.as_mut_ptr(), &s.dst);
        (*e).sport = s.sport;
        (*e).dport = s.dport;
        (*e).rule = slot_rule(rule_slot);
        (*e).bytes = bytes as u32;
        (*e).policy_seq = policy_seq;
        (*e).kind = kind;
        (*e).dir = dir as u8;
        (*e).proto = s.proto;
        (*e).family = s.family;
        (*e).reason = reason as u8;
        (*e).icmp_type = s.icmp_type;
        (*e).icmp_code = s.icmp_code;
        (*e)._pad = 0;
    }
    entry.submit(0);
    stats.emitted += 1;
}
