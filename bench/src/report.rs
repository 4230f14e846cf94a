//! BENCHMARKS.md and its SVG plots, from one run's samples: medians, ratios to the baselines
//! measured in the same run, and the issue's goals marked met or not met.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Result;
use plotters::prelude::*;

use super::{
    Bench, Sample,
    figures::{by_round, fmt, line, matching, med},
    median, spread,
};

/// Per-round ratios a/b, rounds matched.
fn round_ratios(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    a.iter().filter_map(|(k, va)| b.get(k).map(|vb| (k.clone(), ratio(*va, *vb)))).collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { f64::NAN } else { a / b }
}

/// One goal: text, measured value, met?
struct Goal {
    text: String,
    measured: String,
    met: Option<bool>,
}

fn goal(text: &str, value: f64, shown: String, ok: impl Fn(f64) -> bool) -> Goal {
    Goal { text: text.to_string(), measured: shown, met: if value.is_nan() { None } else { Some(ok(value)) } }
}

/// A goal on a ratio measured once per round: met only when it holds over the whole spread.
fn goal_rounds(text: &str, ratios: &[f64], ok: impl Fn(f64) -> bool) -> Goal {
    let ratios: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
    let (lo, hi) = spread(&ratios);
    let measured = match ratios.len() {
        0 => "n/a".to_string(),
        1 => format!("{}x", fmt(lo, 2)),
        n => format!("{}x ({}-{} over {n} rounds)", fmt(median(&ratios), 2), fmt(lo, 2), fmt(hi, 2)),
    };
    Goal { text: text.to_string(), measured, met: (!ratios.is_empty()).then(|| ok(lo) && ok(hi)) }
}

/// The samples of testrun measurement (subject, rules, case, family) by round.
fn tr_rounds(s: &[Sample], m: [&str; 4]) -> BTreeMap<String, f64> {
    by_round(s, "testrun", &[("subject", m[0]), ("rules", m[1]), ("case", m[2]), ("family", m[3])])
}

/// Per-round ratios a/b of two testrun measurements of `fam`, rounds matched.
fn tr_ratio_rounds(s: &[Sample], a: [&str; 3], b: [&str; 3], fam: &str) -> BTreeMap<String, f64> {
    round_ratios(&tr_rounds(s, [a[0], a[1], a[2], fam]), &tr_rounds(s, [b[0], b[1], b[2], fam]))
}

/// Per round, the worse (larger) of the v4 and v6 ratios a/b.
fn worse_family(s: &[Sample], a: [&str; 3], b: [&str; 3]) -> Vec<f64> {
    let (r4, r6) = (tr_ratio_rounds(s, a, b, "v4"), tr_ratio_rounds(s, a, b, "v6"));
    r4.iter().filter_map(|(k, v4)| r6.get(k).map(|v6| v4.max(*v6))).collect()
}

/// A testrun median with the spread of its rounds: `167.0 (160.1-175.3)`.
fn with_spread(s: &[Sample], m: [&str; 4]) -> String {
    let v: Vec<f64> = tr_rounds(s, m).into_values().collect();
    let (lo, hi) = spread(&v);
    if v.len() < 2 {
        fmt(median(&v), 1)
    } else {
        format!("{} ({}-{})", fmt(median(&v), 1), fmt(lo, 0), fmt(hi, 0))
    }
}

