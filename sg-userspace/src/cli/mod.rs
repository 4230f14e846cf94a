//! Command-line interface: one module per subcommand, each parsing its arguments, calling the
//! library and printing the result (the domain logic lives in the library). What several
//! subcommands share is in [`common`]; subcommands do not import each other. `main.rs` parses
//! [`Cli`] and calls [`run`].

pub mod apply;
pub mod attach;
pub mod audit;
pub mod common;
pub mod completions;
pub mod confirm;
pub mod conntrack;
pub mod daemon;
pub mod detach;
pub mod explain;
pub mod export;
pub mod fleet;
pub mod flows;
pub mod import;
pub mod learn;
pub mod replay;
pub mod rule;
pub mod stats;
pub mod status;
pub mod top;
pub mod upgrade;

use clap::{Parser, Subcommand};

/// AWS-style security groups for any Linux host, enforced in the kernel (XDP + TC).
#[derive(Debug, Parser)]
#[command(name = "sgctl", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach sgctl's programs to an interface (idempotent; re-running updates postures).
    Attach(attach::AttachArgs),
    /// Detach sgctl from an interface: remove its links, programs and maps.
    Detach(detach::DetachArgs),
    /// Show attached interfaces, XDP mode, TC attach kind, program ids and counters.
    Status(status::StatusArgs),
    /// Validate, diff and hot-apply a rules file (TOML or AWS JSON) to its interfaces.
    Apply(apply::ApplyArgs),
    /// Keep the rule set an `apply --confirm SECS` enforces (without it, it rolls back by itself).
    Confirm(confirm::ConfirmArgs),
    /// Add or remove one rule of the live rule set (and of a rules file with --file).
    Rule(rule::RuleArgs),
    /// Tracked flows: list, flush, gc.
    Conntrack(conntrack::ConntrackArgs),
    /// Per-rule hit counters of the applied rule set.
    Stats(stats::StatsArgs),
    /// Which rule (if any) allows a packet, and which network ACL entry decides, by the reference model.
    Explain(explain::ExplainArgs),
    /// The fleet's policy in etcd: `fleet put FILE` writes it, `fleet get` reads it.
    Fleet(fleet::FleetArgs),
    /// Convert AWS describe-security-groups JSON to sgctl TOML (printed).
    Import(import::ImportArgs),
    /// Live packets/s and bits/s per interface and verdict reason, and the busiest rules.
    Top(top::TopArgs),
    /// Best-practice checks of a rules file or of the applied rules (exit non-zero at --fail-on).
    Audit(audit::AuditArgs),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(completions::CompletionsArgs),
    /// The man page, sgctl(8), in roff on stdout.
    Man,
    /// Keep enforcement equal to a rules file: watch it, apply each valid version, serve
    /// metrics, write flow logs, collect expired flows.
    Daemon(Box<daemon::DaemonArgs>),
    /// The daemon's flow log: accepted flows, rejected packets, flow ends.
    Flows(flows::FlowsArgs),
    /// Run a capture through the real datapath with candidate rules (private instance):
    /// per-rule hits and every flow that would be dropped.
    Replay(replay::ReplayArgs),
    /// Propose least-privilege rules from the flows a daemon observed (--learn): the changes with their evidence, a checked candidate file; nothing is applied
    Learn(learn::LearnArgs),
    /// Print security groups (applied, or of a file) as AWS JSON or an nftables ruleset.
    Export(export::ExportArgs),
    /// Replace the datapath of attached interfaces with this build's, without an unfiltered
    /// instant or a lost flow (maps reused, or converted when their layout changed).
    Upgrade(upgrade::UpgradeArgs),
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Attach(args) => attach::run(&args),
        Command::Detach(args) => detach::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Confirm(args) => confirm::run(&args),
        Command::Rule(args) => rule::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Conntrack(args) => conntrack::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Fleet(args) => fleet::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Top(args) => top::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Man => completions::man(),
        Command::Daemon(args) => daemon::run(&args),
        Command::Flows(args) => flows::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Learn(args) => learn::run(&args),
        Command::Upgrade(args) => upgrade::run(&args),
    }
}
