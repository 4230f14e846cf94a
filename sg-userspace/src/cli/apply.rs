//! `sgctl apply FILE [--format toml|aws] [--dry-run] [--host NAME]`: validate, compile, diff
//! and hot-apply a rules file (generation flip; no reload, tracked traffic unaffected).

use std::path::PathBuf;

use clap::Args;

use super::common::{self, AwsInput, FormatArg, load_rules};
use crate::apply::{ApplyOptions, apply};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Rules file (sgctl TOML, or AWS JSON with --format aws).
    pub file: PathBuf,
    /// Format of FILE: toml (sgctl rules) or aws (describe-security-groups JSON).
    #[arg(long, value_enum, default_value_t = FormatArg::Toml)]
    pub format: FormatArg,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also end tracked flows the new rules no longer allow (AWS lets them live on).
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub aws: AwsInput,
    #[command(flatten)]
    pub placement: common::PlacementArgs,
    /// Apply the bindings of `[hosts.NAME]` (a fleet file) instead of `[interfaces]`.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Apply a rule set that binds no interface, detaching every interface it enforced
    /// (refused without this: it would leave them unfiltered).
    #[arg(long)]
    pub allow_empty: bool,
    /// Roll back by itself after SECS seconds unless `sgctl confirm` comes first (interfaces
    /// the file dropped are detached on confirmation); the rollback does not need this process.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub confirm: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let placement = args.placement.placement()?;
    let mut rs = load_rules(&args.file, args.format.into(), &args.aws)?;
    if let Some(host) = &args.host {
        anyhow::ensure!(
            rs.hosts.iter().any(|h| &h.host == host),
            "{}: no [hosts.{host}] in the file (hosts: {})",
            args.file.display(),
            rs.hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>().join(", ")
        );
        rs = rs.for_host(host);
    } else if !rs.interfaces.is_empty() && !rs.hosts.is_empty() {
        eprintln!(
            "sgctl: warning: {}: [hosts.*] tables ignored (--host NAME applies one)",
            args.file.display()
        );
    }
    let path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let source = format!("file {}", path.display());
    let report = apply(
        &rs,
        ApplyOptions {
            dry_run: args.dry_run,
            placement,
            revoke: args.revoke,
            allow_empty: args.allow_empty,
            confirm: args.confirm,
            source: Some(&source),
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.diff.is_empty() {
        println!("no changes");
    }
    for l in &report.diff.lines {
        println!("{l}");
    }
    if report.applied {
        if report.interfaces.is_empty() {
            println!("applied rule set #{}: no interface is enforced any more", report.seq);
        } else if report.diff.is_empty() {
            // Applied anyway: it also brings back what was changed by hand (monitor mode,
            // postures) and upgrades an older datapath; the number says a flip happened.
            println!(
                "the same rules applied again as rule set #{} to {} (settings changed by hand since are reset to the file's)",
                report.seq,
                report.interfaces.join(", ")
            );
        } else {
            println!("applied rule set #{} to {}", report.seq, report.interfaces.join(", "));
        }
        for (iface, a) in report.adopted.iter().filter(|(_, a)| a.found > 0) {
            println!("{iface}: {}", common::adopted_line(a));
        }
        for d in &report.detached {
            println!("detached {d} (no longer in the rules file)");
        }
        if let Some(deadline) = report.confirm_deadline {
            println!(
                "rolls back to the previous rule set {} unless `sgctl confirm` comes first{}",
                crate::confirm::when(deadline),
                if report.diff.detach.is_empty() {
                    String::new()
                } else {
                    format!(" ({} detached on confirmation)", report.diff.detach.join(", "))
                }
            );
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    } else {
        println!("dry run: nothing applied");
    }
    Ok(())
}
