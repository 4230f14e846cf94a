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
    let rs = rules::parse_str(&name, &new_text, Format::Toml, &AwsContext::default())
        .map_err(|e| located(&e, &text, &new_text, file.is_none(), &args.op))?;
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

/// The lines of `new` that differ from `old` (1-based, inclusive): where the edit wrote.
fn changed_lines(old: &str, new: &str) -> std::ops::RangeInclusive<usize> {
    let pre = old.bytes().zip(new.bytes()).take_while(|(a, b)| a == b).count();
    let post = old.bytes().rev().zip(new.bytes().rev()).take_while(|(a, b)| a == b).count();
    let end = new.len().saturating_sub(post).max(pre);
    // The edit's own text starts at its first character that is not a separator.
    let start = new[pre..end].find(|c: char| !c.is_whitespace() && c != ',').map_or(pre, |i| pre + i);
    let line = |off: usize| new[..off].matches('\n').count() + 1;
    line(start)..=line(end.max(start))
}

/// Errors of the edited rule set as the operator can place them: a problem of the new rule
/// is said of `rule add GROUP DIR` (its line exists in no file yet); a problem elsewhere of a
/// rules file keeps its file:line:col. The live rule set is no file the operator sees: every
/// problem is the edit's.
fn located(e: &rules::RuleErrors, old: &str, new: &str, live: bool, op: &RuleOp) -> anyhow::Error {
    let (verb, group, dir) = match op {
        RuleOp::Add(a) => ("add", &a.group, a.dir),
        RuleOp::Remove(r) => ("remove", &r.group, r.dir),
    };
    let dir: rules::Dir = dir.into();
    let lines = changed_lines(old, new);
    let said: Vec<String> =
        e.0.iter()
            .map(|d| {
                if live || lines.contains(&d.loc.line) {
                    format!("rule {verb} {group} {}: {}", dir.as_str(), d.msg)
                } else {
                    d.to_string()
                }
            })
            .collect();
    anyhow::anyhow!("{}", said.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::changed_lines;

    #[test]
    fn the_lines_an_edit_wrote() {
        let old = "a = [\n  1,\n]\nb = 2\n";
        assert_eq!(changed_lines(old, "a = [\n  1,\n  7,\n]\nb = 2\n"), 3..=3);
        assert_eq!(changed_lines("a = [ 1 ]\nb = 2\n", "a = [ 1, 7 ]\nb = 2\n"), 1..=1);
        assert_eq!(changed_lines("a = []\n", "a = [\n  { x = 1 },\n  { y = 2 },\n]\n"), 2..=4);
    }
}
