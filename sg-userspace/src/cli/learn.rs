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
    fleet::{PolicyKeys, Store, schema as fleet_schema},
    rules::{
        AwsContext, Format, RuleSet,
        audit::{self, Severity},
        aws_export,
        learn::{self, LearnOptions, Observations},
        model::evaluate,
        parse_str, toml_out,
    },
    state::applied,
};

/// What a proposal covers and how peers are named (`sgctl learn`, `sgctl fleet learn`).
#[derive(Debug, Args)]
pub struct ProposalArgs {
    /// The window: only observations seen within this long before now (e.g. 7d, 12h).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Prefixes per rule at most when peers are named by address (aggregated minimally).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_cidrs: usize,
    /// Also propose egress rules (by default each group keeps its egress).
    #[arg(long)]
    pub tighten_egress: bool,
}

impl ProposalArgs {
    fn options(&self) -> LearnOptions {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        LearnOptions {
            since: now.saturating_sub(self.since.as_secs()),
            max_cidrs: self.max_cidrs,
            tighten_egress: self.tighten_egress,
        }
    }
}

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
    #[command(flatten)]
    pub proposal: ProposalArgs,
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
    let opts = args.proposal.options();
    let p = learn::propose(&current, &obs, &opts);

    // The candidate as a rules file, validated as any file is.
    let toml = toml_out::to_toml(&p.candidate);
    let checked = parse_str("candidate", &toml, Format::Toml, &AwsContext::default())
        .map_err(|e| anyhow::anyhow!("the candidate does not validate (a bug): {e}"))?;
    check_and_report(
        &p,
        &checked,
        &checked,
        &obs,
        &opts,
        args.proposal.since,
        args.json,
        serde_json::Map::new(),
    )?;
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

/// `sgctl fleet learn`: rules for the fleet's groups from what every host observed.
#[derive(Debug, Args)]
pub struct FleetLearnArgs {
    #[command(flatten)]
    pub proposal: ProposalArgs,
    /// Write the candidate fleet rules file here (checked first): review it with
    /// `sgctl fleet put --dry-run`, then put it.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Print the proposal as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub etcd: super::fleet::EtcdArgs,
}

