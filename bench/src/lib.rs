//! `cargo xtask bench`: sgctl against nftables, xdp-filter, bare XDP and no filter.
//!
//! Sections, each writing one CSV under the output directory:
//! - [`testrun`]: ns/packet of the real ingress program through BPF_PROG_TEST_RUN at 1, 100,
//!   1,000 and 10,000 generated rules, against bare XDP_PASS/XDP_DROP and xdp-filter.
//! - [`traffic`]: packets/s through a veth pair between two namespaces, from the built-in
//!   XDP_TX generator (where the kernel allows live frames), an AF_XDP transmitter
//!   ([`afxdp`]) and trafgen, into each receiver (none, nftables, xdp-filter, sgctl
//!   native and generic, bare XDP_DROP), for denied and for allowed established traffic.
//! - [`iperf`]: TCP throughput with iperf3.
//! - [`connrate`]: new TCP connections per second (handshake and close) through the veth.
//! - [`updates`]: apply time at 1,000 and 10,000 rules, and packets lost from an established
//!   flow while applies run back to back.
//! - [`memory`]: kernel memory of sgctl's maps.
//! - [`learn`]: `sgctl learn` in userspace: the observations' memory, a week's proposal.
//! - [`attacks`]: how long new connections are refused while an attacker sends SYN+RST pairs
//!   at full rate (goal: not at all).
//! - [`lifecycle`]: the time an upgrade takes per interface and what it loses (goal 0), and the
//!   time enabling sgctl takes to adopt a host's existing connections.
//! - [`fleet`]: convergence of a fleet (10 hosts with daemons; 10 to 1,000 simulated hosts)
//!   and the etcd cluster's load.
//!
//! [`report`] turns the results into BENCHMARKS.md with SVG plots. No section asserts a speed;
//! `--quick` runs everything briefly and fails only when a configuration produced no number.

/// The benchmark-only object (`sg-ebpf/src/bin/sg-bench.rs`, built by this crate's build.rs):
/// bare XDP_PASS/XDP_DROP baselines and the XDP_TX traffic generator.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-bench"));

/// The datapath built with the stage stops (`sg_common::stage`), loaded into private instances.
pub static STAGED_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-ebpf"));

pub mod afxdp;
pub mod attacks;
pub mod connrate;
pub mod figures;
pub mod fleet;
pub mod iperf;
pub mod learn;
pub mod lifecycle;
pub mod memory;
pub mod report;
pub mod rulegen;
pub mod testrun;
pub mod tools;
pub mod traffic;
pub mod updates;

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

/// A section of the benchmark: measures and records into the [`Bench`].
pub type Section = fn(&mut Bench);

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    /// BPF_PROG_TEST_RUN repetitions per measurement.
    pub repeat: u32,
    /// Fresh tuples per new-flow measurement (one test run each).
    pub fresh: u32,
    /// Interleaved rounds of the per-packet measurement (`repeat` and `fresh` are split
    /// among them; each round is one sample, so the report shows the spread).
    pub rounds: usize,
    /// Rule counts of the per-packet and memory sections.
    pub rule_counts: Vec<usize>,
    /// Distinct prefixes of the per-packet section's large prefix sets.
    pub prefix_counts: Vec<usize>,
    /// Ingress entries of the per-packet section's network ACLs (on a 1-rule set).
    pub acl_counts: Vec<usize>,
    /// Length of one traffic run.
    pub run: Duration,
    /// Repetitions of each traffic and iperf3 run (medians are reported).
    pub reps: usize,
    /// Applies timed per rule count.
    pub applies: usize,
    pub out_dir: PathBuf,
}

impl Opts {
    pub fn full(out_dir: PathBuf) -> Self {
        Opts {
            quick: false,
            repeat: 1_000_000,
            fresh: 20_000,
            rounds: 15,
            rule_counts: vec![1, 100, 1_000, 10_000],
            prefix_counts: vec![100_000],
            acl_counts: vec![20, 10_000],
            run: Duration::from_secs(5),
            reps: 3,
            applies: 10,
            out_dir,
        }
    }

    /// Every configuration, briefly (CI: under 3 minutes, numbers only).
    pub fn quick(out_dir: PathBuf) -> Self {
        Opts {
            quick: true,
            repeat: 20_000,
            fresh: 500,
            rounds: 3,
            rule_counts: vec![1, 100, 1_000, 10_000],
            prefix_counts: vec![100_000],
            acl_counts: vec![20, 10_000],
            run: Duration::from_millis(500),
            reps: 1,
            applies: 2,
            out_dir,
        }
    }
}

/// One measured number with the labels that identify it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Section (`testrun`, `traffic`, ...): the CSV file it goes to.
    pub section: &'static str,
    /// Label columns, in order (name, value).
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: &'static str,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }
}

/// Everything measured in one run, plus the progress display.
pub struct Bench {
    pub opts: Opts,
    pub samples: Vec<Sample>,
    /// Configurations that produced no number, with why.
    pub failures: Vec<String>,
    /// Observations for the report (tool versions, notes).
    pub notes: Vec<String>,
    /// Whether the kernel runs live-frames test runs (the built-in generator): asked once at
    /// the start of a run ([`traffic::probe_live_frames`]).
    pub live_frames: traffic::LiveFrames,
    started: Instant,
}

