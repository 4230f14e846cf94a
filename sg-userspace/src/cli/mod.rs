//! Command-line interface: one module per subcommand. `main.rs` parses [`Cli`] and calls
//! [`run`]; each subcommand prints its own output.

pub mod attach;
pub mod detach;
pub mod status;

use clap::{Parser, Subcommand};

/// sgctl: AWS-style security groups for any Linux host, enforced in the kernel (XDP + TC).
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
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Attach(args) => attach::run(&args),
        Command::Detach(args) => detach::run(&args),
        Command::Status(args) => status::run(&args),
    }
}
