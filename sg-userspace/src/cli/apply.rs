//! `sgctl apply FILE [--format toml|aws] [--dry-run]`: validate, compile, diff and hot-apply a
//! rules file (generation flip; no reload, tracked traffic unaffected).

use std::path::PathBuf;

use clap::Args;

use crate::{
    apply::{ApplyOptions, apply},
    loader::ModeRequest,
    rules::{self, AwsContext, Format},
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
    #[arg(long)]
    pub json: bool,
}

/// What AWS JSON input lacks, given on the command line (apply, import, export, audit).
#[derive(Debug, Args)]
pub struct AwsInput {
    /// AWS JSON: bind groups to an interface, IFACE=GROUP[,GROUP...] (GroupId or GroupName).
    #[arg(long = "bind", value_name = "IFACE=GROUPS")]
    pub bind: Vec<String>,
    /// AWS JSON: TOML file with group members and prefix-list entries.
    #[arg(long, value_name = "FILE")]
    pub members: Option<PathBuf>,
}

impl AwsInput {
    /// Bindings and the members file's text.
    pub fn context(&self) -> anyhow::Result<AwsContext> {
        let members = match &self.members {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Some((p.display().to_string(), text))
            }
            None => None,
        };
        Ok(AwsContext { bindings: self.bind.clone(), members })
    }
}

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let ctx = args.aws.context()?;
    let rs = rules::load(&args.file, args.format, &ctx)?;
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
