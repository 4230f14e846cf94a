//! `sgctl replay CAPTURE --rules FILE [--iface IF] [--iface-role ingress|egress]
//! [--local PREFIX]... [--json] [--fail-on-drop]`: runs a capture through the real datapath
//! with candidate rules (`crate::replay`) and prints the verdicts, the hits of each rule and
//! every flow that would be dropped.

use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;
use sg_common::Direction;

use super::common::{AwsInput, FormatArg, load_rules};
use crate::replay::{Options, replay};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture (pcap).
    pub capture: PathBuf,
    /// The candidate rules file.
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// Format of --rules: toml or aws.
    #[arg(long, value_enum, default_value_t = FormatArg::Toml)]
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Whose rules to use, when the file binds several interfaces.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Direction of the packets neither the capture nor --local places.
    #[arg(long, value_enum, default_value_t = Role::Ingress)]
    pub iface_role: Role,
    /// This host's addresses (repeatable): packets to them are ingress, from them egress.
    #[arg(long, value_name = "PREFIX")]
    pub local: Vec<IpNet>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 if any packet would be dropped (a gate for CI pipelines).
    #[arg(long)]
    pub fail_on_drop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Ingress,
    Egress,
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let rs = load_rules(&args.rules, args.format.into(), &args.aws)?;
    let r = replay(&Options {
        capture: &args.capture,
        rules: &rs,
        rules_name: &args.rules.display().to_string(),
        iface: args.iface.as_deref(),
        role: match args.iface_role {
            Role::Ingress => Direction::Ingress,
            Role::Egress => Direction::Egress,
        },
        local: &args.local,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}: {} packets through the rules of {} in {} ({} dropped, {} frames skipped)",
            r.capture, r.packets, r.iface, r.rules, r.dropped, r.skipped
        );
        println!("\nverdicts:");
        for v in &r.verdicts {
            println!("  {:<8} {:<22} {:<5} {:>10}", v.direction, v.reason, v.action, v.packets);
        }
        println!("\nrule hits:");
        for h in &r.rules_hits {
            println!(
                "  {:>10}  {} {} #{}: {}  ({})",
                h.hits, h.group, h.direction, h.index, h.rule, h.location
            );
        }
        if !r.acl_hits.is_empty() {
            println!("\nnetwork ACL hits (packets decided):");
            for h in &r.acl_hits {
                println!("  {:>10}  acl {}/{}: {}  ({})", h.hits, h.acl, h.direction, h.entry, h.location);
            }
        }
        println!("\ndropped flows:");
        if r.drops.is_empty() {
            println!("  none");
        }
        for d in &r.drops {
            println!(
                "  packet {:>6}  {:<7} {:<6} {} -> {}  {:<20} x{}",
                d.first_packet,
                d.direction,
                d.proto,
                std::net::SocketAddr::new(d.src, d.sport),
                std::net::SocketAddr::new(d.dst, d.dport),
                d.reason,
                d.packets
            );
        }
    }
    if args.fail_on_drop && r.dropped > 0 {
        anyhow::bail!("{} packets would be dropped", r.dropped);
    }
    Ok(())
}
