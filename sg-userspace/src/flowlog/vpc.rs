//! AWS VPC Flow Logs v2 records (`version account-id interface-id srcaddr dstaddr srcport
//! dstport protocol packets bytes start end action log-status`), aggregated per window: one
//! record per direction of each flow that moved during the window (ACCEPT, counted from the
//! conntrack entries), and per rejected 5-tuple (REJECT, counted from the reject events).
//! `log-status` is SKIPDATA for a window in which the datapath suppressed events (rate limits,
//! full ring buffer): REJECT counts are then lower bounds.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sg_common::{
    conntrack::{CtEntry, CtKey},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6},
};

use crate::names::endpoints;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn is_icmp(proto: u8) -> bool {
    proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6
}

/// (interface, source, destination, source port, destination port, protocol).
type FiveTuple = (String, IpAddr, IpAddr, u16, u16, u8);

/// What one interface looked like when a window closed.
pub(super) struct IfaceView {
    pub iface: String,
    /// Events the datapath suppressed so far.
    pub suppressed: u64,
    /// The flows in its tables.
    pub flows: Vec<(CtKey, CtEntry)>,
}

/// The window being aggregated.
pub(super) struct Window {
    account: String,
    length: Duration,
    start: SystemTime,
    timer: Instant,
    /// Per flow, its counters at the last window's end (ACCEPT deltas).
    snapshot: HashMap<(String, CtKey), ([u64; 2], [u64; 2])>,
    /// Flows that ended during this window (final counters).
    ended: Vec<(String, CtKey, CtEntry)>,
    rejects: HashMap<FiveTuple, (u64, u64)>,
    /// Per interface, datapath suppression counters at the window's start.
    suppressed: HashMap<String, u64>,
}

impl Window {
    pub(super) fn new(account: &str, length: Duration) -> Self {
        Window {
            account: account.to_string(),
            length,
            start: SystemTime::now(),
            timer: Instant::now(),
            snapshot: HashMap::new(),
            ended: Vec::new(),
            rejects: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }

    pub(super) fn due(&self) -> bool {
        self.timer.elapsed() >= self.length
    }

    /// The suppression count of `iface` when it started being logged.
    pub(super) fn start_iface(&mut self, iface: &str, suppressed: u64) {
        self.suppressed.entry(iface.to_string()).or_insert(suppressed);
    }

    /// A rejected packet (ICMP ports count as 0).
    #[allow(clippy::too_many_arguments, reason = "one rejected packet's fields")]
    pub(super) fn reject(
        &mut self,
        iface: &str,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        proto: u8,
        bytes: u64,
    ) {
        let (sp, dp) = if is_icmp(proto) { (0, 0) } else { (sport, dport) };
        let c = self.rejects.entry((iface.to_string(), src, dst, sp, dp, proto)).or_default();
        c.0 += 1;
        c.1 += bytes;
    }

    /// A flow that ended (its last counters count in this window).
    pub(super) fn ended(&mut self, iface: &str, k: &CtKey, e: &CtEntry) {
        self.ended.push((iface.to_string(), *k, *e));
    }

    /// Closes the window now: its records, given each logged interface as it is now. Starts
    /// the next window.
    pub(super) fn close(&mut self, now: &[IfaceView]) -> Vec<String> {
        let end = SystemTime::now();
        let span = (unix(self.start), unix(end));
        self.start = end;
        self.timer = Instant::now();
        // Per interface: did the datapath suppress events during the window?
        let mut status: HashMap<String, &'static str> = HashMap::new();
        let mut live: Vec<(String, CtKey, CtEntry)> = std::mem::take(&mut self.ended);
        for v in now {
            let before = self.suppressed.insert(v.iface.clone(), v.suppressed).unwrap_or(v.suppressed);
            status.insert(v.iface.clone(), if v.suppressed > before { "SKIPDATA" } else { "OK" });
            live.extend(v.flows.iter().map(|(k, e)| (v.iface.clone(), *k, *e)));
        }
        let mut lines = Vec::new();
        let mut seen = HashSet::new();
        for (iface, k, e) in live {
            let id = (iface.clone(), k);
            if !seen.insert(id.clone()) {
                continue;
            }
            let (p0, b0) = self.snapshot.get(&id).copied().unwrap_or_default();
            self.snapshot.insert(id, (e.packets, e.bytes));
            let (from, to) = endpoints(&k, &e);
            let ((a, ap), (b, bp)) = ((from.ip(), from.port()), (to.ip(), to.port()));
            let (ap, bp) = if is_icmp(k.proto) { (0, 0) } else { (ap, bp) };
            let st = status.get(&iface).copied().unwrap_or("OK");
            for (i, (s, sp, d, dp)) in [(a, ap, b, bp), (b, bp, a, ap)].into_iter().enumerate() {
                let packets = e.packets[i].saturating_sub(p0[i]);
                if packets > 0 {
                    let bytes = e.bytes[i].saturating_sub(b0[i]);
                    lines.push(self.line(
                        &iface,
                        (s, sp, d, dp, k.proto),
                        (packets, bytes),
                        span,
                        "ACCEPT",
                        st,
                    ));
                }
            }
        }
        // Flows gone from the tables stop being tracked here too.
        self.snapshot.retain(|k, _| seen.contains(k));
        for ((iface, s, d, sp, dp, proto), counts) in std::mem::take(&mut self.rejects) {
            let st = status.get(&iface).copied().unwrap_or("OK");
            lines.push(self.line(&iface, (s, sp, d, dp, proto), counts, span, "REJECT", st));
        }
        lines
    }

    /// One record.
    fn line(
        &self,
        iface: &str,
        (src, sport, dst, dport, proto): (IpAddr, u16, IpAddr, u16, u8),
        (packets, bytes): (u64, u64),
        (start, end): (u64, u64),
        action: &str,
        status: &str,
    ) -> String {
        let account = &self.account;
        format!(
            "2 {account} {iface} {src} {dst} {sport} {dport} {proto} {packets} {bytes} {start} {end} {action} {status}"
        )
    }
}
