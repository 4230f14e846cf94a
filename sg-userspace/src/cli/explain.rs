//! `sgctl explain --iface IF --dir ingress --proto tcp --src A --dst B --dport N`: the verdict
//! of the reference model for one packet, and the rule that decides it (`crate::explain`).

use std::{net::IpAddr, path::PathBuf};

use clap::Args;

use super::common::{AwsInput, DirArg, FormatArg, load_rules, proto_number};
use crate::{
    explain::{Query, explain},
    state::applied,
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The interface the packet crosses.
    #[arg(long)]
    pub iface: String,
    /// ingress (arriving) or egress (leaving).
    #[arg(long, value_enum)]
    pub dir: DirArg,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long, value_parser = proto_number)]
    pub proto: u8,
    /// The packet's source address.
    #[arg(long)]
    pub src: IpAddr,
    /// The packet's destination address.
    #[arg(long)]
    pub dst: IpAddr,
    /// Destination port (tcp and udp: required).
    #[arg(long)]
    pub dport: Option<u16>,
    /// ICMP type (icmp, icmpv6).
    #[arg(long, default_value_t = 0)]
    pub icmp_type: u8,
    /// ICMP code (icmp, icmpv6).
    #[arg(long, default_value_t = 0)]
    pub icmp_code: u8,
    /// Explain against this rules file instead of the applied rule set.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Format of --rules.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let dport = match (args.proto, args.dport) {
        (6 | 17, None) => anyhow::bail!("--dport: tcp and udp packets need a destination port"),
        (_, d) => d.unwrap_or(0),
    };
    let rs = match &args.rules {
        Some(p) => load_rules(p, args.format.into(), &args.aws)?,
        None => applied()?.ruleset,
    };
    let e = explain(
        &rs,
        &Query {
            iface: &args.iface,
            dir: args.dir.into(),
            proto: args.proto,
            src: args.src,
            dst: args.dst,
            dport,
            icmp_type: args.icmp_type,
            icmp_code: args.icmp_code,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
        return Ok(());
    }
    if args.rules.is_none() && matches!(crate::loader::open_attached(&args.iface), Ok(None)) {
        println!(
            "note: {} is not attached (detached by hand?): nothing filters it now; this is what the saved rule set would do",
            args.iface
        );
    }
    let groups = match (&e.group, &e.rule) {
        (Some(g), Some(r)) => format!(
            "allowed by group {g}, {} rule #{}: {r} ({})",
            args.dir.as_str(),
            e.index.unwrap_or(0),
            e.location.as_deref().unwrap_or("?")
        ),
        _ => {
            format!("no rule of the groups bound to {} ({}) allows it", args.iface, e.bound_groups.join(", "))
        }
    };
    let Some(acl) = &e.acl else {
        match e.group {
            Some(_) => println!("{}: {groups}", e.verdict),
            None => println!("{}: {groups} ({})", e.verdict, e.reason),
        }
        return Ok(());
    };
    let acl_says = match (&acl.entry, &acl.location) {
        (Some(entry), Some(loc)) => {
            format!("network ACL {}, {} entry {entry} ({loc})", acl.name, args.dir.as_str())
        }
        _ => format!(
            "network ACL {}: no {} entry matches (the implicit final deny)",
            acl.name,
            args.dir.as_str()
        ),
    };
    match (e.verdict, acl.action) {
        ("pass", _) => println!("pass: {groups}; {acl_says}"),
        (_, "deny") => println!("drop: {acl_says} ({}); the groups: {groups}", e.reason),
        _ => println!("drop: {groups} ({}); {acl_says}", e.reason),
    }
    Ok(())
}
