//! `sgctl top [--json] [--interval SECS] [--count N] [--iface IF] [--rules K]`: a live view,
//! one sample per interval, of packets/s and bits/s per interface, direction and verdict
//! reason, and the rules with the most hits per second, from the per-CPU counters of every
//! interface attached in this network namespace. For operators who drive sgctl on a real NIC
//! with their own generator (TRex, MoonGen, pktgen). `--json` prints one JSON object per sample
//! per line (nothing else), for scripts.

use std::{
    collections::HashMap,
    io::Write as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::{apply::current_state, maps::InstanceMaps, pins};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// One JSON object per sample per line instead of the screen.
    #[arg(long)]
    pub json: bool,
    /// Seconds between samples.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many samples (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Only this interface.
    #[arg(long)]
    pub iface: Option<String>,
    /// How many of the busiest rules to show per interface.
    #[arg(long, default_value_t = 10)]
    pub rules: usize,
}

/// One sample.
#[derive(Debug, Serialize)]
pub struct Sample {
    /// Unix time of the sample, seconds.
    pub time: f64,
    /// Seconds the rates are averaged over.
    pub interval: f64,
    pub interfaces: Vec<IfaceRates>,
}

#[derive(Debug, Serialize)]
pub struct IfaceRates {
    pub iface: String,
    /// Packets/s and bits/s per direction (all reasons).
    pub ingress_pps: f64,
    pub ingress_bps: f64,
    pub egress_pps: f64,
    pub egress_bps: f64,
    /// Every (direction, reason) that moved during the interval.
    pub reasons: Vec<ReasonRate>,
    /// The busiest rules, most hits per second first.
    pub top_rules: Vec<RuleRate>,
}

#[derive(Debug, Serialize)]
pub struct ReasonRate {
    pub direction: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub pps: f64,
    pub bps: f64,
}

#[derive(Debug, Serialize)]
pub struct RuleRate {
    /// Rule id on the interface.
    pub id: u32,
    pub rule: String,
    pub hits_per_s: f64,
}

/// Absolute counters of one interface at one moment.
struct Snapshot {
    counters: Vec<(&'static str, &'static str, &'static str, u64, u64)>,
    /// (generation, hits per rule id), of the active generation.
    rules: (u8, Vec<u64>),
}

fn snapshot(maps: &InstanceMaps, nrules: usize) -> anyhow::Result<Snapshot> {
    let counters =
        maps.counters()?.into_iter().map(|c| (c.direction, c.reason, c.action, c.packets, c.bytes)).collect();
    let cfg = maps.config()?;
    let gen_ = cfg.active_gen & 1;
    let hits = (0..nrules as u32).map(|id| maps.rule_hits(gen_, id)).collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot { counters, rules: (gen_, hits) })
}

/// Rule descriptions per interface, from the applied state (empty in posture mode).
fn rule_names() -> anyhow::Result<HashMap<String, Vec<String>>> {
    let Some(state) = current_state()? else { return Ok(HashMap::new()) };
    Ok(state
        .ruleset
        .interfaces
        .iter()
        .map(|b| {
            let names = state
                .ruleset
                .iface_rules(&b.iface)
                .iter()
                .map(|r| format!("{}/{}: {}", r.group, r.dir.as_str(), r.rule.describe(r.dir)))
                .collect();
            (b.iface.clone(), names)
        })
        .collect())
}

