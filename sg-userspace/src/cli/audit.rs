//! `sgctl audit FILE | --live [--json] [--fail-on warn|error|never]`: best-practice checks
//! (see `rules::audit`). With `--live`, the applied rule set, plus rules with zero hits since
//! they were first applied. Exits non-zero when a finding reaches `--fail-on` (default
//! error), so it can gate a CI pipeline.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::common::{AwsInput, FormatArg, load_rules};
use crate::{
    hits::rule_stats,
    rules::audit::{self, Finding, Severity},
    state::applied,
};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Rules file to audit (or --live).
    #[arg(required_unless_present = "live", conflicts_with = "live")]
    pub file: Option<PathBuf>,
    /// Audit the rule set applied in this network namespace, with per-rule hits.
    #[arg(long)]
    pub live: bool,
    /// Format of FILE: toml or aws.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit non-zero when a finding is at least this severe.
    #[arg(long, value_enum, default_value = "error")]
    pub fail_on: FailOn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warn,
    Error,
    Never,
}

pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let mut findings: Vec<Finding> = Vec::new();
    if args.live {
        let state = applied()?;
        findings = audit::audit(&state.ruleset);
        for b in &state.ruleset.interfaces {
            let hits: Vec<u64> = rule_stats(Some(&b.iface))?.iter().map(|s| s.hits).collect();
            findings.extend(audit::zero_hits(&state.ruleset, &b.iface, &hits));
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    } else if let Some(file) = &args.file {
        findings = audit::audit(&load_rules(file, args.format.into(), &args.aws)?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else if findings.is_empty() {
        println!("no findings");
    } else {
        print!("{}", audit::render(&findings));
    }
    let threshold = match args.fail_on {
        FailOn::Warn => Some(Severity::Warn),
        FailOn::Error => Some(Severity::Error),
        FailOn::Never => None,
    };
    if let Some(t) = threshold {
        let n = findings.iter().filter(|f| f.severity >= t).count();
        anyhow::ensure!(n == 0, "audit: {n} finding(s) at or above {}", t.as_str());
    }
    Ok(())
}
