//! The daemon (`sgctl daemon --config FILE`): keeps the host's enforcement equal to a rules file.
//!
//! - At start it applies the file, or adopts the pins already enforcing it (a restarted daemon
//!   changes nothing when the file did not change: no packet is dropped across a restart).
//! - It checks the file every `--poll` seconds (comparing its bytes, so editors that replace
//!   the file work too) and on SIGHUP, and applies each valid version atomically (`apply`'s
//!   generation flip). A version that does not validate is logged with file:line and the
//!   reason; the last good rule set keeps enforcing.
//! - Every second it writes each attached interface's own addresses (as the kernel has them)
//!   into its `SG_LOCAL` (the datapath drops packets that arrive with one as their source).
//! - Every `--gc-interval` seconds it removes expired flows and rebuilds the conntrack
//!   presence filter (`sgctl conntrack gc`), writing flow-end records when flow logs are on.
//! - Fleet mode (`--etcd URLS --host NAME`): the rule set comes from the fleet's policy in
//!   etcd instead of a file (`crate::fleet::agent` reads, watches and registers members; this
//!   loop applies each host rule set that differs from the enforced one, through the same
//!   apply). The store unreachable: the last applied rule set keeps enforcing.
//! - SIGTERM or SIGINT: it stops and leaves enforcement in place (the pins), unless
//!   `--detach-on-exit`.
//! - One daemon per network namespace (the host, in the root namespace): a lock in
//!   `/run/sgctl/<netns cookie>/daemon.lock`; `daemon.json` beside it says where its flow log
//!   and metrics are.
//!
//! Single-threaded tokio: one loop owns the maps; the metrics endpoint opens them per scrape.

mod datapath_log;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::{
    apply::{self, ApplyOptions},
    error::{Context as _, Error, Result},
    fleet::agent::{self, AgentConfig, HostStatus, Update},
    flowlog::{self, FlowLogger},
    loader::{self, Placement},
    maps::ct_now_ns,
    metrics::{self, SharedStats, stats_of},
    pins,
    rules::{self, AwsContext, Format, RuleSet},
    state::{self, DaemonInfo, current_state},
};

/// Where the rule set comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A rules file, its format and what AWS JSON input lacks.
    File { config: PathBuf, format: Format, aws: AwsContext },
    /// The fleet's policy in etcd, for one host (`crate::fleet::agent`).
    Fleet(AgentConfig),
}

/// What the daemon enforces and how (`sgctl daemon`'s flags, checked).
#[derive(Clone, Debug)]
pub struct Options {
    pub source: Source,
    /// How often the file is checked for changes.
    pub poll: Duration,
    /// How often expired flows are collected and the presence filters rebuilt.
    pub gc_interval: Duration,
    /// The Prometheus endpoint's address, if any.
    pub metrics: Option<SocketAddr>,
    /// Detach every interface of the rule set on SIGTERM (default: enforcement stays).
    pub detach_on_exit: bool,
    /// Where the programs of interfaces the daemon attaches go (XDP mode, ingress hook).
    pub placement: Placement,
    /// Flow logs, if asked for.
    pub flow: Option<flowlog::Options>,
}

/// Whether two rule sets are the same in every respect (rules with their file locations,
/// bindings, interface settings).
fn same_rule_set(a: &RuleSet, b: &RuleSet) -> bool {
    matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(x), Ok(y)) if x == y)
}

use crate::clock::now_unix as unix_now;

/// Why the file is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Start,
    Poll,
    Hup,
}

struct Daemon {
    /// Where the rule set comes from: a file (`file`) or the fleet (`fleet`), never both.
    file: Option<FileSide>,
    placement: Placement,
    stats: SharedStats,
    flows: Option<FlowLogger>,
    /// aya-log records of the datapath, forwarded to this process's log.
    dp_log: datapath_log::Forwarder,
    /// Fleet mode: the host's rule set last enforced (without locations), what is reported
    /// to the store, and the agent's resync signal (SIGHUP).
    fleet: Option<FleetSide>,
}

/// The rules file the daemon reconciles from.
struct FileSide {
    path: PathBuf,
    format: Format,
    aws: AwsContext,
    /// Bytes of the version enforced, and of the last version rejected (logged once).
    applied: Option<Vec<u8>>,
    rejected: Option<Vec<u8>>,
    /// The last read of the file failed (logged once).
    unreadable: bool,
}

struct FleetSide {
    host: String,
    enforced: Option<RuleSet>,
    status: watch::Sender<Option<HostStatus>>,
    resync: Arc<Notify>,
    started: bool,
    /// The error last reported (a repeated one is not reported again).
    last_error: Option<String>,
}

