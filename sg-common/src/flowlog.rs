//! Flow-log events: what the datapath tells the daemon through the `SG_FLOW_EVENTS` ring
//! buffer when `config::CONFIG_FLOW_LOG` is set.
//!
//! - `EV_ACCEPT`: a packet allowed by a rule (or posture) started a tracked flow.
//! - `EV_REJECT`: a packet was dropped (any drop reason). Rate-limited per source address and
//!   per CPU (GCRA, parameters in `FlowLogConfig`) so a flood cannot drown the log or the CPU;
//!   what the limits or a full ring buffer suppress is counted in `SG_FLOW_STATS`.
//!
//! - `EV_END` (a [`FlowEnd`] item, told apart from a [`FlowEvent`] by its size): the datapath
//!   deleted a flow, with its final counters: found idle beyond its timeout by a packet of
//!   the flow, no longer allowed after an apply with `--revoke`, or replaced by a new TCP
//!   connection on the ports of a closed one. Per-CPU limit only.
//!
//! The other flow ends (expired flows no packet came back for) are written by the daemon's
//! conntrack gc, from the entries it removes.

use crate::conntrack::{CtEntry, CtKey};

/// `FlowEvent::kind`: a new flow was accepted.
pub const EV_ACCEPT: u8 = 1;
/// `FlowEvent::kind`: a packet was rejected.
pub const EV_REJECT: u8 = 2;
/// `FlowEnd::kind`: the datapath ended a flow.
pub const EV_END: u8 = 3;

/// `FlowEnd::cause`: idle beyond its timeout when a packet of the flow came.
pub const END_EXPIRED: u8 = 1;
/// `FlowEnd::cause`: the rules applied with `--revoke` no longer allow it.
pub const END_REVOKED: u8 = 2;
/// `FlowEnd::cause`: a TCP SYN reused the ports of the closed connection.
pub const END_REUSED: u8 = 3;

/// A flow the datapath ended (144 bytes in the ring buffer): its key and its entry as they
/// were when it was deleted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEnd {
    pub key: CtKey,
    pub entry: CtEntry,
    /// `EV_END`.
    pub kind: u8,
    /// `END_*`.
    pub cause: u8,
    /// `Direction` of the program that ended it, as u8.
    pub dir: u8,
    pub _pad: [u8; 5],
}

const _: () = assert!(size_of::<FlowEnd>() == 144);
const _: () = assert!(size_of::<FlowEnd>() != size_of::<FlowEvent>());

/// One event (64 bytes in the ring buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE).
    pub ts_ns: u64,
    /// Packet's source and destination; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports (TCP/UDP), host order; ICMP: echo id / 0.
    pub sport: u16,
    pub dport: u16,
    /// Rule id that allowed the flow (`EV_ACCEPT`, groups mode) or `policy::NO_RULE`.
    pub rule: u32,
    /// Packet length in bytes.
    pub bytes: u32,
    /// `IfaceConfig::policy_seq` (low 32 bits) when decided.
    pub policy_seq: u32,
    /// `EV_*`.
    pub kind: u8,
    /// `Direction` as u8.
    pub dir: u8,
    pub proto: u8,
    /// `packet::FAMILY_*` (0 when the packet was not parsed that far).
    pub family: u8,
    /// `Reason` as u8.
    pub reason: u8,
    /// ICMP type and code (ICMP, ICMPv6).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: u8,
}

const _: () = assert!(size_of::<FlowEvent>() == 64);

/// Rate limits of events (index 0 of `SG_FLOW_CFG`), as GCRA emission intervals and burst
/// tolerances: an event passes if the bucket's theoretical arrival time is at most
/// `*_burst_ns` ahead of now; each event advances it by `*_interval_ns`. A zero interval
/// means no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogConfig {
    /// Per source address, for `EV_REJECT`.
    pub reject_interval_ns: u64,
    pub reject_burst_ns: u64,
    /// Per CPU, for every event.
    pub cpu_interval_ns: u64,
    pub cpu_burst_ns: u64,
}

const _: () = assert!(size_of::<FlowLogConfig>() == 32);

impl FlowLogConfig {
    /// `rate` events per second with bursts of `burst` (per source for rejects, per CPU for
    /// all).
    pub const fn new(reject_rate: u32, reject_burst: u32, cpu_rate: u32, cpu_burst: u32) -> Self {
        let (ri, rb) = gcra(reject_rate, reject_burst);
        let (ci, cb) = gcra(cpu_rate, cpu_burst);
        FlowLogConfig { reject_interval_ns: ri, reject_burst_ns: rb, cpu_interval_ns: ci, cpu_burst_ns: cb }
    }
}

const fn gcra(rate: u32, burst: u32) -> (u64, u64) {
    if rate == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / rate as u64;
    let burst = if burst == 0 { 1 } else { burst as u64 };
    (interval, interval * (burst - 1))
}

/// GCRA step: whether an event at `now` passes a bucket whose theoretical arrival time is
/// `*tat`; advances `*tat` when it does.
#[inline(always)]
pub fn gcra_allow(tat: &mut u64, now: u64, interval: u64, burst: u64) -> bool {
    if interval == 0 {
        return true;
    }
    let t = if *tat > now { *tat } else { now };
    if t - now > burst {
        return false;
    }
    *tat = t + interval;
    true
}

/// Key of `SG_FLOW_RATE`: a source address (no padding: the datapath writes it as five
/// 32-bit words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateKey {
    pub addr: [u8; 16],
    /// `packet::FAMILY_*`.
    pub family: u32,
}

const _: () = assert!(size_of::<RateKey>() == 20);

/// Per-CPU bookkeeping (index 0 of `SG_FLOW_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogStats {
    /// Events written to the ring buffer.
    pub emitted: u64,
    /// Reject events suppressed by the per-source limit.
    pub rate_limited: u64,
    /// Events suppressed by the per-CPU limit.
    pub cpu_limited: u64,
    /// Events lost because the ring buffer was full (the daemon did not keep up).
    pub ring_full: u64,
    /// GCRA state of this CPU's limit.
    pub cpu_tat: u64,
    /// GCRA state of this CPU's datapath warnings (aya-log, one per second at most).
    pub warn_tat: u64,
}

const _: () = assert!(size_of::<FlowLogStats>() == 48);

crate::impl_pod!(FlowEvent, FlowEnd, FlowLogConfig, RateKey, FlowLogStats);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let cfg = FlowLogConfig::new(10, 5, 0, 0);
        let mut tat = 0;
        let now = 1_000_000_000;
        let passed = (0..100)
            .filter(|_| gcra_allow(&mut tat, now, cfg.reject_interval_ns, cfg.reject_burst_ns))
            .count();
        assert_eq!(passed, 5);
        // A flood over the next second (an attempt every 100 us): the rate, 10 more.
        let passed = (1..=10_000u64)
            .filter(|i| gcra_allow(&mut tat, now + i * 100_000, cfg.reject_interval_ns, cfg.reject_burst_ns))
            .count();
        assert!((9..=11).contains(&passed), "{passed}");
        let mut t = 0;
        assert!((0..1000).all(|_| gcra_allow(&mut t, now, 0, 0)), "rate 0 means no limit");
    }
}
