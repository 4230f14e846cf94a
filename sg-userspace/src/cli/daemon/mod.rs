//! `sgctl daemon --config FILE`: keeps the host's enforcement equal to a rules file.
//!
//! - At start it applies the file, or adopts the pins already enforcing it (a restarted daemon
//!   changes nothing when the file did not change: no packet is dropped across a restart).
//! - It checks the file every `--poll` seconds (comparing its bytes, so editors that replace
//!   the file work too) and on SIGHUP, and applies each valid version atomically (`apply`'s
//!   generation flip). A version that does not validate is logged with file:line and the
//!   reason; the last good rule set keeps enforcing.
//! - Every `--gc-interval` seconds it removes expired flows and rebuilds the conntrack
//!   presence filter (`sgctl conntrack gc`), writing flow-end records when flow logs are on.
//! - SIGTERM or SIGINT: it stops and leaves enforcement in place (the pins), unless
//!   `--detach-on-exit`.
//! - One daemon per network namespace (the host, in the root namespace): a lock in
//!   `/run/sgctl/<netns cookie>/daemon.lock`; `daemon.json` beside it says where its flow log
//!   and metrics are.
//!
//! Single-threaded tokio: one loop owns the maps; the metrics endpoint opens them per scrape.

pub mod datapath_log;
pub mod flowlog;
pub mod metrics;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};

use crate::{
    apply::{self, ApplyOptions},
    cli::apply::AwsInput,
    loader::{self, ModeRequest},
    maps::ct_now_ns,
    pins,
    rules::{self, AwsContext, Format},
    state::{self, DaemonInfo},
};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The rules file to enforce (sgctl TOML, or AWS JSON with --format aws).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Toml)]
    pub format: Format,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Seconds between checks of the rules file for changes.
    #[arg(long, default_value_t = 0.25, value_name = "SECS")]
    pub poll: f64,
    /// Seconds between conntrack garbage collections (expired flows, presence filter).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub gc_interval: f64,
    /// Prometheus metrics address (`off` for none). Keep it on loopback unless a firewall
    /// rule restricts who can scrape.
    #[arg(long, default_value = "127.0.0.1:9947", value_name = "ADDR|off")]
    pub metrics: String,
    /// Detach every interface of the rule set on SIGTERM (default: enforcement stays).
    #[arg(long)]
    pub detach_on_exit: bool,
    /// XDP mode for interfaces the daemon attaches.
    #[arg(long, value_enum)]
    pub mode: Option<ModeRequest>,
    #[command(flatten)]
    pub flow: flowlog::FlowArgs,
}

/// Counters of the daemon itself (exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Rule sets applied (the start's adoption of unchanged pins counts as none).
    pub applies: u64,
    /// Versions of the file rejected (invalid, or the apply failed).
    pub apply_failures: u64,
    /// Seconds spent applying, total and last.
    pub apply_seconds_total: f64,
    pub apply_seconds_last: f64,
    /// Sequence number of the enforced rule set.
    pub rule_set_seq: u64,
    /// Unix time of the last successful apply or adoption.
    pub last_success_unix: u64,
    /// Flow-log records written, per kind, and events lost (datapath counters are separate).
    pub flow: flowlog::Stats,
    /// Conntrack garbage collections run, and flows they removed.
    pub gc_runs: u64,
    pub gc_removed: u64,
}

pub type SharedStats = Arc<Mutex<Stats>>;

