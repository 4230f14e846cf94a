//! The daemon's Prometheus endpoint: `GET /metrics` in the OpenMetrics text format
//! (prometheus-client), read from the maps at each scrape. A minimal HTTP/1.1 responder: one
//! request per connection, 8 KiB of request at most, 5 s to send it.
//!
//! Every metric, its labels and meaning are [`METRICS`] (docs/operations.md's table is that list; a
//! test holds them equal, and the daemon's scrape to the list).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use sg_common::{Direction, Reason, config::CONFIG_MONITOR};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{flowlog, hits, layer::Layer, loader, maps::CtTable, pins, state::current_state};

/// Counters of the daemon itself, exported beside the datapath's.
#[derive(Debug, Default)]
pub struct DaemonStats {
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
    /// Fleet mode: whether the store answers (`None`: not in fleet mode), the unix time it
    /// last did, and the policy revision enforced.
    pub fleet_connected: Option<bool>,
    pub fleet_last_sync_unix: u64,
    pub fleet_revision: i64,
}

/// The daemon's counters, shared with the metrics endpoint.
pub type SharedStats = Arc<Mutex<DaemonStats>>;

/// Locks the shared counters (a poisoned lock still holds valid counters).
pub fn stats_of(s: &SharedStats) -> std::sync::MutexGuard<'_, DaemonStats> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One metric the endpoint serves: its name (a counter gets `_total` in the text), labels and
/// meaning.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub counter: bool,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn m(name: &'static str, counter: bool, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric { name, counter, labels, help }
}

const VERDICT: &[&str] = &["iface", "direction", "reason", "action"];

/// Every metric the daemon serves, in the order it serves them (the fleet's only in fleet
/// mode).
pub const METRICS: &[Metric] = &[
    m("sgctl_packets", true, VERDICT, "Packets per interface, direction and verdict reason (SG_COUNTERS)."),
    m("sgctl_bytes", true, VERDICT, "Bytes per interface, direction and verdict reason (SG_COUNTERS)."),
    m(
        "sgctl_rule_hits",
        true,
        &["iface", "group", "direction", "index"],
        "Packets each rule allowed (flow starts); a rule is a line of its group's list (all its peers), index its number there, as everywhere.",
    ),
    m(
        "sgctl_acl_entry_hits",
        true,
        &["iface", "acl", "direction", "rule_number", "action"],
        "Packets each network ACL entry decided (every packet; carried across applies that keep the entry).",
    ),
    m("sgctl_conntrack_entries", false, &["iface", "table"], "Tracked flows per table."),
    m("sgctl_conntrack_capacity", false, &["iface", "table"], "Conntrack table sizes."),
    m("sgctl_conntrack_full", true, &["iface"], "New flows refused because the table was full (ct_full)."),
    m("sgctl_monitor_mode", false, &["iface"], "1 if the interface is in monitor mode."),
    m("sgctl_flow_log_events", true, &["iface"], "Flow-log events the datapath emitted."),
    m(
        "sgctl_flow_log_events_dropped",
        true,
        &["iface", "cause"],
        "Flow-log events the datapath suppressed: rate_limited, cpu_limited, ring_full.",
    ),
    m(
        "sgctl_flow_log_records",
        true,
        &["kind"],
        "Flow-log records the daemon wrote: accept, reject, end, vpc.",
    ),
    m("sgctl_flow_log_write_errors", true, &[], "Flow-log records lost to write errors."),
    m("sgctl_applies", true, &[], "Rule sets the daemon applied."),
    m("sgctl_apply_failures", true, &[], "Versions of the rules file rejected."),
    m("sgctl_apply_duration_seconds", true, &[], "Time spent applying."),
    m("sgctl_apply_duration_seconds_last", false, &[], "Duration of the last apply."),
    m("sgctl_rule_set_seq", false, &[], "Sequence number of the enforced rule set."),
    m(
        "sgctl_last_apply_success_timestamp_seconds",
        false,
        &[],
        "Unix time of the last successful apply or adoption.",
    ),
    m("sgctl_conntrack_gc_runs", true, &[], "Conntrack garbage collections run."),
    m("sgctl_conntrack_gc_removed", true, &[], "Expired flows the gc removed."),
    m("sgctl_fleet_connected", false, &[], "Fleet mode: 1 while the fleet's etcd answers."),
    m(
        "sgctl_fleet_last_sync_seconds",
        false,
        &[],
        "Fleet mode: seconds since the fleet's etcd last answered (NaN: never).",
    ),
    m("sgctl_fleet_revision", false, &[], "Fleet mode: the etcd revision of the enforced policy."),
];

