//! `sgctl import aws FILE [--members FILE] [--bind IFACE=GROUPS]`: AWS JSON -> sgctl TOML on
//! stdout (validated first: a file that would not apply does not convert).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::rules::{self, Format, toml_out};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(value_enum)]
    pub from: ImportFormat,
    pub file: PathBuf,
    #[arg(long = "bind", value_name = "IFACE=GROUPS")]
    pub bind: Vec<String>,
    #[arg(long, value_name = "FILE")]
    pub members: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Aws,
}

pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let ctx = super::apply::aws_context(&args.bind, args.members.as_ref())?;
    let rs = rules::load(&args.file, Format::Aws, &ctx)?;
    print!("{}", toml_out::to_toml(&rs));
    Ok(())
}