pub const RULES: [&str; 4] = ["1", "100", "1000", "10000"];
/// The rules label of the 100,000-prefix set (`testrun::prefixes_label`).
pub const PREFIXES: &str = "100000p";
/// The rules labels of the network ACL subjects (`testrun::acl_label`): 20 and 10,000 ingress
/// entries on the 1-rule set.
pub const ACL_SMALL: &str = "acl20";
pub const ACL_LARGE: &str = "acl10000";
pub const RECEIVERS: [&str; 7] =
    ["none", "nftables", "xdp-filter", "sgctl-native", "sgctl-generic", "sgctl-tcx", "xdp-drop"];

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("?".to_string(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let jit =
        std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable").unwrap_or_default().trim().to_string();
    format!("{cpu}, {cores} CPUs, {mem} RAM, Linux {kernel}, bpf_jit_enable={jit}")
}

/// Writes the report (markdown and plots) into `dir`; `notes` is hand-written analysis
/// included verbatim (bench/notes.md).
pub fn write(b: &Bench, md_path: &Path, svg_dir: &Path, notes: Option<&str>) -> Result<()> {
    let s = &b.samples;
    let mut m = String::new();
    header(&mut m, b);
    goals_section(&mut m, b);
    per_packet_section(&mut m, s);
    traffic_section(&mut m, s, builtin_unavailable(b).as_deref());
    lifecycle_section(&mut m, s);
    throughput_section(&mut m, s);
    connrate_section(&mut m, s);
    updates_section(&mut m, s);
    memory_section(&mut m, b);
    learn_section(&mut m, s);
    super::fleet::report(s, &mut m);
    footer(&mut m, b, notes);
    std::fs::write(md_path, m)?;
    std::fs::create_dir_all(svg_dir)?;
    plot_ns(s, &svg_dir.join("ns_per_packet.svg"))?;
    plot_pps(s, &svg_dir.join("pps.svg"))?;
    super::fleet::plot(s, &svg_dir.join("fleet.svg"))?;
    Ok(())
}

/// The title, how it was generated, the machine and the method.
fn header(m: &mut String, b: &Bench) {
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(
        m,
        "Generated by `cargo xtask bench{}` (do not edit: rerun it). Raw numbers: `{}`.\n",
        if b.opts.quick { " --quick" } else { "" },
        b.opts.out_dir.display()
    );
    if b.opts.quick {
        let _ = writeln!(
            m,
            "**Quick run**: every configuration briefly; the numbers are not meant to be read.\n"
        );
    }
    // The run's own machine (saved with its CSVs); this one's for an older run without it.
    if !b.notes.iter().any(|n| n.starts_with("Machine: ")) {
        let _ = writeln!(m, "- Machine: {}", machine());
    }
    for n in &b.notes {
        let _ = writeln!(m, "- {n}");
    }
    let _ = writeln!(
        m,
        "- Method: BPF_PROG_TEST_RUN repeat {}; new flows {} fresh tuples; traffic runs {:.1} s x {} (medians); \
         applies x{}.\n",
        b.opts.repeat,
        b.opts.fresh,
        b.opts.run.as_secs_f64(),
        b.opts.reps,
        b.opts.applies
    );
}

/// The goals first (what a reader wants to know): each with what was measured and whether it is met.
fn goals_section(m: &mut String, b: &Bench) {
    let s = &b.samples;
    let iperf = |r: &str| med(s, "iperf3", &[("receiver", r)]);
    let upd = |measure: &str, rules: &str| med(s, "updates", &[("measure", measure), ("rules", rules)]);

    let mut goals = traffic_goals(s, builtin_unavailable(b).as_deref());
    for case in ["deny", "established"] {
        goals.push(goal_rounds(
            &format!("Per-packet cost at 10,000 rules <= 1.2x the cost at 1 rule ({case}, worse family)"),
            &worse_family(s, ["sgctl", "10000", case], ["sgctl", "1", case]),
            |r| r <= 1.2,
        ));
    }
    goals.push(goal_rounds(
        "Denied packet at 100,000 prefixes <= 1.2x the cost at 1 rule (worse family)",
        &worse_family(s, ["sgctl", PREFIXES, "deny"], ["sgctl", "1", "deny"]),
        |r| r <= 1.2,
    ));
    goals.push(goal_rounds(
        "Established fast path <= 2.5x bare XDP_PASS (10,000 rules, worse family)",
        &worse_family(s, ["sgctl", "10000", "established"], ["xdp_pass", "-", "pass"]),
        |r| r <= 2.5,
    ));
    goals.push(goal_rounds(
        "Denied packet <= 0.8x xdp-filter's denied packet (10,000 rules, worse family)",
        &worse_family(s, ["sgctl", "10000", "deny"], ["xdp-filter", "-", "deny"]),
        |r| r <= 0.8,
    ));
    goals.push(goal_rounds(
        "Established packets cost no more than xdp-filter's program (10,000 rules, worse family)",
        &worse_family(s, ["sgctl", "10000", "established"], ["xdp-filter", "-", "established"]),
        |r| r <= 1.0,
    ));
    goals.push(goal_rounds(
        "New flow (policy + insert) <= 3x the established fast path (10,000 rules, worse family)",
        &worse_family(s, ["sgctl", "10000", "new"], ["sgctl", "10000", "established"]),
        |r| r <= 3.0,
    ));
    for case in ["deny", "established", "new"] {
        goals.push(goal_rounds(
            &format!("A 10,000-entry network ACL <= 1.2x a 20-entry one ({case}, worse family)"),
            &worse_family(s, ["sgctl", ACL_LARGE, case], ["sgctl", ACL_SMALL, case]),
            |r| r <= 1.2,
        ));
    }
    goals.push(goal_rounds(
        "A network ACL (20 entries) adds at most 30% to the established fast path (worse family)",
        &worse_family(s, ["sgctl", ACL_SMALL, "established"], ["sgctl", "1", "established"]),
        |r| r <= 1.3,
    ));
    let tcp_gen = iperf("sgctl-generic");
    goals.push(goal(
        "TCP throughput with sgctl (generic, what --mode auto picks on veth) >= nftables",
        ratio(tcp_gen, iperf("nftables")),
        format!("{}x", fmt(ratio(tcp_gen, iperf("nftables")), 2)),
        |r| r >= 1.0,
    ));
    goals.push(goal(
        "TCP throughput with sgctl (generic) >= 90% of no filter",
        ratio(tcp_gen, iperf("none")),
        format!("{}%", fmt(100.0 * ratio(tcp_gen, iperf("none")), 1)),
        |r| r >= 0.9,
    ));
    // New connections per second, paired by round.
    let conn = |r: &str| by_round(s, "connrate", &[("receiver", r), ("measure", "conn_per_s")]);
    let conn_ratios: Vec<f64> =
        round_ratios(&conn("sgctl-generic"), &conn("nftables")).into_values().collect();
    goals.push(goal_rounds(
        "New TCP connections per second >= 1.5x nftables with conntrack (sgctl generic, what --mode auto picks on veth)",
        &conn_ratios,
        |r| r >= 1.5,
    ));
    let a1k = upd("apply_ms", "1000");
    goals.push(goal("A 1,000-rule apply under 100 ms", a1k, format!("{} ms", fmt(a1k, 1)), |v| v < 100.0));
    let lost = upd("flow_lost", "1000");
    goals.push(goal(
        "0 packets of an established flow lost during 10 applies",
        lost,
        format!("{} of {} lost", fmt(lost, 0), fmt(upd("flow_sent", "1000"), 0)),
        |v| v == 0.0,
    ));
    goals.extend(lifecycle_goals(s));
    let refused = med(s, "attacks", &[("measure", "refused_ms")]);
    goals.push(goal(
        "New connections refused while SYN+RST pairs arrive at full rate: none",
        refused,
        format!(
            "{} of {} refused ({} ms), {} pairs/s",
            fmt(med(s, "attacks", &[("measure", "connections_refused")]), 0),
            fmt(med(s, "attacks", &[("measure", "connections_tried")]), 0),
            fmt(refused, 0),
            fmt(med(s, "attacks", &[("measure", "syn_rst_pairs_per_s")]), 0)
        ),
        |v| v == 0.0,
    ));
    for (case, what) in [("put", "a `fleet put`"), ("join", "a membership change")] {
        let v = super::fleet::lan_quantile(s, case, 0.99);
        goals.push(goal(
            &format!("Fleet: {what} enforced on all 10 hosts, p99 < 1 s"),
            v,
            format!("{} ms", fmt(v, 1)),
            |v| v < 1000.0,
        ));
    }
    let _ = writeln!(m, "## Goals\n\n| goal | measured | met |\n|---|---|---|");
    for g in &goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(m, "| {} | {} | {met} |", g.text, g.measured);
    }
}