impl Daemon {
    /// Reads the file and applies it if it changed (or on SIGHUP). Returns whether a rule set
    /// is enforced afterwards.
    fn reconcile(&mut self, why: Trigger) -> bool {
        let Some(f) = &mut self.file else { return false };
        let text = match std::fs::read(&f.path) {
            Ok(t) => t,
            Err(e) => {
                // Logged once while it stays unreadable (and on every SIGHUP).
                if why != Trigger::Poll || !f.unreadable {
                    log::error!("cannot read {}: {e}; the enforced rule set stays", f.path.display());
                    stats_of(&self.stats).apply_failures += 1;
                }
                f.unreadable = true;
                return f.applied.is_some();
            }
        };
        f.unreadable = false;
        if why == Trigger::Poll && (f.applied.as_ref() == Some(&text) || f.rejected.as_ref() == Some(&text)) {
            return true;
        }
        let path = f.path.clone();
        let started = Instant::now();
        let outcome = self.apply_text(&path, &text, why);
        let Some(f) = &mut self.file else { return false };
        match outcome {
            Ok(msg) => {
                let took = started.elapsed().as_secs_f64();
                log::info!("{msg} ({:.1} ms)", took * 1e3);
                f.applied = Some(text);
                f.rejected = None;
                true
            }
            Err(e) => {
                let mut st = stats_of(&self.stats);
                st.apply_failures += 1;
                // Rule errors start with file:line:col already.
                let e = e.to_string();
                let path = path.display().to_string();
                let what = if e.starts_with(&path) { e } else { format!("{path}: {e}") };
                log::error!("rejected {what}; rule set #{} keeps enforcing", st.rule_set_seq);
                f.rejected = Some(text);
                false
            }
        }
    }

    fn apply_text(&mut self, path: &Path, bytes: &[u8], why: Trigger) -> Result<String> {
        let Some(f) = &self.file else { return Err(Error::NothingToEnforce { path: path.to_path_buf() }) };
        let name = path.display().to_string();
        let text = std::str::from_utf8(bytes).map_err(|_| Error::NotUtf8 { path: path.to_path_buf() })?;
        let rs = rules::parse_str(&name, text, f.format, &f.aws)?;
        self.enforce(&name, &rs, why == Trigger::Start, same_rule_set, why == Trigger::Hup)
            .map(|(msg, _)| msg)
    }

    /// What follows the enforced rule set: the flow logs read the events of its interfaces
    /// and the datapath's log records are forwarded for them. After every apply or adoption,
    /// and at start for what the pins enforce.
    fn follow(&mut self, rs: &RuleSet) -> Result<()> {
        if let Some(f) = &mut self.flows {
            f.enable(rs)?;
        }
        self.dp_log.follow(rs);
        Ok(())
    }

    /// Applies `rs` through the one apply path; at start, a rule set the pins already enforce
    /// (`same` as the state's) is adopted without touching the datapath. Returns the log line
    /// and whether the apply attached interfaces that were not attached.
    fn enforce(
        &mut self,
        name: &str,
        rs: &RuleSet,
        start: bool,
        same: fn(&RuleSet, &RuleSet) -> bool,
        hup: bool,
    ) -> Result<(String, bool)> {
        let started = Instant::now();
        if start {
            // A restart after a package upgrade: the instances take this build's datapath
            // (without a gap) before anything else reads them.
            for b in &rs.interfaces {
                if let Err(e) = loader::bring_up_to_date(&b.iface) {
                    log::error!("{}: not upgraded to this build's datapath: {e}", b.iface);
                }
            }
        }
        // Any other time the source changed (or SIGHUP asked), so it is applied: the rule
        // diff does not cover interface settings such as monitor mode or timeouts.
        let attached: Vec<bool> =
            rs.interfaces.iter().map(|b| matches!(loader::open_attached(&b.iface), Ok(Some(_)))).collect();
        let adopt = match (start, current_state()?) {
            (true, Some(current)) if same(&current.ruleset, rs) && attached.iter().all(|a| *a) => {
                Some(current.seq)
            }
            _ => None,
        };
        let msg = if let Some(seq) = adopt {
            stats_of(&self.stats).rule_set_seq = seq;
            let ifaces: Vec<&str> = rs.interfaces.iter().map(|b| b.iface.as_str()).collect();
            format!("{name}: rule set #{seq} already enforced on {}: adopted", ifaces.join(", "))
        } else {
            // A version that binds no interface is invalid here (never applied on purpose by
            // a watch): the last good rule set keeps enforcing.
            let source =
                if self.fleet.is_some() { format!("fleet {name}") } else { format!("daemon {name}") };
            let opts = ApplyOptions {
                dry_run: false,
                placement: self.placement,
                revoke: false,
                allow_empty: false,
                confirm: None,
                source: Some(&source),
            };
            let report = apply::apply(rs, opts)?;
            let took = started.elapsed().as_secs_f64();
            let mut st = stats_of(&self.stats);
            st.applies += 1;
            st.apply_seconds_last = took;
            st.apply_seconds_total += took;
            st.rule_set_seq = report.seq;
            for w in &report.warnings {
                log::warn!("{w}");
            }
            let changes = report.diff.lines.len();
            format!(
                "{name}: applied rule set #{} to {} ({changes} changes{})",
                report.seq,
                report.interfaces.join(", "),
                if hup { ", SIGHUP" } else { "" }
            )
        };
        stats_of(&self.stats).last_success_unix = unix_now();
        self.follow(rs)?;
        Ok((msg, adopt.is_none() && attached.iter().any(|a| !*a)))
    }

