//! What several subcommands share: the AWS input flags, and arguments parsed the same way
//! everywhere (protocols, directions). Subcommands import this module, never each other.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::rules::{self, AwsContext, Dir, Proto};

/// What AWS JSON input lacks, given on the command line (apply, import, export, audit,
/// replay, daemon).
#[derive(Debug, Args)]
pub struct AwsInput {
    /// AWS JSON: bind groups to an interface, IFACE=GROUP[,GROUP...] (GroupId or GroupName).
    #[arg(long = "bind", value_name = "IFACE=GROUPS")]
    pub bind: Vec<String>,
    /// AWS JSON: TOML file with group members and prefix-list entries.
    #[arg(long, value_name = "FILE")]
    pub members: Option<PathBuf>,
}

impl AwsInput {
    /// Bindings and the members file's text.
    pub fn context(&self) -> anyhow::Result<AwsContext> {
        let members = match &self.members {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Some((p.display().to_string(), text))
            }
            None => None,
        };
        Ok(AwsContext { bindings: self.bind.clone(), members })
    }
}

/// A protocol argument of one packet or flow: tcp, udp, icmp, icmpv6 or a number 0-255
/// (`all` means no single protocol).
pub fn proto_number(p: &str) -> Result<u8, String> {
    match Proto::from_name(p) {
        Some(Proto::Num(n)) => Ok(n),
        Some(Proto::All) => Err(format!("'{p}' is not one protocol (tcp, udp, icmp, icmpv6 or 0-255)")),
        None => Err(format!("unknown protocol '{p}' (tcp, udp, icmp, icmpv6 or 0-255)")),
    }
}

/// A direction argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DirArg {
    Ingress,
    Egress,
}

impl From<DirArg> for Dir {
    fn from(d: DirArg) -> Self {
        match d {
            DirArg::Ingress => Dir::Ingress,
            DirArg::Egress => Dir::Egress,
        }
    }
}

impl DirArg {
    pub fn as_str(self) -> &'static str {
        Dir::from(self).as_str()
    }
}

/// The rules of `file` in `format`, with AWS input from the flags.
pub fn load_rules(
    file: &std::path::Path,
    format: rules::Format,
    aws: &AwsInput,
) -> anyhow::Result<rules::RuleSet> {
    Ok(rules::load(file, format, &aws.context()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_arguments() {
        assert_eq!(proto_number("TCP"), Ok(6));
        assert_eq!(proto_number("icmpv6"), Ok(58));
        assert_eq!(proto_number("132"), Ok(132));
        assert!(proto_number("all").is_err());
        assert!(proto_number("256").is_err());
        assert!(proto_number("sctp").is_err());
    }
}
