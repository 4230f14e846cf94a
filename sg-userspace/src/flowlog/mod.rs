//! The daemon's flow logs: datapath events (`sg_common::flowlog`) and flow ends written as
//! JSON lines ([`Record`]), and optionally as AWS VPC Flow Logs v2 records aggregated per
//! window (`vpc`).
//!
//! JSON lines, one object per record, `event` one of:
//! - `accept`: a packet allowed by a rule (named) or posture started a tracked flow;
//! - `reject`: a packet was dropped, with the reason (rate-limited per source and per CPU);
//! - `end`: a flow ended: removed by the daemon's gc when expired, or by the datapath (expired
//!   on lookup, revoked by a rule change, a SYN reusing a closed connection's ports), with both
//!   directions' packets and bytes.
//!
//! With `--learn FILE`, each accepted flow start is also an observation for `sgctl learn`
//! (`rules::learn`): kept in a bounded table, saved to FILE every 10 seconds and at exit,
//! read back when the daemon starts.

mod record;
mod vpc;

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use record::Record;
use record::{rfc3339, wall};
use sg_common::{
    Direction, IfaceConfig, Reason,
    config::CONFIG_FLOW_LOG,
    conntrack::{CtEntry, CtKey, state_name},
    flowlog::{END_REVOKED, EV_ACCEPT, FlowEvent, FlowLogConfig},
};
use vpc::{IfaceView, Window, is_icmp};

use crate::{
    error::{Context as _, Result},
    loader::{self, Attached},
    maps::{CtTable, FlowItem, InstanceMaps},
    names::{acl_deny_ref, addr, endpoints, proto_name, rule_ref},
    rules::{
        Dir, RuleSet,
        learn::{ObsKey, Observations},
        model::Probe,
    },
    state::{self, State},
};

/// What to log, where, and the datapath's event limits.
#[derive(Clone, Debug)]
pub struct Options {
    /// JSON lines to this file.
    pub json: Option<PathBuf>,
    /// VPC Flow Logs v2 records to this file.
    pub vpc: Option<PathBuf>,
    /// The VPC aggregation window.
    pub window: Duration,
    /// The account-id field of VPC records.
    pub account: String,
    pub limits: FlowLogConfig,
    /// Observations for `sgctl learn`: the file and the table's capacity.
    pub learn: Option<(PathBuf, usize)>,
}

/// How often the observations are saved.
const LEARN_SAVE_EVERY: Duration = Duration::from_secs(10);

/// The observations being learned and where they are saved.
struct Learning {
    path: PathBuf,
    table: Observations,
    dirty: bool,
    saved: Instant,
    /// Per interface, the datapath's suppressed-event count (per-CPU limit, full ring: what
    /// accept events too can lose) already accounted for.
    missed_seen: std::collections::HashMap<String, u64>,
    /// Fleet mode: where each save also hands a bounded summary, for the agent to publish
    /// (`traffic/<host>`, read by `sgctl fleet learn`).
    publish: Option<tokio::sync::watch::Sender<Option<String>>>,
}