    /// An update from the fleet agent.
    fn fleet_update(&mut self, u: Update) {
        if self.fleet.is_none() {
            return;
        }
        match u {
            Update::Connected { up, why } => {
                let mut st = stats_of(&self.stats);
                st.fleet_connected = Some(up);
                if let (false, Some(why)) = (up, why) {
                    log::warn!(
                        "fleet: store unreachable ({why}); rule set #{} keeps enforcing",
                        st.rule_set_seq
                    );
                }
            }
            Update::Synced => stats_of(&self.stats).fleet_last_sync_unix = unix_now(),
            Update::Policy { revision, rules, done } => self.fleet_policy(revision, rules, done),
        }
    }

    /// The host's rule set at `revision` from the agent: applied unless it is the one
    /// enforced, and the outcome reported (status key, metrics). `done` says whether the
    /// apply attached interfaces.
    fn fleet_policy(&mut self, revision: i64, rules: Result<RuleSet, String>, done: oneshot::Sender<bool>) {
        let Some(fleet) = &mut self.fleet else { return };
        let start = !fleet.started;
        fleet.started = true;
        let name = format!("etcd revision {revision} (host {})", fleet.host);
        let outcome = match rules {
            // Said already.
            Err(why) if fleet.last_error.as_deref() == Some(why.as_str()) => return,
            Err(why) => Err(why),
            Ok(rs) => match self.fleet_apply(&name, &rs, start) {
                Some(outcome) => outcome,
                None => return,
            },
        };
        self.fleet_report(&name, revision, outcome, done);
    }