/// The note that says the built-in generator could not run (followed by the reason): the
/// report reads it back, also from a saved run's notes.
pub const BUILTIN_UNAVAILABLE_NOTE: &str = "Built-in generator (live frames): not available on this kernel: ";

impl Bench {
    pub fn new(opts: Opts) -> Self {
        Bench {
            opts,
            samples: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
            live_frames: traffic::LiveFrames::Unavailable("not asked".into()),
            started: Instant::now(),
        }
    }

    /// A progress line on stderr: elapsed time, section, what is being measured.
    pub fn progress(&self, section: &str, what: &str) {
        let t = self.started.elapsed().as_secs();
        eprintln!("[{:>2}:{:02}] {section:<8} {what}", t / 60, t % 60);
    }

    pub fn record(
        &mut self,
        section: &'static str,
        labels: Vec<(&'static str, String)>,
        value: f64,
        unit: &'static str,
    ) {
        assert!(
            UNITS.contains(&unit),
            "unit {unit} of section {section} is not in bench::UNITS: results read back would lose it"
        );
        let shown: Vec<String> = labels.iter().map(|(_, v)| v.clone()).collect();
        self.progress(section, &format!("{} = {value:.2} {unit}", shown.join(" ")));
        self.samples.push(Sample { section, labels, value, unit });
    }

    /// Records a configuration that produced no number (the run goes on; the exit is non-zero).
    pub fn fail(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("FAILED: {what}");
        self.failures.push(what);
    }

    pub fn section(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.section == name).collect()
    }

    /// Writes one CSV per section into the output directory; returns the paths.
    pub fn write_csv(&self) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(&self.opts.out_dir)?;
        let mut sections: Vec<&'static str> = self.samples.iter().map(|s| s.section).collect();
        sections.dedup();
        sections.sort_unstable();
        sections.dedup();
        let mut paths = Vec::new();
        for sec in sections {
            let rows = self.section(sec);
            let mut text = String::new();
            let header: Vec<&str> = rows[0].labels.iter().map(|(n, _)| *n).collect();
            let _ = writeln!(text, "{},value,unit", header.join(","));
            for r in rows {
                let vals: Vec<String> = r.labels.iter().map(|(_, v)| v.replace(',', ";")).collect();
                let _ = writeln!(text, "{},{},{}", vals.join(","), r.value, r.unit);
            }
            let p = self.opts.out_dir.join(format!("{sec}.csv"));
            std::fs::write(&p, text)?;
            paths.push(p);
        }
        // The run's own notes (tool versions), for a report regenerated from these files.
        std::fs::write(self.opts.out_dir.join("notes.txt"), self.notes.join("\n") + "\n")?;
        Ok(paths)
    }
}

/// Reads back the CSVs [`Bench::write_csv`] wrote (to regenerate the report without measuring).
pub fn read_csv(dir: &std::path::Path) -> std::io::Result<Vec<Sample>> {
    const SECTIONS: [&str; 10] = [
        "testrun",
        "traffic",
        "iperf3",
        "connrate",
        "updates",
        "lifecycle",
        "attacks",
        "memory",
        "learn",
        "fleet",
    ];
    let mut out = Vec::new();
    for sec in SECTIONS {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{sec}.csv"))) else { continue };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let n = header.len().saturating_sub(2);
        for line in lines {
            let cols: Vec<&str> = line.split(',').collect();
            if cols.len() != header.len() {
                continue;
            }
            let labels =
                header[..n].iter().zip(&cols[..n]).map(|(h, v)| (label_name(h), (*v).to_string())).collect();
            let value = cols[n].parse().unwrap_or(f64::NAN);
            out.push(Sample { section: sec, labels, value, unit: unit_name(cols[n + 1]) });
        }
    }
    Ok(out)
}

/// The `'static` label names the sections use.
fn label_name(h: &str) -> &'static str {
    const NAMES: [&str; 12] = [
        "subject",
        "rules",
        "case",
        "family",
        "generator",
        "receiver",
        "traffic",
        "rep",
        "metric",
        "measure",
        "config",
        "hosts",
    ];
    NAMES.iter().copied().chain(["map"]).find(|n| *n == h).unwrap_or("?")
}

/// Every unit a sample may have: the results are read back with it (an `--only` run keeps the
/// other sections' saved samples), so [`Bench::record`] refuses any other.
pub const UNITS: [&str; 15] = [
    "ns/packet",
    "ns",
    "pps",
    "Gbit/s",
    "ms",
    "s",
    "packets",
    "bytes",
    "MB",
    "count",
    "conn/s",
    "flows",
    "observations",
    "rules",
    "lines",
];

fn unit_name(u: &str) -> &'static str {
    UNITS.into_iter().find(|n| *n == u).unwrap_or("?")
}

/// (min, max) of `v` ((NaN, NaN) when empty).
pub fn spread(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { f64::midpoint(v[m - 1], v[m]) }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    #[allow(clippy::float_cmp, reason = "medians of small integers and halves are exact")]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