fn rates(
    iface: &str,
    before: &Snapshot,
    after: &Snapshot,
    secs: f64,
    names: &[String],
    top: usize,
) -> IfaceRates {
    let mut r = IfaceRates {
        iface: iface.to_string(),
        ingress_pps: 0.0,
        ingress_bps: 0.0,
        egress_pps: 0.0,
        egress_bps: 0.0,
        reasons: Vec::new(),
        top_rules: Vec::new(),
    };
    for (b, a) in before.counters.iter().zip(&after.counters) {
        let pps = a.3.saturating_sub(b.3) as f64 / secs;
        let bps = a.4.saturating_sub(b.4) as f64 * 8.0 / secs;
        if pps == 0.0 {
            continue;
        }
        if a.0 == "ingress" {
            r.ingress_pps += pps;
            r.ingress_bps += bps;
        } else {
            r.egress_pps += pps;
            r.egress_bps += bps;
        }
        r.reasons.push(ReasonRate { direction: a.0, reason: a.1, action: a.2, pps, bps });
    }
    // Rule hits are comparable only within one generation (an apply in between restarts them).
    if before.rules.0 == after.rules.0 {
        let mut rules: Vec<RuleRate> = before
            .rules
            .1
            .iter()
            .zip(&after.rules.1)
            .enumerate()
            .filter(|(_, (b, a))| a > b)
            .map(|(id, (b, a))| RuleRate {
                id: id as u32,
                rule: names.get(id).cloned().unwrap_or_else(|| format!("rule {id}")),
                hits_per_s: (a - b) as f64 / secs,
            })
            .collect();
        rules.sort_by(|x, y| y.hits_per_s.total_cmp(&x.hits_per_s));
        rules.truncate(top);
        r.top_rules = rules;
    }
    r
}

/// `1234567` -> `1.23M`.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.2}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn print_screen(s: &Sample) {
    let mut out = String::from("\x1b[2J\x1b[H");
    out += &format!("sgctl top: every {:.1} s, Ctrl-C to quit\n\n", s.interval);
    if s.interfaces.is_empty() {
        out += "no interface attached in this network namespace\n";
    }
    for i in &s.interfaces {
        out += &format!(
            "{}  ingress {} pps {}bit/s   egress {} pps {}bit/s\n",
            i.iface,
            si(i.ingress_pps),
            si(i.ingress_bps),
            si(i.egress_pps),
            si(i.egress_bps)
        );
        for r in &i.reasons {
            out += &format!(
                "  {:<8} {:<22} {:<5} {:>10} pps {:>10}bit/s\n",
                r.direction,
                r.reason,
                r.action,
                si(r.pps),
                si(r.bps)
            );
        }
        if !i.top_rules.is_empty() {
            out += "  top rules (new flows/s):\n";
            for r in &i.top_rules {
                out += &format!("  {:>10}/s  #{:<4} {}\n", si(r.hits_per_s), r.id, r.rule);
            }
        }
        out += "\n";
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    pins::check_root()?;
    pins::check_bpffs()?;
    anyhow::ensure!(args.interval >= 0.05, "--interval must be at least 0.05 seconds");
    let dir = pins::netns_dir()?;
    let mut names: Vec<String> = pins::attached_ifaces()?;
    if let Some(only) = &args.iface {
        anyhow::ensure!(names.contains(only), "{only} is not attached in this network namespace");
        names.retain(|n| n == only);
    }
    let mut rule_names = rule_names()?;
    let mut ifaces = Vec::new();
    for name in names {
        let maps = InstanceMaps::from_pins(&dir.join(&name)).with_context(|| format!("{name}: open maps"))?;
        let described = rule_names.get(&name).cloned().unwrap_or_default();
        let nrules = described.len();
        let snap = snapshot(&maps, nrules)?;
        ifaces.push((name, maps, described, snap));
    }
    let mut last = Instant::now();
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let now = Instant::now();
        let secs = now.duration_since(last).as_secs_f64();
        last = now;
        let mut sample = Sample {
            time: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            interval: secs,
            interfaces: Vec::new(),
        };
        for (name, maps, described, prev) in &mut ifaces {
            let mut cur = snapshot(maps, described.len())?;
            if cur.rules.0 != prev.rules.0 {
                // An apply flipped the generation: the rule list may have changed.
                rule_names = self::rule_names()?;
                *described = rule_names.get(name.as_str()).cloned().unwrap_or_default();
                cur = snapshot(maps, described.len())?;
            }
            sample.interfaces.push(rates(name, prev, &cur, secs, described, args.rules));
            *prev = cur;
        }
        if args.json {
            println!("{}", serde_json::to_string(&sample)?);
            let _ = std::io::stdout().flush();
        } else {
            print_screen(&sample);
        }
        n += 1;
    }
    Ok(())
}