    /// Applies `rs` unless it is what is enforced: whether it attached interfaces, or why it
    /// was rejected; `None` when it is enforced already and nothing needs reporting (a
    /// rule set equal to the enforced one after an error clears the error).
    fn fleet_apply(&mut self, name: &str, rs: &RuleSet, start: bool) -> Option<Result<bool, String>> {
        let bare = rs.without_locations();
        let fleet = self.fleet.as_ref()?;
        if fleet.enforced.as_ref() == Some(&bare) {
            log::debug!("{name}: the host's rule set is unchanged");
            return fleet.last_error.is_some().then_some(Ok(false));
        }
        Some(
            match self.enforce(name, rs, start, |a, b| a.without_locations() == b.without_locations(), false)
            {
                Ok((msg, attached)) => {
                    log::info!("{msg}");
                    if let Some(f) = &mut self.fleet {
                        f.enforced = Some(bare);
                    }
                    Ok(attached)
                }
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Reports the outcome of `revision`: metrics, log, and the status key through the agent.
    fn fleet_report(
        &mut self,
        name: &str,
        revision: i64,
        outcome: Result<bool, String>,
        done: oneshot::Sender<bool>,
    ) {
        let Some(fleet) = &mut self.fleet else { return };
        let mut st = stats_of(&self.stats);
        let error = match outcome {
            Ok(attached) => {
                st.fleet_revision = revision;
                fleet.last_error = None;
                let _ = done.send(attached);
                None
            }
            Err(why) => {
                st.apply_failures += 1;
                log::error!("{name}: rejected: {why}; rule set #{} keeps enforcing", st.rule_set_seq);
                fleet.last_error = Some(why.clone());
                Some(why)
            }
        };
        let interfaces = fleet
            .enforced
            .as_ref()
            .map(|rs| rs.interfaces.iter().map(|b| b.iface.clone()).collect())
            .unwrap_or_default();
        let _ = fleet.status.send(Some(HostStatus {
            revision: st.fleet_revision,
            rule_set: st.rule_set_seq,
            at: unix_now(),
            error,
            interfaces,
        }));
    }

    /// Removes expired flows (flow-end records) and rebuilds the presence filters.
    fn gc(&mut self) {
        let now = ct_now_ns();
        let ifaces = match pins::attached_ifaces() {
            Ok(i) => i,
            Err(e) => return log::error!("gc: {e}"),
        };
        let mut removed = 0;
        for name in ifaces {
            let mut a = match loader::open_attached(&name) {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(e) => {
                    log::error!("gc: {name}: {e}");
                    continue;
                }
            };
            match a.maps.ct_gc(now) {
                Ok(ended) => {
                    removed += ended.len() as u64;
                    if let Some(f) = &mut self.flows {
                        f.flows_ended(&name, &ended);
                    }
                }
                Err(e) => log::error!("gc: {name}: {e}"),
            }
            if let Err(e) = a.maps.seen_rebuild() {
                log::error!("gc: {name}: presence filter: {e}");
            }
        }
        let mut st = stats_of(&self.stats);
        st.gc_runs += 1;
        st.gc_removed += removed;
        if removed > 0 {
            log::debug!("gc: removed {removed} expired flows");
        }
    }

    /// SIGTERM: flush the logs; detach if asked.
    fn shutdown(&mut self, detach: bool) {
        if let Some(f) = &mut self.flows {
            f.drain();
            f.flush_window(true);
            f.disable();
        }
        if !detach {
            log::info!("exiting; enforcement stays in place (pins under {})", pins::SG_DIR);
            return;
        }
        match current_state() {
            Ok(Some(s)) => {
                for b in &s.ruleset.interfaces {
                    match loader::detach(&b.iface) {
                        Ok(_) => log::info!("detached {}", b.iface),
                        Err(e) => log::error!("detaching {}: {e}", b.iface),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("detach on exit: {e}"),
        }
    }
}

/// Every attached interface's own addresses into its `SG_LOCAL` (errors logged).
fn refresh_local_addrs() {
    let Ok(ifaces) = pins::attached_ifaces() else { return };
    for name in ifaces {
        if let Ok(Some(mut a)) = loader::open_attached(&name)
            && let Err(e) = crate::iface::refresh_local(&name, &mut a.maps)
        {
            log::error!("{name}: own addresses: {e}");
        }
    }
}

fn io(what: &str) -> impl FnOnce() -> String + '_ {
    move || what.to_string()
}

/// Runs the daemon until SIGTERM or SIGINT (see the module documentation).
pub fn run(opts: Options) -> Result<()> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let mut flows = opts.flow.clone().map(FlowLogger::new).transpose()?;
    let lock = state::daemon_lock()?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context(io("starting tokio"))?;
    let stats: SharedStats = Arc::default();
    let (file, agent_cfg) = match &opts.source {
        Source::File { config, format, aws } => (
            Some(FileSide {
                path: config.clone(),
                format: *format,
                aws: aws.clone(),
                applied: None,
                rejected: None,
                unreadable: false,
            }),
            None,
        ),
        Source::Fleet(cfg) => (None, Some(cfg.clone())),
    };
    let config = file.as_ref().map(|f| f.path.clone());
    let (status_tx, status_rx) = watch::channel(None);
    // Fleet mode with --learn: the observations' summaries, published by the agent.
    let summaries = match (&agent_cfg, flows.as_mut()) {
        (Some(_), Some(f)) if f.learns() => {
            let (tx, rx) = watch::channel(None);
            f.publish_summaries(tx);
            Some(rx)
        }
        _ => None,
    };
    let resync = Arc::new(Notify::new());
    let mut d = Daemon {
        file,
        fleet: agent_cfg.as_ref().map(|c| FleetSide {
            host: c.host.clone(),
            enforced: None,
            status: status_tx,
            resync: resync.clone(),
            started: false,
            last_error: None,
        }),
        placement: opts.placement,
        stats: stats.clone(),
        flows,
        dp_log: datapath_log::Forwarder::default(),
    };
    rt.block_on(async move {
        // The handlers come first: a signal that arrives while the rule set is applied (a
        // SIGTERM right after "adopted" is logged) waits for the loop instead of killing the
        // daemon by its default action halfway.
        let mut hup = signal(SignalKind::hangup()).context(io("SIGHUP handler"))?;
        let mut term = signal(SignalKind::terminate()).context(io("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).context(io("SIGINT handler"))?;
        // What can fail is checked before anything is applied: a daemon that applies and then
        // exits on its metrics port would leave a rule set nobody watches.
        let metrics_listener = match opts.metrics {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Io {
                what: format!(
                    "metrics: binding {addr} (another process on it, or no loopback in this namespace?); \
                     choose another with --metrics ADDR, or --metrics off"
                ),
                source,
            })?),
            None => None,
        };
        let mut updates = None;
        let fleet_label = agent_cfg.as_ref().map(|c| format!("{} {}", c.endpoints.urls.join(","), c.schema.prefix()));
        if let Some(cfg) = agent_cfg {
            // Until the store answers, the pins enforce what they hold (fail static).
            let (tx, rx) = mpsc::unbounded_channel();
            updates = Some(rx);
            tokio::spawn(agent::run(cfg, tx, status_rx, summaries, resync));
            stats_of(&d.stats).fleet_connected = Some(false);
            if let Some(current) = current_state()? {
                log::info!("fleet: enforcing rule set #{} (pinned) until the store answers", current.seq);
                stats_of(&d.stats).rule_set_seq = current.seq;
                d.follow(&current.ruleset)?;
            } else {
                log::info!("fleet: nothing enforced yet; waiting for the store");
            }
        } else if !d.reconcile(Trigger::Start) {
            // A bad file at start: keep serving what the pins enforce, if anything.
            let Some(current) = current_state()? else {
                return Err(Error::NothingToEnforce { path: config.clone().unwrap_or_default() });
            };
            log::warn!("keeping rule set #{} (enforced before this daemon started)", current.seq);
            stats_of(&d.stats).rule_set_seq = current.seq;
            d.follow(&current.ruleset)?;
        }
        let bound = match metrics_listener {
            Some(listener) => {
                let local = listener.local_addr().context(io("metrics: local address"))?;
                tokio::spawn(metrics::serve(listener, stats.clone()));
                Some(local)
            }
            None => None,
        };
        lock.publish(&DaemonInfo {
            pid: std::process::id(),
            config: config.clone(),
            fleet: fleet_label,
            flow_log: opts.flow.as_ref().and_then(|f| f.json.clone()),
            vpc_flow_log: opts.flow.as_ref().and_then(|f| f.vpc.clone()),
            metrics: bound.map(|a| a.to_string()),
            started: unix_now(),
        })?;
        // Logged once daemon.json says where: a reader of the log can then find the address
        // there too (the tests wait for this line and then read daemon.json).
        if let Some(local) = bound {
            log::info!("metrics on http://{local}/metrics");
        }
        let mut poll_t = interval(opts.poll);
        let mut gc_t = interval(opts.gc_interval);
        let mut drain_t = interval(Duration::from_millis(100));
        // The interfaces' own addresses (the datapath drops packets that arrive with one as
        // their source) follow the kernel's within a second.
        let mut local_t = interval(Duration::from_secs(1));
        for t in [&mut poll_t, &mut gc_t, &mut drain_t, &mut local_t] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        gc_t.reset();
        log::info!("sgctl daemon {} running, pid {}", env!("CARGO_PKG_VERSION"), std::process::id());
        // Under systemd (Type=notify), units ordered after sgctl start only now: the rule set
        // is enforced (or the pins' one kept), the metrics port bound, daemon.json written.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            log::warn!("telling systemd the daemon is ready: {e}");
        }
        loop {
            tokio::select! {
                _ = poll_t.tick(), if d.fleet.is_none() => { d.reconcile(Trigger::Poll); }
                u = async { match &mut updates { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    match u {
                        Some(u) => d.fleet_update(u),
                        None => { log::error!("fleet: the agent stopped"); break; }
                    }
                }
                _ = hup.recv() => {
                    match &d.file {
                        Some(f) => log::info!("SIGHUP: reloading {} and reopening logs", f.path.display()),
                        None => log::info!("SIGHUP: reading the fleet's policy again and reopening logs"),
                    }
                    if let Some(f) = &mut d.flows { f.reopen(); }
                    if let Some(f) = &d.fleet { f.resync.notify_one(); } else { d.reconcile(Trigger::Hup); }
                }
                _ = gc_t.tick() => d.gc(),
                _ = local_t.tick() => refresh_local_addrs(),
                _ = drain_t.tick() => {
                    d.dp_log.flush();
                    if let Some(f) = &mut d.flows {
                        f.drain();
                        stats_of(&d.stats).flow = f.stats;
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        d.shutdown(opts.detach_on_exit);
        Ok(())
    })
}