/// sgctl's ingress at TCX (`--ingress-hook tcx`) against its ingress at XDP, program for
/// program (1 rule), and the two hooks' bare floors.
fn tcx_ingress_table(m: &mut String, s: &[Sample]) {
    let tr = |subject: &str, rules: &str, case: &str, fam: &str| {
        med(s, "testrun", &[("subject", subject), ("rules", rules), ("case", case), ("family", fam)])
    };
    let _ = writeln!(
        m,
        "\nIngress at TCX (`--ingress-hook tcx`, beside another XDP program) against ingress at XDP, 1 rule. \
         The programs alone: at TCX the kernel has built the skb before the program runs (as generic XDP \
         does; native XDP runs before any skb), which the traffic section's `sgctl-tcx` row includes.\n"
    );
    let _ = writeln!(m, "| ns/packet | XDP v4 | TCX v4 | TCX / XDP v4 | XDP v6 | TCX v6 | TCX / XDP v6 |");
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, xs, xr, xc, ts, tr_, tc) in [
        ("bare program (XDP_PASS, TC pass)", "xdp_pass", "-", "pass", "tc_pass", "-", "pass"),
        ("denied packet", "sgctl", "1", "deny", "sgctl_tcx", "1", "deny"),
        ("established packet", "sgctl", "1", "established", "sgctl_tcx", "1", "established"),
    ] {
        let cells: Vec<String> = ["v4", "v6"]
            .iter()
            .flat_map(|f| {
                let (x, t) = (tr(xs, xr, xc, f), tr(ts, tr_, tc, f));
                [fmt(x, 1), fmt(t, 1), fmt(ratio(t, x), 2)]
            })
            .collect();
        let _ = writeln!(m, "| {label} | {} |", cells.join(" | "));
    }
}

/// Per-packet cost through BPF_PROG_TEST_RUN: by rule count, baselines, stages, ratios.
fn per_packet_section(m: &mut String, s: &[Sample]) {
    let tr = |subject: &str, rules: &str, case: &str, fam: &str| {
        med(s, "testrun", &[("subject", subject), ("rules", rules), ("case", case), ("family", fam)])
    };
    // Per-packet cost.
    let _ = writeln!(m, "\n## Per-packet cost (BPF_PROG_TEST_RUN, ns/packet, medians)\n");
    let _ = writeln!(m, "![ns per packet](bench/ns_per_packet.svg)\n");
    let _ = writeln!(
        m,
        "Each cell: the median of the interleaved rounds and, in brackets, the lowest and highest \
         round. A round makes {} passes over the measurements, each case beside its baseline, \
         family by family (every other pass backwards), and keeps each measurement's fastest pass. \
         A goal on a ratio is met only when every round's ratio meets it.\n",
        super::testrun::SLICES
    );
    let _ = writeln!(m, "| rules | deny v4 | deny v6 | established v4 | established v6 | new v4 | new v6 |");
    let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in RULES.iter().copied().chain([PREFIXES]) {
        let cells: Vec<String> = ["deny", "established", "new"]
            .iter()
            .flat_map(|c| ["v4", "v6"].map(|f| with_spread(s, ["sgctl", r, c, f])))
            .collect();
        let shown = if r == PREFIXES { "100,000 prefixes" } else { r };
        let _ = writeln!(m, "| {shown} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        m,
        "\n`new`: a new flow per repetition (`sg_bench_new_flow` in front of the program); the \
         baseline row `pass_chain` is that wrapper in front of bare XDP_PASS. `new, first run of a \
         call` is the cold case (each new flow the only run of its test-run call).\n"
    );
    let _ = writeln!(m, "| rules | new, first run of a call, v4 | v6 |\n|---:|---:|---:|");
    for r in RULES {
        let _ = writeln!(
            m,
            "| {r} | {} | {} |",
            with_spread(s, ["sgctl", r, "new_single", "v4"]),
            with_spread(s, ["sgctl", r, "new_single", "v6"])
        );
    }
    let _ = writeln!(m, "\n| baseline | v4 | v6 |\n|---|---:|---:|");
    for (label, subj, case) in [
        ("bare XDP_PASS", "xdp_pass", "pass"),
        ("bare XDP_DROP", "xdp_drop", "drop"),
        ("bare XDP_PASS behind sg_bench_new_flow (baseline of `new`)", "xdp_pass", "pass_chain"),
        ("bare XDP_PASS, one run per call (baseline of `new`, first run)", "xdp_pass", "pass_single"),
        ("xdp-filter, denied packet", "xdp-filter", "deny"),
        ("xdp-filter, allowed packet", "xdp-filter", "established"),
    ] {
        let _ = writeln!(
            m,
            "| {label} | {} | {} |",
            with_spread(s, [subj, "-", case, "v4"]),
            with_spread(s, [subj, "-", case, "v6"])
        );
    }
    let _ = writeln!(m, "\nWhere the time of a denied IPv4 packet goes (sgctl, cumulative):\n");
    let _ = writeln!(m, "| stage | ns/packet |\n|---|---:|");
    for (label, case) in [
        ("entry and exit only (no config: dropped at once)", "stage_no_config"),
        ("+ config and Ethernet (a non-IP frame, passed)", "stage_non_ip"),
        ("+ IP/UDP parse, ICMP-related check, presence filter (posture deny)", "stage_posture_deny"),
        ("+ prefix table and port-set search (1 rule, denied)", "stage_groups_deny"),
        ("the same with flow logs on (reject events rate-limited per source)", "stage_groups_deny_flow_log"),
    ] {
        let _ = writeln!(m, "| {label} | {} |", fmt(tr("sgctl", "-", case, "v4"), 1));
    }
    let _ = writeln!(
        m,
        "\nWhere the time of an established and of a new IPv4 packet goes (sgctl, 1 rule, cumulative; \
         the stops are `sg_common::stage`, which attached instances do not carry):\n"
    );
    let _ = writeln!(m, "| established packet | ns/packet |\n|---|---:|");
    let staged = |case: &str| fmt(tr("sgctl", "-", case, "v4"), 1);
    for (label, v) in [
        ("entry and exit only (no config)", staged("stage_no_config")),
        ("+ config and Ethernet (a non-IP frame)", staged("stage_non_ip")),
        ("+ IP/UDP parse", staged("est_parsed")),
        ("+ ICMP-related check, presence filter, flow key", staged("est_keyed")),
        ("+ conntrack lookup (a hit in SG_CT)", staged("est_found")),
        (
            "+ clock, entry update, verdict (the whole fast path)",
            fmt(tr("sgctl", "1", "established", "v4"), 1),
        ),
    ] {
        let _ = writeln!(m, "| {label} | {v} |");
    }
    let _ = writeln!(m, "\n| new flow (warm, behind `sg_bench_new_flow`) | ns/packet |\n|---|---:|");
    for (label, v) in [
        ("the wrapper and bare XDP_PASS", fmt(tr("xdp_pass", "-", "pass_chain", "v4"), 1)),
        ("+ sgctl up to the IP/UDP parse", staged("new_parsed")),
        ("+ ICMP-related check, presence filter (a miss), policy (allowed)", staged("new_policy")),
        ("+ flow key", staged("new_keyed")),
        (
            "+ clock, LRU insert, presence marks, rule hit, verdict (the whole new-flow path)",
            fmt(tr("sgctl", "1", "new", "v4"), 1),
        ),
    ] {
        let _ = writeln!(m, "| {label} | {v} |");
    }
    let _ = writeln!(m, "\n| ratio (v4 / v6) | 1 rule | 10,000 rules |\n|---|---:|---:|");
    for (label, case, base_subj, base_case) in [
        ("deny / bare XDP_DROP", "deny", "xdp_drop", "drop"),
        ("established / bare XDP_PASS", "established", "xdp_pass", "pass"),
        ("new / bare XDP_PASS behind the wrapper", "new", "xdp_pass", "pass_chain"),
        ("new, first run / bare XDP_PASS one run per call", "new_single", "xdp_pass", "pass_single"),
        ("deny / xdp-filter denied", "deny", "xdp-filter", "deny"),
        ("established / xdp-filter allowed", "established", "xdp-filter", "established"),
    ] {
        let cell = |rules: &str| {
            format!(
                "{} / {}",
                fmt(ratio(tr("sgctl", rules, case, "v4"), tr(base_subj, "-", base_case, "v4")), 2),
                fmt(ratio(tr("sgctl", rules, case, "v6"), tr(base_subj, "-", base_case, "v6")), 2)
            )
        };
        let _ = writeln!(m, "| {label} | {} | {} |", cell("1"), cell("10000"));
    }
    tcx_ingress_table(m, s);
    for case in ["deny", "established", "new"] {
        let _ = writeln!(
            m,
            "\n{case}: 10,000 rules / 1 rule = {} (v4), {} (v6)",
            fmt(ratio(tr("sgctl", "10000", case, "v4"), tr("sgctl", "1", case, "v4")), 2),
            fmt(ratio(tr("sgctl", "10000", case, "v6"), tr("sgctl", "1", case, "v6")), 2)
        );
    }

    let _ = writeln!(
        m,
        "\nNetwork ACLs (the 1-rule set with an ACL of 20 or 10,000 ingress entries: deny entries, \
         then allow-all; egress allows all. The packets meet the whole list and pass it; the \
         denied one is then denied by the groups):\n"
    );
    let _ = writeln!(
        m,
        "| network ACL | deny v4 | deny v6 | established v4 | established v6 | new v4 | new v6 |"
    );
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, r) in [("none (1 rule)", "1"), ("20 entries", ACL_SMALL), ("10,000 entries", ACL_LARGE)] {
        let cells: Vec<String> = ["deny", "established", "new"]
            .iter()
            .flat_map(|c| ["v4", "v6"].map(|f| with_spread(s, ["sgctl", r, c, f])))
            .collect();
        let _ = writeln!(m, "| {label} | {} |", cells.join(" | "));
    }
    let _ = writeln!(m, "\n| ratio (v4 / v6) | deny | established | new |\n|---|---:|---:|---:|");
    for (label, a, b) in [
        ("20 entries / none", ACL_SMALL, "1"),
        ("10,000 entries / none", ACL_LARGE, "1"),
        ("10,000 / 20 entries", ACL_LARGE, ACL_SMALL),
    ] {
        let cells: Vec<String> = ["deny", "established", "new"]
            .iter()
            .map(|c| {
                format!(
                    "{} / {}",
                    fmt(ratio(tr("sgctl", a, c, "v4"), tr("sgctl", b, c, "v4")), 2),
                    fmt(ratio(tr("sgctl", a, c, "v6"), tr("sgctl", b, c, "v6")), 2)
                )
            })
            .collect();
        let _ = writeln!(m, "| {label} | {} |", cells.join(" | "));
    }
}

