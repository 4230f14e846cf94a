//! `sgctl import aws FILE [--members FILE] [--bind IFACE=GROUPS]`: AWS JSON -> sgctl TOML on
//! stdout (validated first: a file that would not apply does not convert).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::common::{AwsInput, load_rules};
use crate::rules::{Format, toml_out};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What the input is: aws (describe-security-groups JSON).
    #[arg(value_enum)]
    pub from: ImportFormat,
    /// The AWS JSON file.
    pub file: PathBuf,
    #[command(flatten)]
    pub aws: AwsInput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Aws,
}

pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let rs = load_rules(&args.file, Format::Aws, &args.aws)?;
    print!("{}", toml_out::to_toml(&rs));
    Ok(())
}
