//! `sgctl explain --iface IF --dir ingress --proto tcp --src A --dst B --dport N`: the verdict
//! of the reference model for one packet, and the rule that decides it.

use std::{net::IpAddr, path::PathBuf};

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use crate::{
    apply::applied,
    rules::{self, AwsContext, Dir, Format, RuleSet, model},
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    pub iface: String,
    #[arg(long, value_enum)]
    pub dir: DirArg,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long)]
    pub proto: String,
    #[arg(long)]
    pub src: IpAddr,
    #[arg(long)]
    pub dst: IpAddr,
    /// Destination port (tcp, udp).
    #[arg(long, default_value_t = 0)]
    pub dport: u16,
    #[arg(long, default_value_t = 0)]
    pub icmp_type: u8,
    #[arg(long, default_value_t = 0)]
    pub icmp_code: u8,
    /// Explain against this rules file instead of the applied rule set.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DirArg {
    Ingress,
    Egress,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub verdict: &'static str,
    pub reason: &'static str,
    pub group: Option<String>,
    pub rule: Option<String>,
    pub index: Option<usize>,
    pub location: Option<String>,
    pub bound_groups: Vec<String>,
}

fn proto_number(p: &str) -> anyhow::Result<u8> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "tcp" => rules::TCP,
        "udp" => rules::UDP,
        "icmp" => rules::ICMP,
        "icmpv6" => rules::ICMPV6,
        n => n.parse().map_err(|_| anyhow::anyhow!("unknown protocol '{p}'"))?,
    })
}

pub fn explain(rs: &RuleSet, args: &ExplainArgs) -> anyhow::Result<Explanation> {
    let Some(binding) = rs.binding(&args.iface) else {
        bail!("{} is not bound to any group in the rule set", args.iface);
    };
    if args.src.is_ipv4() != args.dst.is_ipv4() {
        bail!("--src and --dst must be of the same address family");
    }
    let dir = match args.dir {
        DirArg::Ingress => Dir::Ingress,
        DirArg::Egress => Dir::Egress,
    };
    let probe = model::Probe {
        src: args.src,
        dst: args.dst,
        proto: proto_number(&args.proto)?,
        dport: args.dport,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
        later_fragment: false,
    };
    let d = model::evaluate(rs, &args.iface, dir, &probe);
    let rule = d.rule.map(|i| rs.iface_rules(&args.iface)[i].clone());
    Ok(Explanation {
        verdict: d.reason.action().as_str(),
        reason: d.reason.name(),
        group: rule.as_ref().map(|r| r.group.clone()),
        rule: rule.as_ref().map(|r| r.rule.describe(r.dir)),
        index: rule.as_ref().map(|r| r.rule.index),
        location: rule.as_ref().map(|r| r.rule.loc.to_string()),
        bound_groups: binding.groups.clone(),
    })
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let rs = match &args.rules {
        Some(p) => rules::load(p, Format::Toml, &AwsContext::default())?,
        None => applied()?.ruleset,
    };
    let e = explain(&rs, args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(());
    }
    match (&e.group, &e.rule) {
        (Some(g), Some(r)) => println!(
            "{}: allowed by group {g}, {} rule #{}: {r} ({})",
            e.verdict,
            match args.dir {
                DirArg::Ingress => "ingress",
                DirArg::Egress => "egress",
            },
            e.index.unwrap_or(0),
            e.location.as_deref().unwrap_or("?")
        ),
        _ => println!(
            "{}: no rule of the groups bound to {} ({}) allows it ({})",
            e.verdict,
            args.iface,
            e.bound_groups.join(", "),
            e.reason
        ),
    }
    Ok(())
}