/// TCP throughput with iperf3 against no filter and nftables.
fn throughput_section(m: &mut String, s: &[Sample]) {
    let iperf = |r: &str| med(s, "iperf3", &[("receiver", r)]);
    let _ = writeln!(
        m,
        "\n## TCP throughput (iperf3, Gbit/s, medians)\n\n| receiver | Gbit/s | vs none | vs nftables |\n|---|---:|---:|---:|"
    );
    for r in ["none", "nftables", "sgctl-generic", "sgctl-native"] {
        let v = iperf(r);
        let _ = writeln!(
            m,
            "| {r} | {} | {} | {} |",
            fmt(v, 2),
            fmt(ratio(v, iperf("none")), 2),
            fmt(ratio(v, iperf("nftables")), 2)
        );
    }
}

/// New TCP connections per second (when measured).
fn connrate_section(m: &mut String, s: &[Sample]) {
    if s.iter().any(|x| x.section == "connrate") {
        let _ = writeln!(
            m,
            "\n## New TCP connections per second (handshake and close, medians)\n\n\
             | receiver | conn/s | vs none | vs nftables | failed (all rounds) |\n|---|---:|---:|---:|---:|"
        );
        let none = med(s, "connrate", &[("receiver", "none"), ("measure", "conn_per_s")]);
        let nft = med(s, "connrate", &[("receiver", "nftables"), ("measure", "conn_per_s")]);
        for r in super::connrate::RECEIVERS {
            let v = med(s, "connrate", &[("receiver", r.name()), ("measure", "conn_per_s")]);
            let failed: f64 = matching(s, "connrate", &[("receiver", r.name()), ("measure", "failed")])
                .map(|x| x.value)
                .sum();
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                r.name(),
                fmt(v, 0),
                fmt(ratio(v, none), 2),
                fmt(ratio(v, nft), 2),
                fmt(failed, 0)
            );
        }
    }
}