pub fn run_fleet(args: &FleetLearnArgs) -> anyhow::Result<()> {
    let schema = args.etcd.schema()?;
    let ep = args.etcd.endpoints()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let (revision, all) = rt.block_on(async {
        let mut store = Store::connect(&ep, schema.clone()).await?;
        store.read_all().await
    })?;
    // The groups' members as the hosts registered them (what `from_group` matches), and what
    // each host published.
    let (keys, mut warnings) = fleet_schema::with_members(&all);
    let fleet = fleet_schema::ruleset(&schema, revision, &keys)?;
    let (hosts, bad) = fleet_schema::traffic(&all);
    warnings.extend(bad);
    if hosts.is_empty() {
        bail!(
            "no host has published what it observed ({}traffic/<host>): run the fleet's daemons with --learn FILE",
            args.etcd.prefix
        );
    }
    let opts = args.proposal.options();
    let (merged, foreign) = learn::merge_fleet(&fleet, &hosts);
    let p = learn::propose_fleet(&fleet, &merged, &opts);
    if foreign > 0 {
        warnings.push(format!(
            "{foreign} observations were about interfaces the policy does not bind on the host that published them: left out"
        ));
    }
    // The candidate file: the stored policy with each proposed group's rules in place (its
    // members stay as the policy has them: registrations are not written into it).
    let policy: PolicyKeys =
        all.iter().filter(|(k, _)| fleet_schema::is_policy(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let stored = fleet_schema::ruleset(&schema, revision, &policy)?;
    let text = with_rules_of(&fleet_schema::document(&policy)?, &stored, &p)?;
    let checked = parse_str("candidate", &text, Format::Toml, &AwsContext::default())
        .map_err(|e| anyhow::anyhow!("the candidate does not validate (a bug): {e}"))?;
    let mut extra = serde_json::Map::new();
    extra.insert("revision".into(), revision.into());
    extra.insert("hosts".into(), hosts.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>().into());
    extra.insert("warnings".into(), warnings.clone().into());
    if !args.json {
        let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
        println!("fleet {} at revision {revision}: observations of {}", args.etcd.prefix, names.join(", "));
        for w in &warnings {
            println!("warning: {w}");
        }
    }
    let flat = learn::flatten_fleet(&p.candidate);
    check_and_report(&p, &flat, &checked, &merged, &opts, args.proposal.since, args.json, extra)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "candidate fleet file written to {}: nothing applied. Next: sgctl fleet put {} --dry-run, then put it \
             (monitor = true on the hosts' interfaces first, to count would-be drops)",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

/// The stored policy document `doc` with the rules `p` proposes for each group it changes
/// (`stored` is the policy it was read as, for the groups' rules as the candidate writes them).
fn with_rules_of(doc: &str, stored: &RuleSet, p: &learn::Proposal) -> anyhow::Result<String> {
    let mut table: toml::Table = doc.parse().context("the stored policy as TOML")?;
    // The candidate's groups as TOML, with the stored groups' members (those of the
    // candidate are the registered ones).
    let mut proposed = p.candidate.clone();
    for g in &mut proposed.groups {
        if let Some(s) = stored.groups.iter().find(|s| s.name == g.name) {
            g.members.clone_from(&s.members);
            g.member_groups.clone_from(&s.member_groups);
        }
    }
    let rendered: toml::Table = toml_out::to_toml(&proposed).parse().context("the candidate as TOML")?;
    let changed: std::collections::BTreeSet<&str> = p.changes.iter().map(|c| c.group.as_str()).collect();
    let groups =
        table.get_mut("groups").and_then(toml::Value::as_table_mut).context("the policy has no groups")?;
    for name in changed {
        let (Some(old), Some(new)) = (
            groups.get_mut(name).and_then(toml::Value::as_table_mut),
            rendered.get("groups").and_then(|g| g.get(name)).and_then(toml::Value::as_table),
        ) else {
            continue;
        };
        for dir in ["ingress", "egress"] {
            match new.get(dir) {
                Some(v) => old.insert(dir.to_string(), v.clone()),
                None => old.remove(dir),
            };
        }
    }
    Ok(toml::to_string_pretty(&table)?)
}

/// Checks the candidate and prints the proposal with the checks (text, or one JSON object
/// with `extra`'s fields too): every observed flow of the window, replayed through `flat` (the
/// candidate with its interfaces, as the hosts enforce it) by the reference model and in a
/// private instance of the datapath, must be allowed; `audited` (the candidate file) is
/// audited. Fails when a flow would be refused: then nothing is written.
#[allow(clippy::too_many_arguments, reason = "the two callers' views of one check")]
fn check_and_report(
    p: &learn::Proposal,
    flat: &RuleSet,
    audited: &RuleSet,
    obs: &Observations,
    opts: &LearnOptions,
    since: Duration,
    json: bool,
    extra: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let (allowed, total) = replayed(flat, obs, opts);
    let dp = crate::learn::check(flat, obs, |k, e| opts.covers(flat, k, e))?;
    let findings = audit::audit(audited);
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();

    if json {
        let mut v = serde_json::json!({
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
        if let Some(o) = v.as_object_mut() {
            o.extend(extra);
        }
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
            humantime::format_duration(since),
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
    Ok(())
}

/// Observed flows the proposal covers (`LearnOptions::covers`) that the candidate allows, and
/// how many there are, by the reference model.
fn replayed(rs: &RuleSet, obs: &Observations, opts: &LearnOptions) -> (u64, u64) {
    let (mut allowed, mut total) = (0, 0);
    for (k, e) in obs.entries.iter().filter(|(k, e)| opts.covers(rs, k, e)) {
        let probe = k.probe(k.local_end());
        total += e.flows;
        if evaluate(rs, &k.iface, k.dir, &probe).rule.is_some() {
            allowed += e.flows;
        }
    }
    (allowed, total)
}