impl Metric {
    /// The metric of [`METRICS`] with this name (a name missing there is a bug the tests find).
    fn named(name: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("metric {name} is not in METRICS"))
    }

    /// The name as the text format writes it.
    pub fn exposed(&self) -> String {
        if self.counter { format!("{}_total", self.name) } else { self.name.to_string() }
    }
}

#[derive(Debug)]
struct SgCollector {
    stats: SharedStats,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: name, help, type, and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str) -> Self {
        let m = Metric::named(name);
        Family { name: m.name, help: m.help, counter: m.counter, samples: Vec::new() }
    }

    fn add(&mut self, labels: Labels, v: f64) {
        // prometheus-client writes label values as they are: escape them (rule descriptions
        // hold quotes).
        let labels = labels.into_iter().map(|(k, v)| (k, escape(&v))).collect();
        self.samples.push((labels, v));
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter { MetricType::Counter } else { MetricType::Gauge };
        let mut m = enc.encode_descriptor(self.name, self.help, None, kind)?;
        // One unlabelled sample: `name 1.0`, not `name{} 1.0`.
        if let [(labels, v)] = self.samples.as_slice()
            && labels.is_empty()
        {
            return if self.counter {
                ConstCounter::new(*v).encode(m)
            } else {
                ConstGauge::new(*v).encode(m)
            };
        }
        for (labels, v) in &self.samples {
            let fam = m.encode_family(labels)?;
            if self.counter {
                ConstCounter::new(*v).encode(fam)?;
            } else {
                ConstGauge::new(*v).encode(fam)?;
            }
        }
        Ok(())
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

impl SgCollector {
    fn families(&self) -> Vec<Family> {
        let mut packets = Family::new("sgctl_packets");
        let mut bytes = Family::new("sgctl_bytes");
        let mut rule_hits = Family::new("sgctl_rule_hits");
        let mut acl_hits = Family::new("sgctl_acl_entry_hits");
        let mut ct = Family::new("sgctl_conntrack_entries");
        let mut cap = Family::new("sgctl_conntrack_capacity");
        let mut full = Family::new("sgctl_conntrack_full");
        let mut monitor = Family::new("sgctl_monitor_mode");
        let mut fl_ev = Family::new("sgctl_flow_log_events");
        let mut fl_drop = Family::new("sgctl_flow_log_events_dropped");
        let state = current_state().ok().flatten();
        for iface in pins::attached_ifaces().unwrap_or_default() {
            let Ok(Some(a)) = loader::open_attached(&iface) else { continue };
            let i = iface.as_str();
            let mut ct_full = 0.0;
            for dir in Direction::ALL {
                for &reason in Reason::ALL {
                    let Ok(c) = a.maps.counter(dir, reason) else { continue };
                    let labels = l(&[
                        ("iface", i),
                        ("direction", dir.as_str()),
                        ("reason", reason.name()),
                        ("action", reason.action().as_str()),
                    ]);
                    if reason == Reason::CtFull {
                        ct_full += c.packets as f64;
                    }
                    packets.add(labels.clone(), c.packets as f64);
                    bytes.add(labels, c.bytes as f64);
                }
            }
            full.add(l(&[("iface", i)]), ct_full);
            let entries = a.maps.ct_entries().unwrap_or_default();
            for (t, name) in [(CtTable::Established, "established"), (CtTable::New, "new")] {
                let n = entries.iter().filter(|(tt, _, _)| *tt == t).count();
                ct.add(l(&[("iface", i), ("table", name)]), n as f64);
                cap.add(l(&[("iface", i), ("table", name)]), f64::from(a.maps.ct_capacity(t)));
            }
            if let Ok(cfg) = a.maps.config() {
                monitor.add(l(&[("iface", i)]), f64::from(u8::from(cfg.flags & CONFIG_MONITOR != 0)));
                if let Some(s) = &state
                    && let Ok(totals) = hits::live_totals(Layer::Rules, s, i, &a.maps)
                {
                    // One series per rule line (its peers together), numbered as everywhere.
                    let mut lines: Vec<(Vec<(&str, String)>, f64)> = Vec::new();
                    for (r, total) in s.ruleset.iface_rules(i).iter().zip(totals) {
                        let labels = vec![
                            ("iface", iface.clone()),
                            ("group", r.group.clone()),
                            ("direction", r.dir.as_str().to_string()),
                            ("index", r.rule.index.to_string()),
                        ];
                        match lines.iter_mut().find(|(l, _)| *l == labels) {
                            Some((_, n)) => *n += total as f64,
                            None => lines.push((labels, total as f64)),
                        }
                    }
                    for (labels, n) in lines {
                        rule_hits.add(labels, n);
                    }
                }
                if let Some(s) = &state
                    && let (Some(acl), Ok(totals)) =
                        (s.ruleset.iface_acl(i), hits::live_totals(Layer::Acl, s, i, &a.maps))
                {
                    for ((dir, e), n) in acl.by_id().zip(totals) {
                        let labels = vec![
                            ("iface", iface.clone()),
                            ("acl", acl.name.clone()),
                            ("direction", dir.as_str().to_string()),
                            ("rule_number", e.number.to_string()),
                            ("action", e.action.as_str().to_string()),
                        ];
                        acl_hits.add(labels, n as f64);
                    }
                }
            }
            if let Ok(fs) = a.maps.flow_stats() {
                fl_ev.add(l(&[("iface", i)]), fs.emitted as f64);
                for (cause, n) in [
                    ("rate_limited", fs.rate_limited),
                    ("cpu_limited", fs.cpu_limited),
                    ("ring_full", fs.ring_full),
                ] {
                    fl_drop.add(l(&[("iface", i), ("cause", cause)]), n as f64);
                }
            }
        }
        let st = stats_of(&self.stats);
        let one = |name, v: f64| {
            let mut f = Family::new(name);
            f.add(Vec::new(), v);
            f
        };
        let mut records = Family::new("sgctl_flow_log_records");
        for (kind, n) in [
            ("accept", st.flow.accept),
            ("reject", st.flow.reject),
            ("end", st.flow.end),
            ("vpc", st.flow.vpc_records),
        ] {
            records.add(l(&[("kind", kind)]), n as f64);
        }
        let mut fleet = Vec::new();
        if let Some(up) = st.fleet_connected {
            let now = crate::clock::now_unix();
            fleet.push(one("sgctl_fleet_connected", f64::from(u8::from(up))));
            // Since the daemon started when the store never answered.
            let age = if st.fleet_last_sync_unix == 0 {
                f64::NAN
            } else {
                now.saturating_sub(st.fleet_last_sync_unix) as f64
            };
            fleet.push(one("sgctl_fleet_last_sync_seconds", age));
            fleet.push(one("sgctl_fleet_revision", st.fleet_revision as f64));
        }
        let mut all = vec![
            packets,
            bytes,
            rule_hits,
            acl_hits,
            ct,
            cap,
            full,
            monitor,
            fl_ev,
            fl_drop,
            records,
            one("sgctl_flow_log_write_errors", st.flow.write_errors as f64),
            one("sgctl_applies", st.applies as f64),
            one("sgctl_apply_failures", st.apply_failures as f64),
            one("sgctl_apply_duration_seconds", st.apply_seconds_total),
            one("sgctl_apply_duration_seconds_last", st.apply_seconds_last),
            one("sgctl_rule_set_seq", st.rule_set_seq as f64),
            one("sgctl_last_apply_success_timestamp_seconds", st.last_success_unix as f64),
            one("sgctl_conntrack_gc_runs", st.gc_runs as f64),
            one("sgctl_conntrack_gc_removed", st.gc_removed as f64),
        ];
        all.extend(fleet);
        all
    }
}

impl Collector for SgCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in self.families() {
            f.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The metrics text, as served.
pub fn render(stats: &SharedStats) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SgCollector { stats: stats.clone() }));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        log::error!("metrics: encoding: {e}");
    }
    out
}

