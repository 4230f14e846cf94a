//! What several subcommands share: the AWS input flags, and arguments parsed the same way
//! everywhere (protocols, directions). Subcommands import this module, never each other.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::rules::{self, AwsContext, Dir, Proto};

/// `--format` of a rules file (the CLI's spelling of [`rules::Format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// sgctl's TOML.
    Toml,
    /// `aws ec2 describe-security-groups` (or `describe-security-group-rules`) JSON.
    Aws,
}

impl From<FormatArg> for rules::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Toml => rules::Format::Toml,
            FormatArg::Aws => rules::Format::Aws,
        }
    }
}

/// What AWS JSON input lacks, given on the command line (apply, import, export, audit,
/// replay, daemon).
#[derive(Debug, Args)]
pub struct AwsInput {
    /// AWS JSON: bind groups to an interface, IFACE=GROUP[,GROUP...] (GroupId or GroupName;
    /// the NetworkAclId of a --network-acls input binds that network ACL).
    #[arg(long = "bind", value_name = "IFACE=GROUPS")]
    pub bind: Vec<rules::AwsBinding>,
    /// AWS JSON: TOML file with group members and prefix-list entries AWS does not list
    /// (`[groups."sg-..."] members = [...]`, `[prefix_lists."pl-..."] entries = [...]`).
    #[arg(long, value_name = "FILE")]
    pub members: Option<PathBuf>,
    /// AWS JSON: `aws ec2 describe-network-interfaces` output; each interface's private
    /// addresses and delegated prefixes are members of its groups (repeat for more files).
    #[arg(long = "network-interfaces", value_name = "FILE")]
    pub network_interfaces: Vec<PathBuf>,
    /// AWS JSON: prefix-list entries, `describe-prefix-lists` output as FILE or
    /// `get-managed-prefix-list-entries` output as PL-ID=FILE (repeat for more).
    #[arg(long = "prefix-lists", value_name = "[PL-ID=]FILE")]
    pub prefix_lists: Vec<String>,
    /// AWS JSON: `aws ec2 describe-network-acls` output; bind an ACL with --bind
    /// IFACE=...,acl-ID (repeat for more files).
    #[arg(long = "network-acls", value_name = "FILE")]
    pub network_acls: Vec<PathBuf>,
}

impl AwsInput {
    /// Bindings and the texts of the input files.
    pub fn context(&self) -> anyhow::Result<AwsContext> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map(|text| (p.display().to_string(), text))
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        let members = self.members.as_deref().map(read).transpose()?;
        let network_interfaces = self.network_interfaces.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
        let network_acls = self.network_acls.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
        let mut prefix_lists = Vec::new();
        for arg in &self.prefix_lists {
            let (id, path) = match arg.split_once('=') {
                Some((id, path)) if id.starts_with("pl-") => (Some(id.to_string()), path),
                _ => (None, arg.as_str()),
            };
            let (file, text) = read(std::path::Path::new(path))?;
            prefix_lists.push(rules::aws::PrefixListInput { id, file, text });
        }
        Ok(AwsContext {
            bindings: self.bind.clone(),
            members,
            network_interfaces,
            prefix_lists,
            network_acls,
        })
    }
}

/// TLS to the fleet's etcd (fleet subcommands and the daemon's fleet mode).
#[derive(Debug, Args)]
pub struct EtcdTlsArgs {
    /// PEM file of the CA that signed the etcd members' certificates (turns TLS on; use
    /// https:// URLs).
    #[arg(long = "etcd-cacert", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for members started with --client-cert-auth.
    #[arg(long = "etcd-cert", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM key of --etcd-cert.
    #[arg(long = "etcd-key", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS settings, files read.
    pub fn tls(&self) -> anyhow::Result<Option<crate::fleet::Tls>> {
        let read =
            |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        let Some(ca) = &self.cacert else {
            anyhow::ensure!(self.cert.is_none(), "--etcd-cert needs --etcd-cacert");
            return Ok(None);
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        Ok(Some(crate::fleet::Tls { ca: read(ca)?, identity }))
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
    if format == rules::Format::Toml {
        // AWS-only inputs with a TOML file would be ignored: say so instead.
        anyhow::ensure!(
            aws.bind.is_empty(),
            "{}: --bind applies to AWS JSON (--format aws); a TOML file binds interfaces with [interfaces.NAME]",
            file.display()
        );
        if let Ok(text) = std::fs::read_to_string(file)
            && matches!(text.trim_start().chars().next(), Some('{' | '['))
            && text.trim_start().starts_with('{')
        {
            anyhow::bail!(
                "{}:1:1: this looks like JSON, not sgctl TOML: AWS JSON needs --format aws (and --bind IFACE=GROUPS)",
                file.display()
            );
        }
    }
    let loaded = rules::load_with_warnings(file, format, &aws.context()?)?;
    for w in &loaded.warnings {
        eprintln!("sgctl: warning: {w}");
    }
    Ok(loaded.rules)
}

/// One line on the connections an attach adopted (`adopt`).
pub fn adopted_line(a: &crate::adopt::AdoptReport) -> String {
    format!(
        "existing connections: {} adopted (tracked as if sgctl had been there from their start), {} not (the \
         policy would not have allowed them in their true direction: their packets are dropped), {} already tracked",
        a.adopted, a.refused, a.tracked
    )
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

/// `--mode`, `--ingress-hook`, `--ingress-order` of `sgctl apply` and `sgctl daemon`: where the
/// programs of interfaces they attach go (an attached interface keeps its own).
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// XDP mode for interfaces this command attaches (default: auto).
    #[arg(long, value_enum)]
    pub mode: Option<crate::loader::ModeRequest>,
    /// Where interfaces this command attaches decide ingress: `xdp` (default) or `tcx`, beside
    /// another program that owns the XDP hook (xdp-filter, ...). See `sgctl attach --help`.
    #[arg(long, value_enum)]
    pub ingress_hook: Option<crate::loader::IngressHook>,
    /// With `--ingress-hook tcx`: sgctl's place in the TCX ingress chain (default first).
    #[arg(long, value_enum, requires = "ingress_hook")]
    pub ingress_order: Option<crate::loader::IngressOrder>,
}

impl PlacementArgs {
    pub fn placement(&self) -> anyhow::Result<crate::loader::Placement> {
        check_order(self.ingress_hook, self.ingress_order)?;
        Ok(crate::loader::Placement {
            mode: self.mode,
            ingress_hook: self.ingress_hook,
            ingress_order: self.ingress_order.unwrap_or_default(),
        })
    }
}

/// `--ingress-order` places sgctl in the TCX ingress chain: it means nothing at XDP (clap
/// already refuses it without `--ingress-hook`).
pub fn check_order(
    hook: Option<crate::loader::IngressHook>,
    order: Option<crate::loader::IngressOrder>,
) -> anyhow::Result<()> {
    if order.is_some() && hook != Some(crate::loader::IngressHook::Tcx) {
        anyhow::bail!("--ingress-order places sgctl in the TCX ingress chain: it needs --ingress-hook tcx");
    }
    Ok(())
}
