//! The daemon's flow logs: datapath events (`sg_common::flowlog`) and flow ends (conntrack
//! gc) written as JSON lines, and optionally as AWS VPC Flow Logs v2 records aggregated per
//! window.
//!
//! JSON lines, one object per record, `event` one of:
//! - `accept`: a packet allowed by a rule (named) or posture started a tracked flow;
//! - `reject`: a packet was dropped, with the reason (rate-limited per source and per CPU);
//! - `end`: the daemon's gc removed an expired flow: both directions' packets and bytes.
//!
//! VPC Flow Logs v2 (`version account-id interface-id srcaddr dstaddr srcport dstport protocol
//! packets bytes start end action log-status`), one record per direction of each flow that
//! moved during the window (ACCEPT, counted from the conntrack entries), and per rejected
//! 5-tuple (REJECT, counted from the reject events). `log-status` is SKIPDATA for a window in
//! which the datapath suppressed events (rate limits, full ring buffer): REJECT counts are
//! then lower bounds.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use sg_common::{
    Reason,
    conntrack::{CtEntry, CtKey, state_name},
    flowlog::{END_REVOKED, EV_ACCEPT, FlowEvent, FlowLogConfig},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6},
};

use crate::{
    apply::current_state,
    cli::conntrack::{addr, endpoints, proto_name, rule_label},
    loader,
    maps::{CtTable, FlowItem, FlowMaps, ct_now_ns, flow_stats},
    pins,
    rules::RuleSet,
    state::{self, State},
};

#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Write flow logs as JSON lines to FILE (turns the datapath's flow events on).
    #[arg(long, value_name = "FILE")]
    pub flow_log: Option<PathBuf>,
    /// Also write AWS VPC Flow Logs v2 records, aggregated per --flow-window, to FILE.
    #[arg(long, value_name = "FILE")]
    pub vpc_flow_log: Option<PathBuf>,
    /// Seconds per VPC Flow Logs aggregation window.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub flow_window: u64,
    /// The account-id field of VPC Flow Logs records.
    #[arg(long, default_value = "unknown")]
    pub account_id: String,
    /// Reject events per second per source address (0: no limit).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub reject_rate: u32,
    /// Reject events a source may send at once before --reject-rate applies.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub reject_burst: u32,
    /// Events per second per CPU, all kinds (0: no limit).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub cpu_rate: u32,
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub cpu_burst: u32,
}

impl FlowArgs {
    /// The logger, if flow logs are asked for.
    pub fn logger(&self) -> anyhow::Result<Option<FlowLogger>> {
        if self.flow_log.is_none() && self.vpc_flow_log.is_none() {
            return Ok(None);
        }
        if self.flow_window == 0 {
            anyhow::bail!("--flow-window must be at least 1 second");
        }
        let mut l = FlowLogger {
            json_path: self.flow_log.clone(),
            vpc_path: self.vpc_flow_log.clone(),
            json: None,
            vpc: None,
            window: Duration::from_secs(self.flow_window),
            account: self.account_id.clone(),
            limits: FlowLogConfig::new(self.reject_rate, self.reject_burst, self.cpu_rate, self.cpu_burst),
            readers: Vec::new(),
            state: None,
            window_start: SystemTime::now(),
            window_timer: Instant::now(),
            snapshot: HashMap::new(),
            ended: Vec::new(),
            rejects: HashMap::new(),
            suppressed: HashMap::new(),
            stats: Stats::default(),
        };
        l.reopen_files()?;
        Ok(Some(l))
    }
}

/// Records written by the daemon.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub accept: u64,
    pub reject: u64,
    pub end: u64,
    pub vpc_records: u64,
    /// Records that could not be written (I/O errors).
    pub write_errors: u64,
}

/// One JSON-lines record.
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// accept, reject or end.
    pub event: String,
    pub iface: String,
    /// accept/reject: the packet's direction; end: the flow's origin (who opened it).
    pub direction: String,
    pub proto: String,
    /// accept/reject: the packet's source and destination; end: initiator and responder.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Verdict reason (accept/reject); end: the flow's last state, or `revoked`.
    pub reason: String,
    /// The rule that allowed the flow, as `sgctl stats` names it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    /// accept/reject: the packet's length; end: `[initiator -> responder, back]`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_packets: Option<[u64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_bytes: Option<[u64; 2]>,
    /// end: when the flow started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start: Option<String>,
    /// ICMP type and code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icmp: Option<[u8; 2]>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Wall-clock time of a CLOCK_MONOTONIC_COARSE timestamp.