/// Serves `GET /metrics` until the runtime stops.
pub async fn serve(listener: TcpListener, stats: SharedStats) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let stats = stats.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, &stats).await {
                        log::debug!("metrics: {e}");
                    }
                });
            }
            Err(e) => {
                log::error!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut conn: TcpStream, stats: &SharedStats) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request not sent in 5 s"))??;
    let line = String::from_utf8_lossy(buf.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render(stats))
        }
        ("GET", "/") => ("200 OK", "text/plain; charset=utf-8", "sgctl daemon: see /metrics\n".to_string()),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    /// Every family the endpoint writes is in `METRICS` with its help and type, and every
    /// metric of the list without labels is written (those with labels need an interface: the
    /// daemon's scrape test checks them).
    #[test]
    fn what_is_served_is_the_list() {
        let stats = super::SharedStats::default();
        super::stats_of(&stats).fleet_connected = Some(true);
        let text = super::render(&stats);
        for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
            let (name, help) = line["# HELP ".len()..].split_once(' ').unwrap();
            let m = super::METRICS.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(help, m.help, "{name}");
            let kind = if m.counter { "counter" } else { "gauge" };
            assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name} is a {kind}");
        }
        for m in super::METRICS.iter().filter(|m| m.labels.is_empty()) {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{} ", m.exposed()))),
                "{} not served:\n{text}",
                m.name
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape(r#"tcp 22 ("a\b")"#), r#"tcp 22 (\"a\\b\")"#);
        assert_eq!(super::escape("a\nb"), "a\\nb");
    }
}
