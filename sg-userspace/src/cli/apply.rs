//! `sgctl apply FILE [--format toml|aws] [--dry-run] [--host NAME]`: validate, compile, diff
//! and hot-apply a rules file (generation flip; no reload, tracked traffic unaffected).

use std::path::PathBuf;

use clap::Args;

use super::common::{self, AwsInput, load_rules};
use crate::{
    apply::{ApplyOptions, apply},
    loader::ModeRequest,
    rules::Format,
};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Rules file (sgctl TOML, or AWS JSON with --format aws).
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Toml)]
    pub format: Format,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also end tracked flows the new rules no longer allow (AWS lets them live on).
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub aws: AwsInput,
    /// XDP mode for interfaces this apply attaches.
    #[arg(long, value_enum)]
    pub mode: Option<ModeRequest>,
    /// Apply the bindings of `[hosts.NAME]` (a fleet file) instead of `[interfaces]`.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let mut rs = load_rules(&args.file, args.format, &args.aws)?;
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
    let report = apply(&rs, ApplyOptions { dry_run: args.dry_run, mode: args.mode, revoke: args.revoke })?;
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
        println!("applied rule set #{} to {}", report.seq, report.interfaces.join(", "));
        for (iface, a) in report.adopted.iter().filter(|(_, a)| a.found > 0) {
            println!("{iface}: {}", common::adopted_line(a));
        }
        for d in &report.detached {
            println!("detached {d} (no longer in the rules file)");
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    } else {
        println!("dry run: nothing applied");
    }
    Ok(())
}
