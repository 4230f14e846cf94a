//! `sgctl export aws|aws-acls|nft [FILE]`: security groups as AWS describe-security-groups
//! JSON, network ACLs as describe-network-acls JSON, or both as an nftables ruleset with
//! conntrack. Without FILE, the applied rule set; with FILE, that
//! rules file (validated first: a file that would not apply does not convert).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::common::{AwsInput, FormatArg, load_rules};
use crate::{
    rules::{aws, aws_export, nft, toml_out},
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
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// With `aws`: also write what AWS JSON of groups cannot hold (group members and
    /// prefix-list entries) to this file, for `import aws --members` to read back.
    #[arg(long, value_name = "PATH")]
    pub write_members: Option<PathBuf>,
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
        Some(file) => load_rules(file, args.format.into(), &args.aws)?,
        None => applied()?.ruleset,
    };
    if args.write_members.is_some() && args.to != ExportFormat::Aws {
        anyhow::bail!("--write-members goes with `export aws` (the members of its groups)");
    }
    match args.to {
        ExportFormat::Aws => {
            let json = serde_json::to_string_pretty(&aws_export::export(&rs))?;
            if let Some(path) = &args.write_members {
                let text = toml_out::members_file(&rs, &|g| aws_export::export_id(&rs, g));
                std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("{}", aws_export::import_hint(&rs, path));
            }
            println!("{json}");
        }
        ExportFormat::AwsAcls => println!("{}", serde_json::to_string_pretty(&aws::nacl::export(&rs))?),
        ExportFormat::Nft => print!("{}", nft::export(&rs)),
    }
    Ok(())
}
