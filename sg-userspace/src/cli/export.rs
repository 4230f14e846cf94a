//! `sgctl export aws|aws-acls|nft [FILE]`: security groups as AWS describe-security-groups
//! JSON, network ACLs as describe-network-acls JSON, or both as an nftables ruleset with
//! conntrack. Without FILE, the applied rule set; with FILE, that
//! rules file (validated first: a file that would not apply does not convert).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::common::{AwsInput, load_rules};
use crate::{
    rules::{Format, aws, nft},
    state::applied,
};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to print: aws (security groups as JSON), aws-acls (network ACLs) or nft (an nftables ruleset).
    #[arg(value_enum)]
    pub to: ExportFormat,
    /// Rules file to convert (default: the rule set applied in this network namespace).
    pub file: Option<PathBuf>,
    /// Format of FILE.
    #[arg(long, value_enum, default_value = "toml")]
    pub format: Format,
    #[command(flatten)]
    pub aws: AwsInput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `aws ec2 describe-security-groups` JSON.
    Aws,
    /// `aws ec2 describe-network-acls` JSON (the network ACLs; read back with --network-acls).
    AwsAcls,
    /// An nftables ruleset (`nft -f`) with conntrack enforcing the same groups.
    Nft,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let rs = match &args.file {
        Some(file) => load_rules(file, args.format, &args.aws)?,
        None => applied()?.ruleset,
    };
    match args.to {
        ExportFormat::Aws => println!("{}", serde_json::to_string_pretty(&aws::export(&rs))?),
        ExportFormat::AwsAcls => println!("{}", serde_json::to_string_pretty(&aws::nacl::export(&rs))?),
        ExportFormat::Nft => print!("{}", nft::export(&rs)),
    }
    Ok(())
}
