//! `sgctl top [--json] [--interval SECS] [--count N] [--iface IF] [--rules K]`: a live view,
//! one sample per interval (`crate::top`), of packets/s and bits/s per interface, direction and
//! verdict reason, and the rules with the most hits per second, of every interface attached in
//! this network namespace. For operators who drive sgctl on a real NIC
//! with their own generator (TRex, MoonGen, pktgen). `--json` prints one JSON object per sample
//! per line (nothing else), for scripts.

use std::{fmt::Write as _, io::Write as _, time::Duration};

use clap::Args;

use crate::top::{Sample, Sampler};

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

/// `1234567` -> `1.23M`.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.2}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn print_screen(s: &Sample, terminal: bool) {
    // The screen is cleared on a terminal only: into a pipe or a file, samples follow each other.
    let mut out = if terminal { String::from("\x1b[2J\x1b[H") } else { String::new() };
    let _ = writeln!(out, "sgctl top: every {:.1} s, Ctrl-C to quit\n", s.interval);
    if s.interfaces.is_empty() {
        out += "no interface attached in this network namespace\n";
    }
    for i in &s.interfaces {
        let _ = writeln!(
            out,
            "{}  ingress {} pps {}bit/s   egress {} pps {}bit/s",
            i.iface,
            si(i.ingress_pps),
            si(i.ingress_bps),
            si(i.egress_pps),
            si(i.egress_bps)
        );
        for r in &i.reasons {
            let _ = writeln!(
                out,
                "  {:<8} {:<22} {:<5} {:>10} pps {:>10}bit/s",
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
                let _ = writeln!(out, "  {:>10}/s  {}", si(r.hits_per_s), r.line);
            }
        }
        if !i.top_acl_entries.is_empty() {
            out += "  top network ACL entries (packets/s):\n";
            for r in &i.top_acl_entries {
                let _ = writeln!(out, "  {:>10}/s  {}", si(r.hits_per_s), r.line);
            }
        }
        out += "\n";
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

pub fn run(args: &TopArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.interval >= 0.05, "--interval must be at least 0.05 seconds");
    let mut sampler = Sampler::new(args.iface.as_deref(), args.rules)?;
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let sample = sampler.sample()?;
        if args.json {
            println!("{}", serde_json::to_string(&sample)?);
            let _ = std::io::stdout().flush();
        } else {
            print_screen(&sample, std::io::IsTerminal::is_terminal(&std::io::stdout()));
        }
        n += 1;
    }
    Ok(())
}