fn wall(ts_ns: u64) -> SystemTime {
    let ago = ct_now_ns().saturating_sub(ts_ns);
    SystemTime::now().checked_sub(Duration::from_nanos(ago)).unwrap_or(UNIX_EPOCH)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn is_icmp(proto: u8) -> bool {
    proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6
}

type RejectKey = (String, IpAddr, IpAddr, u16, u16, u8);

pub struct FlowLogger {
    json_path: Option<PathBuf>,
    vpc_path: Option<PathBuf>,
    json: Option<fs::File>,
    vpc: Option<fs::File>,
    window: Duration,
    account: String,
    limits: FlowLogConfig,
    readers: Vec<(String, FlowMaps)>,
    /// The applied state, for rule names.
    state: Option<State>,
    window_start: SystemTime,
    window_timer: Instant,
    /// Per flow, its counters at the last window's end (ACCEPT deltas).
    snapshot: HashMap<(String, CtKey), ([u64; 2], [u64; 2])>,
    /// Flows the gc removed during this window (final counters).
    ended: Vec<(String, CtKey, CtEntry)>,
    rejects: HashMap<RejectKey, (u64, u64)>,
    /// Per interface, datapath suppression counters at the window's start.
    suppressed: HashMap<String, u64>,
    pub stats: Stats,
}

fn open_append(path: &Path) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl FlowLogger {
    fn reopen_files(&mut self) -> anyhow::Result<()> {
        self.json = self.json_path.as_deref().map(open_append).transpose()?;
        self.vpc = self.vpc_path.as_deref().map(open_append).transpose()?;
        Ok(())
    }

    /// SIGHUP: reopen the files (after a logrotate move).
    pub fn reopen(&mut self) {
        if let Err(e) = self.reopen_files() {
            log::error!("flow logs: {e:#}");
        }
    }

    /// Turns events on for every interface of `rs` (after each apply: new interfaces, new
    /// rule names).
    pub fn enable(&mut self, rs: &RuleSet) -> anyhow::Result<()> {
        self.drain();
        let _lock = state::lock()?;
        self.readers.clear();
        for b in &rs.interfaces {
            let Some(mut a) = loader::open_attached(&b.iface)? else { continue };
            let mut fm = FlowMaps::from_pins(&a.dir)?;
            fm.set_limits(&self.limits)?;
            let cfg = a.maps.config()?;
            let flags = cfg.flags | sg_common::config::CONFIG_FLOW_LOG;
            if flags != cfg.flags {
                a.maps.set_config(&sg_common::IfaceConfig { flags, ..cfg })?;
            }
            self.suppressed.entry(b.iface.clone()).or_insert(suppressed(&a.dir));
            self.readers.push((b.iface.clone(), fm));
        }
        drop(_lock);
        self.state = current_state()?;
        Ok(())
    }

    /// Turns events off (daemon exit): the datapath stops paying for them.
    pub fn disable(&mut self) {
        let Ok(_lock) = state::lock() else { return };
        for (iface, _) in &self.readers {
            if let Ok(Some(mut a)) = loader::open_attached(iface)
                && let Ok(cfg) = a.maps.config()
            {
                let flags = cfg.flags & !sg_common::config::CONFIG_FLOW_LOG;
                if let Err(e) = a.maps.set_config(&sg_common::IfaceConfig { flags, ..cfg }) {
                    log::error!("flow logs: turning events off on {iface}: {e}");
                }
            }
        }
    }

    fn write_json(&mut self, r: &Record) {
        let Some(f) = &mut self.json else { return };
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        if f.write_all(&line).is_err() {
            self.stats.write_errors += 1;
        }
    }

    /// Reads every pending event; closes the VPC window when it is due.
    pub fn drain(&mut self) {
        let mut events = Vec::new();
        for (iface, fm) in &mut self.readers {
            while let Some(ev) = fm.next_event() {
                events.push((iface.clone(), ev));
            }
        }
        for (iface, item) in events {
            match item {
                FlowItem::Event(ev) => self.event(&iface, &ev),
                FlowItem::End(end) => {
                    let reason =
                        if end.cause == END_REVOKED { "revoked" } else { state_name(end.entry.state) };
                    self.flow_ended(&iface, &end.key, &end.entry, reason);
                }
            }
        }
        if self.window_timer.elapsed() >= self.window {
            self.flush_window(false);
        }
    }

    fn event(&mut self, iface: &str, ev: &FlowEvent) {
        let accept = ev.kind == EV_ACCEPT;
        let reason = Reason::from_u32(u32::from(ev.reason)).map_or("unknown", Reason::name);
        let (src, dst) = (addr(ev.family, &ev.src), addr(ev.family, &ev.dst));
        let icmp = is_icmp(ev.proto);
        let r = Record {
            time: rfc3339(wall(ev.ts_ns)),
            event: if accept { "accept" } else { "reject" }.into(),
            iface: iface.to_string(),
            direction: if ev.dir == 0 { "ingress" } else { "egress" }.into(),
            proto: proto_name(ev.proto),
            src,
            dst,
            sport: ev.sport,
            dport: ev.dport,
            reason: reason.into(),
            rule: if accept { rule_label(self.state.as_ref(), iface, ev.rule, ev.policy_seq) } else { None },
            bytes: Some(u64::from(ev.bytes)),
            flow_packets: None,
            flow_bytes: None,
            start: None,
            icmp: icmp.then_some([ev.icmp_type, ev.icmp_code]),
        };
        self.write_json(&r);
        if accept {
            self.stats.accept += 1;
        } else {
            self.stats.reject += 1;
            if self.vpc.is_some() {
                let (sp, dp) = if icmp { (0, 0) } else { (ev.sport, ev.dport) };
                let c = self.rejects.entry((iface.to_string(), src, dst, sp, dp, ev.proto)).or_default();
                c.0 += 1;
                c.1 += u64::from(ev.bytes);
            }
        }
    }

    /// Flow-end records for flows the gc removed.
    pub fn flows_ended(&mut self, iface: &str, ended: &[(CtTable, CtKey, CtEntry)]) {
        for (_, k, e) in ended {
            self.flow_ended(iface, k, e, state_name(e.state));
        }
    }

    /// The flow-end record of one flow (removed by the gc or ended by the datapath); `reason`
    /// is its final state, or `revoked`.
    fn flow_ended(&mut self, iface: &str, k: &CtKey, e: &CtEntry, reason: &str) {
        let (from, to) = endpoints(k, e);
        let ((src, sport), (dst, dport)) = ((from.ip(), from.port()), (to.ip(), to.port()));
        let r = Record {
            time: rfc3339(wall(e.last_seen_ns)),
            event: "end".into(),
            iface: iface.to_string(),
            direction: if e.origin == 0 { "ingress" } else { "egress" }.into(),
            proto: proto_name(k.proto),
            src,
            dst,
            sport,
            dport,
            reason: reason.into(),
            rule: rule_label(self.state.as_ref(), iface, e.rule, e.policy_seq),
            bytes: None,
            flow_packets: Some(e.packets),
            flow_bytes: Some(e.bytes),
            start: Some(rfc3339(wall(e.created_ns))),
            icmp: None,
        };
        self.write_json(&r);
        self.stats.end += 1;
        if self.vpc.is_some() {
            self.ended.push((iface.to_string(), *k, *e));
        }
    }

    /// Writes the VPC Flow Logs records of the window that ends now (also at exit).
    pub fn flush_window(&mut self, last: bool) {
        let end = SystemTime::now();
        let (start_s, end_s) = (unix(self.window_start), unix(end));
        self.window_start = end;
        self.window_timer = Instant::now();
        if self.vpc.is_none() {
            return;
        }
        // Per interface: did the datapath suppress events during the window?
        let mut status: HashMap<String, &'static str> = HashMap::new();
        let mut live: Vec<(String, CtKey, CtEntry)> = std::mem::take(&mut self.ended);
        for (iface, _) in &self.readers {
            let Ok(dir) = pins::iface_dir(iface) else { continue };
            let now = suppressed(&dir);
            let before = self.suppressed.insert(iface.clone(), now).unwrap_or(now);
            status.insert(iface.clone(), if now > before { "SKIPDATA" } else { "OK" });
            if let Ok(Some(a)) = loader::open_attached(iface)
                && let Ok(entries) = a.maps.ct_entries()
            {
                live.extend(entries.into_iter().map(|(_, k, e)| (iface.clone(), k, e)));
            }
        }
        let mut lines = Vec::new();
        let mut seen = std::collections::HashSet::new();
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
                    lines.push(vpc_line(
                        &self.account,
                        &iface,
                        (s, sp, d, dp, k.proto),
                        packets,
                        bytes,
                        (start_s, end_s),
                        "ACCEPT",
                        st,
                    ));
                }
            }
        }
        // Flows gone from the tables stop being tracked here too.
        let gone: Vec<_> = self.snapshot.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for k in gone {
            self.snapshot.remove(&k);
        }
        for ((iface, s, d, sp, dp, proto), (packets, bytes)) in std::mem::take(&mut self.rejects) {
            let st = status.get(&iface).copied().unwrap_or("OK");
            lines.push(vpc_line(
                &self.account,
                &iface,
                (s, sp, d, dp, proto),
                packets,
                bytes,
                (start_s, end_s),
                "REJECT",
                st,
            ));
        }
        if lines.is_empty() && !last {
            return;
        }
        let Some(f) = &mut self.vpc else { return };
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if f.write_all(text.as_bytes()).is_err() {
            self.stats.write_errors += lines.len() as u64;
        } else {
            self.stats.vpc_records += lines.len() as u64;
        }
    }
}

/// Events the datapath of the instance in `dir` suppressed so far (0 if unreadable).
fn suppressed(dir: &Path) -> u64 {
    flow_stats(dir).map_or(0, |s| s.rate_limited + s.cpu_limited + s.ring_full)
}

#[allow(clippy::too_many_arguments, reason = "one VPC Flow Logs record's fields")]
fn vpc_line(
    account: &str,
    iface: &str,
    (src, sport, dst, dport, proto): (IpAddr, u16, IpAddr, u16, u8),
    packets: u64,
    bytes: u64,
    (start, end): (u64, u64),
    action: &str,
    status: &str,
) -> String {
    format!(
        "2 {account} {iface} {src} {dst} {sport} {dport} {proto} {packets} {bytes} {start} {end} {action} {status}"
    )
}
