//! `sgctl learn OBSERVATIONS [RULES]`: rules proposed from the flows a host really had
//! (`daemon --learn FILE` records them; `rules::learn` proposes). Prints the changes against
//! the current rules, each with its evidence, checks the candidate (it validates as a rules
//! file; every observed flow of the window is allowed by it in a private instance of the real
//! datapath and by the reference model; `sgctl audit` reports its errors), and writes it with
//! --out. Nothing is applied.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::common::{AwsInput, FormatArg, load_rules};
use crate::{
    rules::{
        AwsContext, Dir, Format, RuleSet,
        audit::{self, Severity},
        aws_export,
        learn::{self, LearnOptions, Observations},
        model::evaluate,
        parse_str, toml_out,
    },
    state::applied,
};

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// The observations file a daemon writes with --learn.
    pub observations: PathBuf,
    /// The current rules (default: the rule set applied in this network namespace).
    pub rules: Option<PathBuf>,
    /// Format of RULES.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// The window: only observations seen within this long before now (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Prefixes per rule at most when peers are named by address (aggregated minimally).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_cidrs: usize,
    /// Also propose egress rules (by default each group keeps its egress).
    #[arg(long)]
    pub tighten_egress: bool,
    /// Write the candidate rules file here (checked first).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Format of the candidate written with --out.
    #[arg(long, value_enum, default_value = "toml")]
    pub out_format: OutFormat,
    /// Print the proposal as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// sgctl's TOML.
    Toml,
    /// `aws ec2 describe-security-groups` JSON.
    Aws,
}

pub fn run(args: &LearnArgs) -> anyhow::Result<()> {
    let current = match &args.rules {
        Some(file) => load_rules(file, args.format.into(), &args.aws)?,
        None => applied()?.ruleset,
    };
    let text = std::fs::read_to_string(&args.observations)
        .with_context(|| format!("reading {}", args.observations.display()))?;
    let obs = Observations::from_json(&text, usize::MAX)
        .map_err(|e| anyhow::anyhow!("{}: not an observations file: {e}", args.observations.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let opts = LearnOptions {
        since: now.saturating_sub(args.since.as_secs()),
        max_cidrs: args.max_cidrs,
        tighten_egress: args.tighten_egress,
    };
    let p = learn::propose(&current, &obs, &opts);

    // The candidate as a rules file, validated as any file is.
    let toml = toml_out::to_toml(&p.candidate);
    let checked = parse_str("candidate", &toml, Format::Toml, &AwsContext::default())
        .map_err(|e| anyhow::anyhow!("the candidate does not validate (a bug): {e}"))?;
    let (allowed, total) = replayed(&checked, &obs, &opts);
    let in_window = |k: &learn::ObsKey, e: &learn::Evidence| {
        e.last_seen >= opts.since && (k.dir == Dir::Ingress || opts.tighten_egress)
    };
    let dp = crate::learn::check(&checked, &obs, in_window)?;
    let findings = audit::audit(&checked);
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();

    if args.json {
        let v = serde_json::json!({
            "changes": p.changes,
            "observations_used": p.used,
            "overflow": p.overflow,
            "missed_events": obs.missed_events,
            "check": {
                "flows_allowed": allowed,
                "flows": total,
                "datapath_flows_allowed": dp.allowed,
                "datapath_flows": dp.flows,
                "datapath_not_run": dp.skipped,
                "datapath_refused": dp.refused.iter().map(|(k, r)| serde_json::json!({ "observation": k, "reason": r })).collect::<Vec<_>>(),
                "audit_errors": errors,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if p.changes.is_empty() {
            println!("no changes: the rules already are what was observed");
        }
        for c in &p.changes {
            println!("{} {} {} {}\n      {}", c.change, c.group, c.dir.as_str(), c.rule, c.evidence);
        }
        println!(
            "from {} observations (window {}){}",
            p.used,
            humantime::format_duration(args.since),
            if p.overflow > 0 {
                format!("; the table was full and refused {} new ones: traffic may be missing", p.overflow)
            } else {
                String::new()
            }
        );
        if obs.missed_events > 0 {
            println!(
                "the datapath suppressed {} flow events while learning (daemon --cpu-rate, or a full ring): flows may be missing",
                obs.missed_events
            );
        }
        println!(
            "check: {} of {} observed flows allowed by the candidate in the datapath (a private instance){}; \
             {allowed} of {total} by the reference model; audit: {errors} errors",
            dp.allowed,
            dp.flows,
            if dp.skipped > 0 {
                format!(" ({} of protocols no packet stands for not run)", dp.skipped)
            } else {
                String::new()
            }
        );
        for (k, reason) in &dp.refused {
            println!(
                "  refused by the datapath ({reason}): {} {} proto {} service {} peer {}",
                k.iface,
                k.dir.as_str(),
                k.proto,
                k.service,
                k.peer
            );
        }
        if errors > 0 {
            print!("{}", audit::render(&findings));
        }
    }
    if allowed != total || !dp.refused.is_empty() {
        bail!("the candidate would refuse observed flows (a bug): nothing written");
    }
    if let Some(out) = &args.out {
        let text = match args.out_format {
            OutFormat::Toml => toml,
            OutFormat::Aws => serde_json::to_string_pretty(&aws_export::export(&checked))?,
        };
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "candidate written to {}: nothing applied. Next: sgctl apply it with monitor = true on its interfaces, \
             watch `sgctl top` for would-be drops, then enforce",
            out.display()
        );
    }
    Ok(())
}

/// Observed flows in the window (of the directions proposed) that the candidate allows, and
/// how many there are, by the reference model.
fn replayed(rs: &RuleSet, obs: &Observations, opts: &LearnOptions) -> (u64, u64) {
    let (mut allowed, mut total) = (0, 0);
    for (k, e) in obs.entries.iter().filter(|(_, e)| e.last_seen >= opts.since) {
        if k.dir == Dir::Egress && !opts.tighten_egress {
            continue;
        }
        if !rs.interfaces.iter().any(|b| b.iface == k.iface && !b.groups.is_empty()) {
            continue;
        }
        let probe = k.probe(k.local_end());
        total += e.flows;
        if evaluate(rs, &k.iface, k.dir, &probe).rule.is_some() {
            allowed += e.flows;
        }
    }
    (allowed, total)
}
