//! `sgctl export aws`: the applied security groups as `describe-security-groups` JSON.

use clap::{Args, ValueEnum};

use crate::{apply::applied, rules::aws};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(value_enum)]
    pub to: ExportFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Aws,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let state = applied()?;
    match args.to {
        ExportFormat::Aws => println!("{}", serde_json::to_string_pretty(&aws::export(&state.ruleset))?),
    }
    Ok(())
}
