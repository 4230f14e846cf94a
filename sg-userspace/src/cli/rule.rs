//! `sgctl rule add|remove GROUP ingress|egress ...`: quick edits of the live rule set (and of
//! the rules file with `--file`, keeping its formatting; `rules::edit`). The edited set is
//! validated and applied like `sgctl apply`; the file is written only after the apply
//! succeeded.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::common::DirArg;
use crate::{
    apply::{ApplyOptions, apply},
    rules::{
        self, AwsContext, Format,
        edit::{Edit, NewRule, edit},
        toml_out,
    },
    state::applied,
};

#[derive(Debug, Args)]
pub struct RuleArgs {
    #[command(subcommand)]
    pub op: RuleOp,
}

#[derive(Debug, Subcommand)]
pub enum RuleOp {
    /// Append a rule to a group.
    Add(AddArgs),
    /// Remove the rule at INDEX (as `sgctl stats` shows it) from a group.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The group the rule belongs to.
    pub group: String,
    /// ingress or egress.
    #[arg(value_enum)]
    pub dir: DirArg,
    /// tcp, udp, icmp, icmpv6, all, or 0-255.
    #[arg(long)]
    pub proto: String,
    /// A port or a range (tcp, udp).
    #[arg(long)]
    pub ports: Option<String>,
    /// ICMP type (icmp, icmpv6; -1 or omitted: any).
    #[arg(long, allow_hyphen_values = true)]
    pub icmp_type: Option<i64>,
    /// ICMP code (needs --icmp-type; -1 or omitted: any).
    #[arg(long, allow_hyphen_values = true)]
    pub icmp_code: Option<i64>,
    /// Peer CIDR (repeatable).
    #[arg(long)]
    pub cidr: Vec<String>,
    /// Peer group (its members).
    #[arg(long)]
    pub peer_group: Option<String>,
    /// Peer prefix list.
    #[arg(long)]
    pub prefix_list: Option<String>,
    /// Description of the rule (up to 255 characters).
    #[arg(long)]
    pub description: Option<String>,
    /// Also edit this rules file (written after a successful apply).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The group the rule belongs to.
    pub group: String,
    /// ingress or egress.
    #[arg(value_enum)]
    pub dir: DirArg,
    /// The rule's number in its group and direction (as stats, top, conntrack and explain show it).
    pub index: usize,
    /// Also edit this rules file (the live rule set is edited either way).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub fn run(args: &RuleArgs) -> anyhow::Result<()> {
    let (group, dir, change, file) = match &args.op {
        RuleOp::Add(a) => (
            &a.group,
            a.dir,
            Edit::Add(NewRule {
                proto: a.proto.clone(),
                ports: a.ports.clone(),
                icmp_type: a.icmp_type,
                icmp_code: a.icmp_code,
                cidr: a.cidr.clone(),
                peer_group: a.peer_group.clone(),
                prefix_list: a.prefix_list.clone(),
                description: a.description.clone(),
            }),
            &a.file,
        ),
        RuleOp::Remove(r) => (&r.group, r.dir, Edit::Remove(r.index), &r.file),
    };
    let (name, text) = match file {
        Some(p) => {
            (p.display().to_string(), std::fs::read_to_string(p).with_context(|| p.display().to_string())?)
        }
        None => ("<live rule set>".to_string(), toml_out::to_toml(&applied()?.ruleset)),
    };
    let new_text = edit(&name, &text, group, dir.into(), &change)?;
    let rs = rules::parse_str(&name, &new_text, Format::Toml, &AwsContext::default())?;
    let report =
        apply(&rs, ApplyOptions { source: Some("sgctl rule (live edit)"), ..ApplyOptions::default() })?;
    for l in &report.diff.lines {
        println!("{l}");
    }
    println!("applied rule set #{} to {}", report.seq, report.interfaces.join(", "));
    if let Some(p) = file {
        std::fs::write(p, new_text)
            .with_context(|| format!("applied, but writing {} failed", p.display()))?;
        println!("updated {}", p.display());
    }
    Ok(())
}