/// Locks the shared counters (a poisoned lock still holds valid counters).
pub fn stats_of(s: &SharedStats) -> std::sync::MutexGuard<'_, Stats> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether two rule sets are the same in every respect (rules with their file locations,
/// bindings, interface settings).
fn same_rule_set(a: &crate::rules::RuleSet, b: &crate::rules::RuleSet) -> bool {
    matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(x), Ok(y)) if x == y)
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v < 1e6) {
        anyhow::bail!("--{what} must be a positive number of seconds, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why the file is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Start,
    Poll,
    Hup,
}

struct Daemon {
    path: PathBuf,
    format: Format,
    aws: AwsContext,
    mode: Option<ModeRequest>,
    /// Bytes of the version enforced, and of the last version rejected (logged once).
    applied: Option<Vec<u8>>,
    rejected: Option<Vec<u8>>,
    /// The last read of the file failed (logged once).
    unreadable: bool,
    stats: SharedStats,
    flows: Option<flowlog::FlowLogger>,
    /// aya-log records of the datapath, forwarded to this process's log.
    dp_log: datapath_log::Forwarder,
}

impl Daemon {
    /// Reads the file and applies it if it changed (or on SIGHUP). Returns whether a rule set
    /// is enforced afterwards.
    fn reconcile(&mut self, why: Trigger) -> bool {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) => {
                // Logged once while it stays unreadable (and on every SIGHUP).
                if why != Trigger::Poll || !self.unreadable {
                    log::error!("cannot read {}: {e}; the enforced rule set stays", self.path.display());
                    stats_of(&self.stats).apply_failures += 1;
                }
                self.unreadable = true;
                return self.applied.is_some();
            }
        };
        self.unreadable = false;
        if why == Trigger::Poll
            && (self.applied.as_ref() == Some(&text) || self.rejected.as_ref() == Some(&text))
        {
            return true;
        }
        let started = Instant::now();
        match self.apply_text(&text, why) {
            Ok(msg) => {
                let took = started.elapsed().as_secs_f64();
                log::info!("{msg} ({:.1} ms)", took * 1e3);
                self.applied = Some(text);
                self.rejected = None;
                true
            }
            Err(e) => {
                let mut st = stats_of(&self.stats);
                st.apply_failures += 1;
                // Rule errors start with file:line:col already.
                let e = format!("{e:#}");
                let path = self.path.display().to_string();
                let what = if e.starts_with(&path) { e } else { format!("{path}: {e}") };
                log::error!("rejected {what}; rule set #{} keeps enforcing", st.rule_set_seq);
                self.rejected = Some(text);
                false
            }
        }
    }

    fn apply_text(&mut self, bytes: &[u8], why: Trigger) -> anyhow::Result<String> {
        let name = self.path.display().to_string();
        let text = std::str::from_utf8(bytes).with_context(|| format!("{name}: not UTF-8"))?;
        let rs = rules::parse_str(&name, text, self.format, &self.aws)?;
        let started = Instant::now();
        // At start, a rule set the pins already enforce (the very same: rules, interfaces
        // and their settings) is adopted without touching the datapath. Any other time the
        // file changed (or SIGHUP asked), so it is applied: the rule diff does not cover
        // interface settings such as monitor mode or timeouts.
        let adopt = match (why, apply::current_state()?) {
            (Trigger::Start, Some(current))
                if same_rule_set(&current.ruleset, &rs)
                    && rs
                        .interfaces
                        .iter()
                        .all(|b| matches!(loader::open_attached(&b.iface), Ok(Some(_)))) =>
            {
                Some(current.seq)
            }
            _ => None,
        };
        let msg = if let Some(seq) = adopt {
            stats_of(&self.stats).rule_set_seq = seq;
            let ifaces: Vec<&str> = rs.interfaces.iter().map(|b| b.iface.as_str()).collect();
            format!("{name}: rule set #{seq} already enforced on {}: adopted", ifaces.join(", "))
        } else {
            let report = apply::apply(&rs, ApplyOptions { dry_run: false, mode: self.mode, revoke: false })?;
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
                if why == Trigger::Hup { ", SIGHUP" } else { "" }
            )
        };
        stats_of(&self.stats).last_success_unix = unix_now();
        if let Some(f) = &mut self.flows {
            f.enable(&rs)?;
        }
        self.dp_log.follow(&rs);
        Ok(msg)
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
        match apply::current_state() {
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

pub fn run(args: &DaemonArgs) -> anyhow::Result<()> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let poll = secs("poll", args.poll)?;
    let gc_every = secs("gc-interval", args.gc_interval)?;
    let metrics: Option<SocketAddr> = match args.metrics.as_str() {
        "off" | "none" => None,
        a => Some(a.parse().with_context(|| format!("--metrics {a}: not an address:port"))?),
    };
    let flows = args.flow.logger()?;
    let lock = state::daemon_lock()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stats: SharedStats = Arc::default();
    let mut d = Daemon {
        path: args.config.clone(),
        format: args.format,
        aws: args.aws.context()?,
        mode: args.mode,
        applied: None,
        rejected: None,
        unreadable: false,
        stats: stats.clone(),
        flows,
        dp_log: datapath_log::Forwarder::default(),
    };
    rt.block_on(async move {
        if !d.reconcile(Trigger::Start) {
            // A bad file at start: keep serving what the pins enforce, if anything.
            let Some(current) = apply::current_state()? else {
                anyhow::bail!("{}: nothing to enforce (see the error above)", args.config.display());
            };
            log::warn!("keeping rule set #{} (enforced before this daemon started)", current.seq);
            stats_of(&d.stats).rule_set_seq = current.seq;
            if let Some(f) = &mut d.flows {
                f.enable(&current.ruleset)?;
            }
            d.dp_log.follow(&current.ruleset);
        }
        let bound = match metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("metrics: binding {addr}"))?;
                let local = listener.local_addr()?;
                log::info!("metrics on http://{local}/metrics");
                tokio::spawn(metrics::serve(listener, stats.clone()));
                Some(local.to_string())
            }
            None => None,
        };
        lock.publish(&DaemonInfo {
            pid: std::process::id(),
            config: args.config.clone(),
            flow_log: args.flow.flow_log.clone(),
            vpc_flow_log: args.flow.vpc_flow_log.clone(),
            metrics: bound,
            started: unix_now(),
        })?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut poll_t = interval(poll);
        let mut gc_t = interval(gc_every);
        let mut drain_t = interval(Duration::from_millis(100));
        for t in [&mut poll_t, &mut gc_t, &mut drain_t] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        gc_t.reset();
        log::info!("sgctl daemon {} running, pid {}", env!("CARGO_PKG_VERSION"), std::process::id());
        loop {
            tokio::select! {
                _ = poll_t.tick() => { d.reconcile(Trigger::Poll); }
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading {} and reopening logs", d.path.display());
                    if let Some(f) = &mut d.flows { f.reopen(); }
                    d.reconcile(Trigger::Hup);
                }
                _ = gc_t.tick() => d.gc(),
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
        d.shutdown(args.detach_on_exit);
        Ok(())
    })
}