impl Learning {
    fn open(path: &Path, capacity: usize) -> Result<Self> {
        let table = match fs::read_to_string(path) {
            Ok(text) => Observations::from_json(&text, capacity).map_err(|e| crate::error::Error::Usage {
                what: format!("--learn {}", path.display()),
                detail: format!("not an observations file: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Observations::new(capacity),
            Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
        };
        log::info!(
            "learning: {} observations from {} (capacity {capacity})",
            table.entries.len(),
            path.display()
        );
        Ok(Learning {
            path: path.to_path_buf(),
            table,
            dirty: false,
            saved: Instant::now(),
            missed_seen: std::collections::HashMap::new(),
            publish: None,
        })
    }

    /// Hands the fleet agent the summary of the table as it is now.
    fn publish(&self) {
        if let Some(tx) = &self.publish {
            let summary = self.table.summary(crate::fleet::schema::TRAFFIC_MAX_ENTRIES).to_json_compact();
            tx.send_replace(Some(summary));
        }
    }

    /// Counts the flow events the datapath suppressed on `readers` since last asked (the
    /// first time sets the baseline: what was suppressed before learning does not count).
    fn count_missed(&mut self, readers: &[Attached]) {
        for r in readers {
            let Ok(s) = r.maps.flow_stats() else { continue };
            let now = s.cpu_limited + s.ring_full;
            if let Some(before) = self.missed_seen.insert(r.iface.clone(), now) {
                // The counters restart when an interface is attached again.
                let new = if now >= before { now - before } else { now };
                if new > 0 {
                    self.table.missed_events += new;
                    self.dirty = true;
                }
            }
        }
    }

    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        match state::write_atomic(&self.path, self.table.to_json().as_bytes()) {
            Ok(()) => self.dirty = false,
            Err(e) => log::error!("learning: {e}"),
        }
        self.saved = Instant::now();
        self.publish();
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

pub struct FlowLogger {
    opts: Options,
    json: Option<fs::File>,
    vpc: Option<(fs::File, Window)>,
    /// The interfaces whose events are read.
    readers: Vec<Attached>,
    /// The applied state, for rule names.
    state: Option<State>,
    learning: Option<Learning>,
    pub stats: Stats,
}

fn open_append(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .context(|| format!("opening {}", path.display()))
}

/// Events the datapath of an instance suppressed so far (0 if unreadable).
fn suppressed(maps: &InstanceMaps) -> u64 {
    maps.flow_stats().map_or(0, |s| s.rate_limited + s.cpu_limited + s.ring_full)
}

fn direction_name(dir: u8) -> String {
    if dir == 0 { "ingress" } else { "egress" }.to_string()
}

impl FlowLogger {
    /// Opens the files (appending); events are read once [`FlowLogger::enable`] ran.
    pub fn new(opts: Options) -> Result<Self> {
        let learning = opts.learn.as_ref().map(|(p, cap)| Learning::open(p, *cap)).transpose()?;
        let mut l = FlowLogger {
            opts,
            json: None,
            vpc: None,
            readers: Vec::new(),
            state: None,
            learning,
            stats: Stats::default(),
        };
        l.reopen_files()?;
        Ok(l)
    }

    fn reopen_files(&mut self) -> Result<()> {
        self.json = self.opts.json.as_deref().map(open_append).transpose()?;
        let window = self.vpc.take().map(|(_, w)| w);
        self.vpc = match self.opts.vpc.as_deref() {
            Some(p) => Some((
                open_append(p)?,
                window.unwrap_or_else(|| Window::new(&self.opts.account, self.opts.window)),
            )),
            None => None,
        };
        Ok(())
    }

    /// Whether flows are learned (`--learn`).
    pub fn learns(&self) -> bool {
        self.learning.is_some()
    }

    /// Fleet mode: each time the observations are saved, a bounded summary of them goes to
    /// `tx` (the agent publishes it); the table as it is now goes at once. Without `--learn`,
    /// nothing is ever sent.
    pub fn publish_summaries(&mut self, tx: tokio::sync::watch::Sender<Option<String>>) {
        if let Some(l) = &mut self.learning {
            l.publish = Some(tx);
            l.publish();
        }
    }

    /// SIGHUP: reopen the files (after a logrotate move).
    pub fn reopen(&mut self) {
        if let Err(e) = self.reopen_files() {
            log::error!("flow logs: {e}");
        }
    }

    /// Turns events on for every interface of `rs` (after each apply: new interfaces, new
    /// rule names).
    pub fn enable(&mut self, rs: &RuleSet) -> Result<()> {
        self.drain();
        let lock = state::lock()?;
        self.readers.clear();
        for b in &rs.interfaces {
            let Some(mut a) = loader::open_attached(&b.iface)? else { continue };
            a.maps.set_flow_limits(&self.opts.limits)?;
            let cfg = a.maps.config()?;
            let flags = cfg.flags | CONFIG_FLOW_LOG;
            if flags != cfg.flags {
                a.maps.set_config(&IfaceConfig { flags, ..cfg })?;
            }
            if let Some((_, w)) = &mut self.vpc {
                w.start_iface(&b.iface, suppressed(&a.maps));
            }
            self.readers.push(a);
        }
        drop(lock);
        if let Some(l) = &mut self.learning {
            l.count_missed(&self.readers);
        }
        self.state = state::current_state()?;
        Ok(())
    }

    /// Turns events off (daemon exit): the datapath stops paying for them. The observations
    /// are saved.
    pub fn disable(&mut self) {
        if let Some(l) = &mut self.learning {
            l.count_missed(&self.readers);
            l.save();
        }
        let Ok(_lock) = state::lock() else { return };
        for r in &self.readers {
            if let Ok(Some(mut a)) = loader::open_attached(&r.iface)
                && let Ok(cfg) = a.maps.config()
            {
                let flags = cfg.flags & !CONFIG_FLOW_LOG;
                if let Err(e) = a.maps.set_config(&IfaceConfig { flags, ..cfg }) {
                    log::error!("flow logs: turning events off on {}: {e}", r.iface);
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
        let mut items = Vec::new();
        for r in &mut self.readers {
            while let Some(item) = r.maps.next_flow_item() {
                items.push((r.iface.clone(), item));
            }
        }
        for (iface, item) in items {
            match item {
                FlowItem::Event(ev) => self.event(&iface, &ev),
                FlowItem::End(end) => {
                    let reason =
                        if end.cause == END_REVOKED { "revoked" } else { state_name(end.entry.state) };
                    self.flow_ended(&iface, &end.key, &end.entry, reason);
                }
            }
        }
        if self.vpc.as_ref().is_some_and(|(_, w)| w.due()) {
            self.flush_window(false);
        }
        if let Some(l) = &mut self.learning
            && l.saved.elapsed() >= LEARN_SAVE_EVERY
        {
            l.count_missed(&self.readers);
            l.save();
        }
    }

    /// An accepted flow start, as an observation: the peer (source at ingress, destination
    /// at egress), the service (the destination port; an ICMP echo's type and code).
    fn observe(&mut self, iface: &str, ev: &FlowEvent, src: std::net::IpAddr, dst: std::net::IpAddr) {
        let Some(l) = &mut self.learning else { return };
        let ingress = ev.dir == Direction::Ingress as u8;
        let service =
            if is_icmp(ev.proto) { u16::from(ev.icmp_type) << 8 | u16::from(ev.icmp_code) } else { ev.dport };
        let key = ObsKey {
            iface: iface.to_string(),
            dir: if ingress { Dir::Ingress } else { Dir::Egress },
            proto: ev.proto,
            service,
            peer: if ingress { src } else { dst },
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        l.table.record(key, now);
        l.dirty = true;
    }

    fn event(&mut self, iface: &str, ev: &FlowEvent) {
        let accept = ev.kind == EV_ACCEPT;
        let reason = Reason::from_u32(u32::from(ev.reason)).map_or("unknown", Reason::name);
        let (src, dst) = (addr(ev.family, &ev.src), addr(ev.family, &ev.dst));
        let r = Record {
            time: rfc3339(wall(ev.ts_ns)),
            event: if accept { "accept" } else { "reject" }.into(),
            iface: iface.to_string(),
            direction: direction_name(ev.dir),
            proto: proto_name(ev.proto),
            src,
            dst,
            sport: ev.sport,
            dport: ev.dport,
            reason: reason.into(),
            rule: if accept {
                rule_ref(self.state.as_ref(), iface, ev.rule, ev.policy_seq)
            } else if u32::from(ev.reason) == Reason::AclDeny as u32 {
                let dir = if ev.dir == Direction::Egress as u8 { Dir::Egress } else { Dir::Ingress };
                let probe = Probe {
                    src,
                    dst,
                    proto: ev.proto,
                    dport: ev.dport,
                    icmp_type: ev.icmp_type,
                    icmp_code: ev.icmp_code,
                    later_fragment: false,
                };
                acl_deny_ref(self.state.as_ref(), iface, ev.policy_seq, dir, &probe)
            } else {
                crate::names::RuleRef::default()
            },
            bytes: Some(u64::from(ev.bytes)),
            flow_packets: None,
            flow_bytes: None,
            start: None,
            icmp: is_icmp(ev.proto).then_some([ev.icmp_type, ev.icmp_code]),
        };
        self.write_json(&r);
        if accept {
            self.observe(iface, ev, src, dst);
            self.stats.accept += 1;
        } else {
            self.stats.reject += 1;
            if let Some((_, w)) = &mut self.vpc {
                w.reject(iface, src, dst, ev.sport, ev.dport, ev.proto, u64::from(ev.bytes));
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
        let r = Record {
            time: rfc3339(wall(e.last_seen_ns)),
            event: "end".into(),
            iface: iface.to_string(),
            direction: direction_name(e.origin),
            proto: proto_name(k.proto),
            src: from.ip(),
            dst: to.ip(),
            sport: from.port(),
            dport: to.port(),
            reason: reason.into(),
            rule: rule_ref(self.state.as_ref(), iface, e.rule, e.policy_seq),
            bytes: None,
            flow_packets: Some(e.packets),
            flow_bytes: Some(e.bytes),
            start: Some(rfc3339(wall(e.created_ns))),
            icmp: None,
        };
        self.write_json(&r);
        self.stats.end += 1;
        if let Some((_, w)) = &mut self.vpc {
            w.ended(iface, k, e);
        }
    }

    /// Writes the VPC Flow Logs records of the window that ends now (`last`: at exit, written
    /// even when empty).
    pub fn flush_window(&mut self, last: bool) {
        if self.vpc.is_none() {
            return;
        }
        let views: Vec<IfaceView> = self
            .readers
            .iter()
            .map(|r| IfaceView {
                iface: r.iface.clone(),
                suppressed: suppressed(&r.maps),
                flows: r.maps.ct_entries().unwrap_or_default().into_iter().map(|(_, k, e)| (k, e)).collect(),
            })
            .collect();
        let Some((file, window)) = &mut self.vpc else { return };
        let lines = window.close(&views);
        if lines.is_empty() && !last {
            return;
        }
        let text: String = lines.iter().flat_map(|l| [l.as_str(), "\n"]).collect();
        if file.write_all(text.as_bytes()).is_err() {
            self.stats.write_errors += lines.len() as u64;
        } else {
            self.stats.vpc_records += lines.len() as u64;
        }
    }
}
