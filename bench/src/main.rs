//! `cargo xtask bench [--quick]`: measures sgctl against nftables, xdp-filter, bare XDP and no
//! filter, and writes CSVs and BENCHMARKS.md (see the `sg_bench` library). Run as root.
//!
//! `sg-bench [--quick] [--out DIR] [--report FILE] [--only testrun,traffic,iperf3,connrate,updates,lifecycle,attacks,memory,learn,fleet]`
//! `sg-bench --from bench/results [--report FILE]`: the report again from saved CSVs.

use std::path::PathBuf;

/// Counts live heap bytes for the `learn` section (the system allocator underneath).
#[global_allocator]
static ALLOC: sg_bench::learn::Counting = sg_bench::learn::Counting;

use anyhow::{Context as _, Result, bail};
use sg_bench::{self as bench, Bench, Opts, tools, traffic::LiveFrames};

struct Args {
    quick: bool,
    out: Option<PathBuf>,
    report: Option<PathBuf>,
    only: Option<Vec<String>>,
    /// Regenerate the report from the CSVs in this directory (no measuring).
    from: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args { quick: false, out: None, report: None, only: None, from: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = Some(it.next().context("--out needs a directory")?.into()),
            "--report" => a.report = Some(it.next().context("--report needs a file")?.into()),
            "--from" => a.from = Some(it.next().context("--from needs a directory")?.into()),
            "--only" => {
                a.only =
                    Some(it.next().context("--only needs a list")?.split(',').map(str::to_string).collect());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

const ONLY_NOTE_END: &str = "; the others are the earlier run's";

/// The sections a note written by an `--only` run names.
fn only_note_sections(note: &str) -> Option<Vec<String>> {
    let rest = note.strip_prefix("Sections ")?.strip_suffix(ONLY_NOTE_END)?;
    let (secs, _) = rest.split_once(" measured on ")?;
    Some(secs.split(", ").map(str::to_string).collect())
}

fn main() -> Result<()> {
    let a = args()?;
    if let Some(dir) = &a.from {
        let mut b = Bench::new(Opts::full(dir.clone()));
        b.samples = bench::read_csv(dir)?;
        b.notes = std::fs::read_to_string(dir.join("notes.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!b.samples.is_empty(), "no CSV in {}", dir.display());
        let report = a.report.unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
        let notes = std::fs::read_to_string("bench/notes.md").ok();
        let svg_dir = report.parent().map_or_else(|| PathBuf::from("bench"), |p| p.join("bench"));
        bench::report::write(&b, &report, &svg_dir, notes.as_deref())?;
        eprintln!("rewrote {} from {}", report.display(), dir.display());
        return Ok(());
    }
    let missing = sg_tests::missing_privileges();
    if !missing.is_empty() {
        bail!("the benchmark needs {}", missing.join(", "));
    }
    for tool in ["nft", "xdp-filter", "trafgen", "iperf3", "ethtool", "bpftool", "nsenter"] {
        if !tools::have(tool) {
            bail!("{tool} not found: run it through `cargo xtask bench`, which installs it");
        }
    }
    let out =
        a.out.unwrap_or_else(|| PathBuf::from(if a.quick { "target/bench-quick" } else { "bench/results" }));
    let report = a
        .report
        .unwrap_or_else(|| if a.quick { out.join("BENCHMARKS.md") } else { PathBuf::from("BENCHMARKS.md") });
    // Sections not measured now keep the numbers (and notes) of the run before, so that
    // `--only` rewrites its sections of the report and leaves the others.
    let earlier = match &a.only {
        Some(only) if out.exists() => {
            let samples: Vec<_> =
                bench::read_csv(&out)?.into_iter().filter(|s| !only.iter().any(|o| o == s.section)).collect();
            let notes = std::fs::read_to_string(out.join("notes.txt")).unwrap_or_default();
            // A note of an earlier `--only` run stays while a section it names is not
            // measured again now.
            let notes: Vec<String> = notes
                .lines()
                .filter(|l| !l.is_empty())
                .filter(|l| match only_note_sections(l) {
                    Some(secs) => secs.iter().any(|s| !only.iter().any(|o| o == s)),
                    None => true,
                })
                .map(str::to_string)
                .collect();
            Some((samples, notes))
        }
        _ => None,
    };
    let opts = if a.quick { Opts::quick(out) } else { Opts::full(out) };
    let mut b = Bench::new(opts);
    if let Some((samples, notes)) = earlier
        && !samples.is_empty()
    {
        b.samples = samples;
        b.notes = notes;
        b.notes.push(format!(
            "Sections {} measured on {} (`--only`){ONLY_NOTE_END}",
            a.only.as_deref().unwrap_or_default().join(", "),
            bench::report::machine()
        ));
    } else {
        b.notes.push(format!("Machine: {}", bench::report::machine()));
    }
    let packages = format!(
        "Debian packages: {}",
        ["nftables", "xdp-tools", "netsniff-ng", "iperf3", "bpftool"].map(tools::package_version).join(", ")
    );
    if !b.notes.contains(&packages) {
        b.notes.push(packages);
    }
    let want = |s: &str| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
    // Asked once, here: every row that needs the built-in generator follows this answer.
    b.live_frames = bench::traffic::probe_live_frames();
    match &b.live_frames {
        LiveFrames::Available => eprintln!("live frames: available (the built-in generator runs)"),
        LiveFrames::Unavailable(why) => {
            eprintln!(
                "live frames: not available on this kernel: {why}; the built-in generator's rows are skipped"
            );
        }
    }
    if want("traffic") {
        // The note describes the traffic rows of this run (an `--only` run without traffic
        // keeps the earlier run's note with that run's rows).
        b.notes.retain(|n| !n.starts_with(bench::BUILTIN_UNAVAILABLE_NOTE));
        if let LiveFrames::Unavailable(why) = &b.live_frames {
            b.notes.push(format!("{}{why}", bench::BUILTIN_UNAVAILABLE_NOTE));
        }
    }
    let sections: [(&str, bench::Section); 10] = [
        ("testrun", bench::testrun::run),
        ("traffic", bench::traffic::run),
        ("iperf3", bench::iperf::run),
        ("connrate", bench::connrate::run),
        ("updates", bench::updates::run),
        ("lifecycle", bench::lifecycle::run),
        ("attacks", bench::attacks::run),
        ("memory", bench::memory::run),
        ("learn", bench::learn::run),
        ("fleet", bench::fleet::run),
    ];
    for (name, f) in sections {
        if want(name) {
            f(&mut b);
        }
    }
    for s in &b.samples {
        // A lost count, and CPU time or bytes of a short phase (10 ms ticks), may be 0.
        let zero_ok = [
            "flow_lost",
            "failed",
            "upgrade_flow_lost",
            "upgrade_denied_passed",
            "connections_refused",
            "refused_ms",
        ]
        .contains(&s.label("measure"))
            || (s.section == "fleet" && s.unit != "ms");
        if !s.value.is_finite() || s.value < 0.0 || (s.value == 0.0 && !zero_ok) {
            let what = format!("{} {:?}: no usable number ({})", s.section, s.labels, s.value);
            b.failures.push(what);
        }
    }
    let csv = b.write_csv().context("write CSV")?;
    let notes = std::fs::read_to_string("bench/notes.md").ok();
    let svg_dir = report.parent().map_or_else(|| PathBuf::from("bench"), |p| p.join("bench"));
    bench::report::write(&b, &report, &svg_dir, if a.quick { None } else { notes.as_deref() })?;
    eprintln!(
        "wrote {} samples: {} and {} (plots in {})",
        b.samples.len(),
        csv.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        report.display(),
        svg_dir.display()
    );
    if !b.failures.is_empty() {
        bail!("{} configuration(s) produced no number:\n  {}", b.failures.len(), b.failures.join("\n  "));
    }
    Ok(())
}