/// Apply times, and what an established flow loses while applies run.
fn updates_section(m: &mut String, s: &[Sample]) {
    let upd = |measure: &str, rules: &str| med(s, "updates", &[("measure", measure), ("rules", rules)]);
    let lost = upd("flow_lost", "1000");
    let _ = writeln!(m, "\n## Updates under load\n\n| measure | value |\n|---|---:|");
    for n in ["1000", "10000"] {
        let _ = writeln!(
            m,
            "| `sgctl apply`, {n} rules (median, ms, process start included) | {} |",
            fmt(upd("apply_ms", n), 1)
        );
    }
    let _ = writeln!(
        m,
        "| established UDP flow (20,000 datagrams/s) during 10 applies of 1,000 rules: lost / sent | {} / {} |",
        fmt(lost, 0),
        fmt(upd("flow_sent", "1000"), 0)
    );
}

/// Kernel memory of the maps per configuration.
fn memory_section(m: &mut String, b: &Bench) {
    let s = &b.samples;
    let _ = writeln!(m, "\n## Map memory (kernel accounting, bytes_memlock)\n");
    let mut configs: Vec<String> =
        b.section("memory").iter().map(|x| x.label("config").to_string()).collect();
    configs.dedup();
    let mut maps: Vec<String> = b.section("memory").iter().map(|x| x.label("map").to_string()).collect();
    maps.sort();
    maps.dedup();
    maps.retain(|x| x != "total");
    maps.push("total".to_string());
    let _ = writeln!(m, "| map | {} |", configs.join(" | "));
    let _ = writeln!(m, "|---|{}", "---:|".repeat(configs.len()));
    for map in &maps {
        let cells: Vec<String> = configs
            .iter()
            .map(|c| {
                let v = med(s, "memory", &[("config", c), ("map", map)]);
                if v.is_nan() { "n/a".to_string() } else { format!("{:.1} KiB", v / 1024.0) }
            })
            .collect();
        let _ = writeln!(m, "| {map} | {} |", cells.join(" | "));
    }
}

/// `sgctl learn` in userspace (`learn.rs`).
fn learn_section(m: &mut String, s: &[Sample]) {
    let v = |what: &str| med(s, "learn", &[("measure", what)]);
    if v("week_flows").is_nan() {
        return;
    }
    let _ = writeln!(m, "\n## Learning rules from traffic (sgctl learn)\n");
    let _ = writeln!(
        m,
        "In userspace, where learning runs; the datapath's part is the flow event of each new flow \
         (nothing per established packet). The synthetic week is described in `bench/src/learn.rs`.\n"
    );
    let _ = writeln!(m, "| measure | value |\n|---|---:|");
    let rows = [
        (
            "observations table in memory, per 10,000 distinct observations",
            fmt(v("heap_bytes_per_10k") / 1024.0, 0),
            "KiB",
        ),
        ("the same, saved (JSON)", fmt(v("saved_bytes_per_10k") / 1024.0, 0), "KiB"),
        ("synthetic week: flows", fmt(v("week_flows"), 0), ""),
        ("synthetic week: distinct observations", fmt(v("week_observations"), 0), ""),
        ("recording one flow (table update)", fmt(v("record_ns_per_flow"), 0), "ns"),
        ("proposal from the week", fmt(v("propose_ms"), 1), "ms"),
        ("rules proposed (from 3 rules allowing everything)", fmt(v("rules_proposed"), 0), ""),
        ("candidate rules file", fmt(v("candidate_lines"), 0), "lines"),
    ];
    for (what, value, unit) in rows {
        let _ = writeln!(m, "| {what} | {value} {unit} |");
    }
    // The datapath's part (testrun section): flow events on against off, 1 rule.
    let tr = |subject: &str, case: &str, fam: &str| {
        med(s, "testrun", &[("subject", subject), ("rules", "1"), ("case", case), ("family", fam)])
    };
    let _ = writeln!(
        m,
        "\nIn the datapath (BPF_PROG_TEST_RUN, 1 rule): `daemon --learn` turns flow events on; each new \
         flow writes its accept event to the ring (here without rate limit, the ring drained between \
         calls of {} new flows); an established packet writes nothing.\n",
        super::testrun::EVENTS_PER_CALL
    );
    let _ = writeln!(
        m,
        "| ns/packet | events off v4 | events on v4 | on / off v4 | events off v6 | events on v6 | on / off v6 |"
    );
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, case_off, case_on) in
        [("new flow", "new_capped", "new_capped"), ("established packet", "established", "established")]
    {
        let cells: Vec<String> = ["v4", "v6"]
            .iter()
            .flat_map(|f| {
                let (off, on) = (tr("sgctl", case_off, f), tr("sgctl_learning", case_on, f));
                [fmt(off, 1), fmt(on, 1), fmt(ratio(on, off), 2)]
            })
            .collect();
        let _ = writeln!(m, "| {label} | {} |", cells.join(" | "));
    }
}

/// Configurations without numbers, the notes, how to reproduce.
fn footer(m: &mut String, b: &Bench, notes: Option<&str>) {
    if !b.failures.is_empty() {
        let _ = writeln!(m, "\n## Configurations without numbers\n");
        for f in &b.failures {
            let _ = writeln!(m, "- {f}");
        }
    }
    if let Some(notes) = notes {
        let _ = writeln!(m, "\n{}", notes.trim_end());
    }
    let _ = writeln!(
        m,
        "\n## How to reproduce\n\n```sh\ncargo xtask bench           # full run (about 20 minutes), rewrites this file\n\
         cargo xtask bench --quick   # every configuration briefly (CI), into target/bench-quick/\n```\n\n\
         Run as root on an otherwise idle machine; the xtask installs nftables, xdp-tools, netsniff-ng, \
         iperf3, ethtool and bpftool if missing. Everything runs in namespaces the benchmark creates \
         (192.0.2.0/24, 2001:db8::/32), torn down at the end."
    );
}

