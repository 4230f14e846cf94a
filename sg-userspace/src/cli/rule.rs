//! `sgctl rule add|remove GROUP ingress|egress ...`: quick edits of the live rule set (and of
//! the rules file with `--file`, keeping its formatting). The edited set is validated and
//! applied like `sgctl apply`; the file is written only after the apply succeeded.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Value};

use crate::{
    apply::{ApplyOptions, applied, apply},
    rules::{self, AwsContext, Format, toml_out},
};

#[derive(Debug, Args)]
pub struct RuleArgs {
    #[command(subcommand)]
    pub op: RuleOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuleDir {
    Ingress,
    Egress,
}

impl RuleDir {
    fn key(self) -> &'static str {
        match self {
            RuleDir::Ingress => "ingress",
            RuleDir::Egress => "egress",
        }
    }
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
    pub group: String,
    #[arg(value_enum)]
    pub dir: RuleDir,
    /// tcp, udp, icmp, icmpv6, all, or 0-255.
    #[arg(long)]
    pub proto: String,
    /// A port or a range (tcp, udp).
    #[arg(long)]
    pub ports: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub icmp_type: Option<i64>,
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
    #[arg(long)]
    pub description: Option<String>,
    /// Also edit this rules file (written after a successful apply).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub group: String,
    #[arg(value_enum)]
    pub dir: RuleDir,
    pub index: usize,
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// The group's rule list for `dir` (created; AWS's default allow-all egress is written out
/// first when the group relied on it, so adding an egress rule keeps it as AWS does).
fn rule_list<'a>(doc: &'a mut DocumentMut, group: &str, dir: RuleDir) -> anyhow::Result<&'a mut Item> {
    let g = doc
        .get_mut("groups")
        .and_then(Item::as_table_like_mut)
        .and_then(|t| t.get_mut(group))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| anyhow!("no group '{group}' in the rule set"))?;
    if g.get(dir.key()).is_none() {
        let mut arr = Array::new();
        if dir == RuleDir::Egress {
            let mut all = InlineTable::new();
            all.insert("proto", "all".into());
            let mut nets = Array::new();
            nets.push("0.0.0.0/0");
            nets.push("::/0");
            all.insert("to", Value::Array(nets));
            arr.push(Value::InlineTable(all));
        }
        g.insert(dir.key(), Item::Value(Value::Array(arr)));
    }
    g.get_mut(dir.key()).ok_or_else(|| anyhow!("cannot edit {group}.{}", dir.key()))
}

fn edit_add(doc: &mut DocumentMut, a: &AddArgs) -> anyhow::Result<()> {
    let mut t = InlineTable::new();
    t.insert("proto", a.proto.as_str().into());
    if let Some(p) = &a.ports {
        t.insert("ports", p.as_str().into());
    }
    if let Some(v) = a.icmp_type {
        t.insert("icmp_type", v.into());
    }
    if let Some(v) = a.icmp_code {
        t.insert("icmp_code", v.into());
    }
    let (cidr_key, group_key, list_key) = match a.dir {
        RuleDir::Ingress => ("from", "from_group", "from_prefix_list"),
        RuleDir::Egress => ("to", "to_group", "to_prefix_list"),
    };
    if !a.cidr.is_empty() {
        let mut arr = Array::new();
        for c in &a.cidr {
            arr.push(c.as_str());
        }
        t.insert(cidr_key, Value::Array(arr));
    }
    if let Some(g) = &a.peer_group {
        t.insert(group_key, g.as_str().into());
    }
    if let Some(l) = &a.prefix_list {
        t.insert(list_key, l.as_str().into());
    }
    if let Some(d) = &a.description {
        t.insert("description", d.as_str().into());
    }
    match rule_list(doc, &a.group, a.dir)? {
        Item::Value(Value::Array(arr)) => arr.push(Value::InlineTable(t)),
        Item::ArrayOfTables(aot) => aot.push(t.into_table()),
        _ => bail!("{}.{} is not a list of rules", a.group, a.dir.key()),
    }
    Ok(())
}

fn edit_remove(doc: &mut DocumentMut, r: &RemoveArgs) -> anyhow::Result<()> {
    let n = match rule_list(doc, &r.group, r.dir)? {
        Item::Value(Value::Array(arr)) => {
            let n = arr.len();
            if r.index < n {
                arr.remove(r.index);
            }
            n
        }
        Item::ArrayOfTables(aot) => {
            let n = aot.len();
            if r.index < n {
                aot.remove(r.index);
            }
            n
        }
        _ => bail!("{}.{} is not a list of rules", r.group, r.dir.key()),
    };
    if r.index >= n {
        bail!("group {} has {n} {} rules; no index {}", r.group, r.dir.key(), r.index);
    }
    Ok(())
}

pub fn run(args: &RuleArgs) -> anyhow::Result<()> {
    let file = match &args.op {
        RuleOp::Add(a) => a.file.clone(),
        RuleOp::Remove(r) => r.file.clone(),
    };
    let (name, text) = match &file {
        Some(p) => {
            (p.display().to_string(), std::fs::read_to_string(p).with_context(|| p.display().to_string())?)
        }
        None => ("<live rule set>".to_string(), toml_out::to_toml(&applied()?.ruleset)),
    };
    let mut doc: DocumentMut = text.parse().with_context(|| format!("{name}: not valid TOML"))?;
    match &args.op {
        RuleOp::Add(a) => edit_add(&mut doc, a)?,
        RuleOp::Remove(r) => edit_remove(&mut doc, r)?,
    }
    let new_text = doc.to_string();
    let rs = rules::parse_str(&name, &new_text, Format::Toml, &AwsContext::default())?;
    let report = apply(&rs, ApplyOptions::default())?;
    for l in &report.diff.lines {
        println!("{l}");
    }
    println!("applied rule set #{} to {}", report.seq, report.interfaces.join(", "));
    if let Some(p) = &file {
        std::fs::write(p, new_text)
            .with_context(|| format!("applied, but writing {} failed", p.display()))?;
        println!("updated {}", p.display());
    }
    Ok(())
}