fn plot_ns(s: &[Sample], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    // New flows (about 5x dearer) are in the table; on the same axis they would flatten the rest.
    let series: Vec<(String, Vec<(f64, f64)>)> = ["deny", "established"]
        .iter()
        .flat_map(|c| ["v4", "v6"].map(|f| (c.to_string(), f)))
        .map(|(c, f)| {
            let pts = RULES
                .iter()
                .map(|r| {
                    (
                        r.parse::<f64>().unwrap_or(1.0).log10(),
                        med(s, "testrun", &[("subject", "sgctl"), ("rules", r), ("case", &c), ("family", f)]),
                    )
                })
                .filter(|(_, y)| !y.is_nan())
                .collect();
            (format!("sgctl {c} {f}"), pts)
        })
        .collect();
    let baselines: Vec<(String, f64)> = [
        ("bare XDP_PASS v4", "xdp_pass", "pass"),
        ("bare XDP_DROP v4", "xdp_drop", "drop"),
        ("xdp-filter allowed v4", "xdp-filter", "established"),
    ]
    .iter()
    .map(|(l, subj, c)| {
        (
            l.to_string(),
            med(s, "testrun", &[("subject", subj), ("rules", "-"), ("case", c), ("family", "v4")]),
        )
    })
    .filter(|(_, v)| !v.is_nan())
    .collect();
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .chain(baselines.iter().map(|(_, v)| *v))
        .fold(10.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("sgctl ingress, ns/packet vs rule count (BPF_PROG_TEST_RUN)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..4.2f64, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("rules (log10)")
        .y_desc("ns/packet")
        .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        line(&mut chart, i, name, pts, 2)?;
    }
    for (i, (name, v)) in baselines.iter().enumerate() {
        line(&mut chart, i + 6, name, &[(-0.2, *v), (4.2, *v)], 1)?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Why the built-in generator did not run (from the run's notes), if it did not.
fn builtin_unavailable(b: &Bench) -> Option<String> {
    b.notes.iter().find_map(|n| n.strip_prefix(super::BUILTIN_UNAVAILABLE_NOTE)).map(str::to_string)
}

/// The traffic generators in the report, with how the report names them.
const GENERATORS: [(&str, &str); 3] = [
    ("builtin", "built-in generator (live frames)"),
    ("afxdp", "AF_XDP generator, one socket per CPU"),
    ("trafgen", "trafgen, one process per CPU"),
];

/// Median of a traffic measurement.
fn traffic(s: &[Sample], g: &str, r: &str, t: &str, metric: &str) -> f64 {
    med(s, "traffic", &[("generator", g), ("receiver", r), ("traffic", t), ("metric", metric)])
}

/// The drop-rate goals, for each generator that can reach them: the built-in one where the
/// kernel allows live frames ("not measured" with the reason where not) and AF_XDP.
fn traffic_goals(s: &[Sample], builtin_unavailable: Option<&str>) -> Vec<Goal> {
    let mut goals = Vec::new();
    for (g, name) in &GENERATORS[..2] {
        let nft_text = format!("Denied-traffic drop rate >= 3x nftables (sgctl native, {name})");
        let bare_text = format!("Denied-traffic drop rate >= 80% of bare XDP_DROP (sgctl native, {name})");
        if *g == "builtin"
            && let Some(why) = builtin_unavailable
        {
            for text in [nft_text, bare_text] {
                goals.push(Goal { text, measured: format!("not measured: {why}"), met: None });
            }
            continue;
        }
        let sg = traffic(s, g, "sgctl-native", "denied", "handled");
        let (nft, bare) =
            (traffic(s, g, "nftables", "denied", "handled"), traffic(s, g, "xdp-drop", "denied", "handled"));
        goals.push(goal(&nft_text, ratio(sg, nft), format!("{}x", fmt(ratio(sg, nft), 2)), |r| r >= 3.0));
        goals.push(goal(&bare_text, ratio(sg, bare), format!("{}%", fmt(100.0 * ratio(sg, bare), 1)), |r| {
            r >= 0.8
        }));
    }
    goals
}

/// A receiver that handled this share of what the generator sent has kept up with it: its
/// rate is the generator's bound, not its own.
const BOUNDED_SHARE: f64 = 0.98;

/// The traffic section: rates per generator and receiver, ratios, and each receiver's own
/// cost per denied packet.
fn traffic_section(m: &mut String, s: &[Sample], builtin_unavailable: Option<&str>) {
    let _ = writeln!(m, "\n## Traffic through a veth pair (Mpps, medians)\n");
    let _ = writeln!(m, "![packets per second per receiver](bench/pps.svg)\n");
    let _ = writeln!(
        m,
        "`handled`: for denied traffic, packets the receiver's filter dropped (for `none`, packets the \
         stack received); for allowed traffic, packets the receiving stack got. `sent`: the generator's \
         rate. A veth runs the receiver in the sender's softirq on the sender's CPU, so every rate is \
         bounded by its generator: rate = 1 / (generator + veth + receiver). `>=` marks a receiver \
         that handled {:.0}% or more of what was sent: it kept up, and its own capacity is higher.\n",
        BOUNDED_SHARE * 100.0
    );
    if let Some(why) = builtin_unavailable {
        let _ = writeln!(m, "The built-in generator is not available on this kernel: {why}.\n");
    }
    let present: Vec<(&str, &str)> = GENERATORS
        .iter()
        .copied()
        .filter(|(g, _)| !(*g == "builtin" && builtin_unavailable.is_some()))
        .collect();
    let head: Vec<String> =
        GENERATORS.iter().flat_map(|(g, _)| [format!("{g} denied"), format!("{g} allowed")]).collect();
    let _ = writeln!(m, "| receiver | {} |", head.join(" | "));
    let _ = writeln!(m, "|---|{}", "---:|".repeat(head.len()));
    for r in RECEIVERS {
        let cells: Vec<String> = GENERATORS
            .iter()
            .flat_map(|(g, _)| ["denied", "allowed"].map(|t| (*g, t)))
            .map(|(g, t)| {
                if g == "builtin" && builtin_unavailable.is_some() {
                    return "not available on this kernel".to_string();
                }
                let (handled, sent) = (traffic(s, g, r, t, "handled"), traffic(s, g, r, t, "sent"));
                let bound = if handled >= BOUNDED_SHARE * sent { ">=" } else { "" };
                format!("{bound}{} (sent {})", fmt(handled / 1e6, 3), fmt(sent / 1e6, 3))
            })
            .collect();
        let _ = writeln!(m, "| {r} | {} |", cells.join(" | "));
    }
    let names: Vec<&str> = present.iter().map(|(g, _)| *g).collect();
    let _ =
        writeln!(m, "\n| denied drop rate | {} |\n|---|{}", names.join(" | "), "---:|".repeat(names.len()));
    for (label, a, bb) in [
        ("sgctl native / nftables", "sgctl-native", "nftables"),
        ("sgctl native / bare XDP_DROP", "sgctl-native", "xdp-drop"),
        ("sgctl native / xdp-filter", "sgctl-native", "xdp-filter"),
        ("sgctl generic / nftables", "sgctl-generic", "nftables"),
        ("sgctl at TCX / sgctl generic", "sgctl-tcx", "sgctl-generic"),
        ("sgctl at TCX / sgctl native", "sgctl-tcx", "sgctl-native"),
    ] {
        let cells: Vec<String> = names
            .iter()
            .map(|g| {
                fmt(ratio(traffic(s, g, a, "denied", "handled"), traffic(s, g, bb, "denied", "handled")), 2)
            })
            .collect();
        let _ = writeln!(m, "| {label} | {} |", cells.join(" | "));
    }
    // The receiver's own cost per packet is what it adds over the bare XDP_DROP receiver:
    // the generator's and the veth's share cancels.
    let _ = writeln!(
        m,
        "\nThe ratios above are diluted by the generator's share of every packet. A receiver's own \
         cost per denied packet is what it adds over the bare XDP_DROP receiver with the same \
         generator: 1/rate - 1/rate(xdp-drop), per CPU (the generators send from every CPU).\n"
    );
    let _ = writeln!(
        m,
        "| added ns/packet per CPU (denied) | {} |\n|---|{}",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    let cpus = super::traffic::cpus() as f64;
    for r in ["nftables", "xdp-filter", "sgctl-native", "sgctl-generic", "sgctl-tcx"] {
        let cells: Vec<String> = names
            .iter()
            .map(|g| {
                let cost = |r: &str| cpus * 1e9 / traffic(s, g, r, "denied", "handled");
                fmt(cost(r) - cost("xdp-drop"), 0)
            })
            .collect();
        let _ = writeln!(m, "| {r} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        m,
        "\n| the generator's bound: rate into bare XDP_DROP | {} |\n|---|{}",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    let cells: Vec<String> =
        names.iter().map(|g| fmt(traffic(s, g, "xdp-drop", "denied", "handled") / 1e6, 3)).collect();
    let _ = writeln!(m, "| Mpps | {} |", cells.join(" | "));
}

/// A lifecycle measurement (median over its reps).
fn life(s: &[Sample], measure: &str) -> f64 {
    med(s, "lifecycle", &[("measure", measure)])
}

/// The upgrade goals: nothing lost, nothing denied passes.
fn lifecycle_goals(s: &[Sample]) -> Vec<Goal> {
    let (lost, sent) = (life(s, "upgrade_flow_lost"), life(s, "upgrade_flow_sent"));
    let (passed, denied) = (life(s, "upgrade_denied_passed"), life(s, "upgrade_denied_sent"));
    vec![
        goal(
            "0 packets of an established flow lost during upgrades (same layout, under traffic)",
            lost,
            format!("{} of {} lost", fmt(lost, 0), fmt(sent, 0)),
            |v| v == 0.0,
        ),
        goal(
            "0 denied packets pass during upgrades (no unfiltered instant)",
            passed,
            format!("{} of {} passed", fmt(passed, 0), fmt(denied, 0)),
            |v| v == 0.0,
        ),
    ]
}

/// The lifecycle section: upgrade time and loss, adoption time by connection count.
fn lifecycle_section(m: &mut String, s: &[Sample]) {
    if matching(s, "lifecycle", &[]).next().is_none() {
        return;
    }
    let _ = writeln!(m, "\n## Upgrades and enabling on a running host\n");
    let spread_of = |measure: &str| {
        let v: Vec<f64> = matching(s, "lifecycle", &[("measure", measure)]).map(|x| x.value).collect();
        let (lo, hi) = spread(&v);
        format!("{} ({}-{}, {} runs)", fmt(median(&v), 1), fmt(lo, 1), fmt(hi, 1), v.len())
    };
    let _ = writeln!(
        m,
        "`sgctl upgrade --force` on an interface enforcing a rule set (same layout: programs loaded, \
         verified and swapped behind the links, every map reused), under traffic.\n"
    );
    let _ = writeln!(m, "| measure | value |\n|---|---:|");
    let _ = writeln!(m, "| upgrade, wall time of the command (ms) | {} |", spread_of("upgrade_wall_ms"));
    let _ = writeln!(m, "| upgrade, as the command reports it (ms) | {} |", spread_of("upgrade_ms"));
    let _ = writeln!(
        m,
        "| numbered UDP datagrams lost | {} of {} |",
        fmt(life(s, "upgrade_flow_lost"), 0),
        fmt(life(s, "upgrade_flow_sent"), 0)
    );
    let _ = writeln!(
        m,
        "| denied datagrams that passed | {} of {} |",
        fmt(life(s, "upgrade_denied_passed"), 0),
        fmt(life(s, "upgrade_denied_sent"), 0)
    );
    let _ = writeln!(
        m,
        "\n`sgctl attach` on a host with N open TCP connections: the time the adoption took (socket \
         table, decisions, entries; both passes) and how many were adopted.\n"
    );
    let _ = writeln!(m, "| connections | adoption (ms) | adopted |\n|---:|---:|---:|");
    let mut counts: Vec<String> =
        matching(s, "lifecycle", &[("measure", "adopted")]).map(|x| x.label("rep").to_string()).collect();
    counts.sort_by_key(|c| c.parse::<u64>().unwrap_or(0));
    counts.dedup();
    for c in counts {
        let get = |m: &str| med(s, "lifecycle", &[("measure", m), ("rep", c.as_str())]);
        let _ = writeln!(m, "| {c} | {} | {} |", fmt(get("adopt_ms"), 1), fmt(get("adopted"), 0));
    }
}

fn plot_pps(s: &[Sample], path: &Path) -> Result<()> {
    // The fastest generator that ran: the built-in one where the kernel allows live frames.
    let (generator, generator_name) = GENERATORS
        .iter()
        .copied()
        .find(|(g, _)| matching(s, "traffic", &[("generator", g)]).next().is_some())
        .unwrap_or(GENERATORS[0]);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let vals: Vec<(usize, f64, f64)> = RECEIVERS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let q = |t: &str| {
                med(
                    s,
                    "traffic",
                    &[("generator", generator), ("receiver", r), ("traffic", t), ("metric", "handled")],
                ) / 1e6
            };
            (i, q("denied"), q("allowed"))
        })
        .collect();
    let ymax = vals.iter().flat_map(|(_, d, a)| [*d, *a]).filter(|v| !v.is_nan()).fold(0.1, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Receiver rate, {generator_name} (Mpps handled)"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..RECEIVERS.len() as f64 - 0.5, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(RECEIVERS.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < RECEIVERS.len() {
                RECEIVERS[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("Mpps")
        .draw()?;
    let red = RGBColor(200, 60, 60);
    let blue = RGBColor(60, 90, 200);
    chart
        .draw_series(vals.iter().filter(|(_, d, _)| !d.is_nan()).map(|(i, d, _)| {
            let x = *i as f64;
            Rectangle::new([(x - 0.4, 0.0), (x - 0.02, *d)], red.filled())
        }))?
        .label("denied: dropped")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], red.filled()));
    chart
        .draw_series(vals.iter().filter(|(_, _, a)| !a.is_nan()).map(|(i, _, a)| {
            let x = *i as f64;
            Rectangle::new([(x + 0.02, 0.0), (x + 0.4, *a)], blue.filled())
        }))?
        .label("allowed: received")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], blue.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(subject: &str, rules: &str, fam: &str, rep: usize, value: f64) -> Sample {
        Sample {
            section: "testrun",
            labels: vec![
                ("subject", subject.into()),
                ("rules", rules.into()),
                ("case", "deny".into()),
                ("family", fam.into()),
                ("rep", rep.to_string()),
            ],
            value,
            unit: "ns/packet",
        }
    }

    fn traffic_sample(g: &str, r: &str, metric: &str, value: f64) -> Sample {
        Sample {
            section: "traffic",
            labels: vec![
                ("generator", g.into()),
                ("receiver", r.into()),
                ("traffic", "denied".into()),
                ("rep", "0".into()),
                ("metric", metric.into()),
            ],
            value,
            unit: "pps",
        }
    }

    #[test]
    fn drop_rate_goals_say_why_the_builtin_generator_was_not_measured() {
        let mut s = Vec::new();
        for (r, v) in [("sgctl-native", 3.0e6), ("nftables", 1.0e6), ("xdp-drop", 4.0e6)] {
            s.push(traffic_sample("afxdp", r, "handled", v));
        }
        let goals = traffic_goals(&s, Some("EPERM (Operation not permitted): refused"));
        let shown: Vec<(String, Option<bool>)> = goals.iter().map(|g| (g.measured.clone(), g.met)).collect();
        assert_eq!(
            shown,
            [
                ("not measured: EPERM (Operation not permitted): refused".to_string(), None),
                ("not measured: EPERM (Operation not permitted): refused".to_string(), None),
                ("3.00x".to_string(), Some(true)),
                ("75.0%".to_string(), Some(false)),
            ]
        );
        assert!(goals[0].text.contains("built-in") && goals[2].text.contains("AF_XDP"));
        // Where live frames work the built-in rows are measured like the others.
        for (r, v) in [("sgctl-native", 2.0e6), ("nftables", 1.0e6), ("xdp-drop", 2.0e6)] {
            s.push(traffic_sample("builtin", r, "handled", v));
        }
        let goals = traffic_goals(&s, None);
        assert_eq!(goals[0].met, Some(false), "{}", goals[0].measured);
        assert_eq!(goals[1].measured, "100.0%");
    }

    #[test]
    fn the_traffic_table_marks_unavailable_and_bounded_cells() {
        let s = vec![
            traffic_sample("afxdp", "none", "handled", 2.0e6),
            traffic_sample("afxdp", "none", "sent", 2.0e6),
            traffic_sample("afxdp", "nftables", "handled", 1.0e6),
            traffic_sample("afxdp", "nftables", "sent", 2.0e6),
        ];
        let mut m = String::new();
        traffic_section(&mut m, &s, Some("EPERM"));
        let none = m.lines().find(|l| l.starts_with("| none |")).expect("none row");
        assert!(
            none.contains(
                "not available on this kernel | not available on this kernel | >=2.000 (sent 2.000)"
            ),
            "{none}"
        );
        let nft = m.lines().find(|l| l.starts_with("| nftables |")).expect("nftables row");
        assert!(nft.contains("| 1.000 (sent 2.000)"), "{nft}");
        assert!(m.contains("not available on this kernel: EPERM."));
    }

    #[test]
    fn a_goal_on_rounds_holds_only_when_every_round_meets_it() {
        // Round 1 is slow for both sides alike: its ratio stays 1.1. Round 2's v6 ratio is 1.3.
        let mut s = Vec::new();
        for (rep, one, many) in [(0, 100.0, 110.0), (1, 200.0, 220.0), (2, 100.0, 105.0)] {
            s.push(tr("sgctl", "1", "v4", rep, one));
            s.push(tr("sgctl", "10000", "v4", rep, many));
            s.push(tr("sgctl", "1", "v6", rep, 100.0));
            s.push(tr("sgctl", "10000", "v6", rep, if rep == 2 { 130.0 } else { 100.0 }));
        }
        let r = worse_family(&s, ["sgctl", "10000", "deny"], ["sgctl", "1", "deny"]);
        let r: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        assert_eq!(r, ["1.10", "1.10", "1.30"]);
        let g =
            goal_rounds("g", &worse_family(&s, ["sgctl", "10000", "deny"], ["sgctl", "1", "deny"]), |r| {
                r <= 1.2
            });
        assert_eq!(g.met, Some(false), "{}", g.measured);
        assert_eq!(g.measured, "1.10x (1.10-1.30 over 3 rounds)");
        let g =
            goal_rounds("g", &worse_family(&s, ["sgctl", "10000", "deny"], ["sgctl", "1", "deny"]), |r| {
                r <= 1.4
            });
        assert_eq!(g.met, Some(true));
        assert_eq!(goal_rounds("g", &[], |_| true).met, None);
        assert_eq!(with_spread(&s, ["sgctl", "10000", "deny", "v6"]), "100.0 (100-130)");
    }
}
