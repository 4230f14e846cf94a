//! `sgctl daemon --config FILE [...]` or `sgctl daemon --etcd URLS --host NAME [...]`: keep
//! enforcement equal to a rules file or to the fleet's policy (`crate::daemon`), with metrics
//! and flow logs.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use sg_common::flowlog::FlowLogConfig;

use super::common::{AwsInput, EtcdTlsArgs, FormatArg};
use crate::{
    daemon::{self, Options, Source},
    fleet::{
        Endpoints, Schema,
        agent::{Addresses, AgentConfig},
    },
    flowlog,
};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The rules file to enforce (sgctl TOML, or AWS JSON with --format aws).
    #[arg(long, value_name = "FILE", required_unless_present = "etcd", conflicts_with = "etcd")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub fleet: FleetDaemonArgs,
    /// Format of --config: toml or aws.
    #[arg(long, value_enum, default_value_t = FormatArg::Toml)]
    pub format: FormatArg,
    #[command(flatten)]
    pub aws: AwsInput,
    /// Seconds between checks of the rules file for changes.
    #[arg(long, default_value_t = 0.25, value_name = "SECS")]
    pub poll: f64,
    /// Seconds between conntrack garbage collections (expired flows, presence filter).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub gc_interval: f64,
    /// Prometheus metrics address (`off` for none). Keep it on loopback unless a firewall
    /// rule restricts who can scrape.
    #[arg(long, default_value = "127.0.0.1:9947", value_name = "ADDR|off")]
    pub metrics: String,
    /// Detach every interface of the rule set on SIGTERM (default: enforcement stays).
    #[arg(long)]
    pub detach_on_exit: bool,
    #[command(flatten)]
    pub placement: super::common::PlacementArgs,
    #[command(flatten)]
    pub flow: FlowArgs,
}

/// Fleet mode: enforce this host's part of the policy in etcd (see docs/fleet.md).
#[derive(Debug, Args)]
pub struct FleetDaemonArgs {
    /// etcd client URLs, comma-separated: enforce the fleet's policy instead of a file.
    #[arg(long, value_name = "URL[,URL..]", value_delimiter = ',', requires = "host")]
    pub etcd: Vec<String>,
    /// This host's name in the policy (`[hosts.NAME]`) and in its member and status keys.
    #[arg(long, value_name = "NAME", requires = "etcd")]
    pub host: Option<String>,
    /// Key prefix of the fleet's keys.
    #[arg(long = "etcd-prefix", value_name = "PREFIX", default_value = crate::fleet::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Seconds to wait for the store (connecting, and each request).
    #[arg(long = "etcd-timeout", value_name = "S", default_value_t = 5)]
    pub timeout: u64,
    /// Seconds this host's member keys outlive it when it stops renewing them (etcd lease).
    #[arg(long = "lease-ttl", value_name = "S", default_value_t = 10)]
    pub lease_ttl: i64,
    #[command(flatten)]
    pub tls: EtcdTlsArgs,
}

#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Write flow logs as JSON lines to FILE (turns the datapath's flow events on).
    #[arg(long, value_name = "FILE")]
    pub flow_log: Option<PathBuf>,
    /// Also write AWS VPC Flow Logs v2 records, aggregated per --flow-window, to FILE.
    #[arg(long, value_name = "FILE")]
    pub vpc_flow_log: Option<PathBuf>,
    /// Seconds per VPC Flow Logs aggregation window.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub flow_window: u64,
    /// The account-id field of VPC Flow Logs records.
    #[arg(long, default_value = "unknown")]
    pub account_id: String,
    /// Reject events per second per source address (0: no limit).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub reject_rate: u32,
    /// Reject events a source may send at once before --reject-rate applies.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub reject_burst: u32,
    /// Events per second per CPU, all kinds (0: no limit).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub cpu_rate: u32,
    /// Flow-log events a CPU may emit at once beyond its rate (GCRA burst).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub cpu_burst: u32,
    /// Learn from the accepted flows into FILE (kept across restarts) for `sgctl learn`
    /// (turns the datapath's flow events on).
    #[arg(long, value_name = "FILE")]
    pub learn: Option<PathBuf>,
    /// Distinct observations --learn keeps at most (new ones beyond are counted, not kept).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub learn_capacity: usize,
}

impl FlowArgs {
    /// The flow-log options, if flow logs are asked for.
    fn options(&self) -> anyhow::Result<Option<flowlog::Options>> {
        if self.flow_log.is_none() && self.vpc_flow_log.is_none() && self.learn.is_none() {
            return Ok(None);
        }
        anyhow::ensure!(self.learn_capacity > 0, "--learn-capacity must be at least 1");
        anyhow::ensure!(self.flow_window > 0, "--flow-window must be at least 1 second");
        Ok(Some(flowlog::Options {
            json: self.flow_log.clone(),
            vpc: self.vpc_flow_log.clone(),
            window: Duration::from_secs(self.flow_window),
            account: self.account_id.clone(),
            limits: FlowLogConfig::new(self.reject_rate, self.reject_burst, self.cpu_rate, self.cpu_burst),
            learn: self.learn.clone().map(|p| (p, self.learn_capacity)),
        }))
    }
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        v.is_finite() && v > 0.0 && v < 1e6,
        "--{what} must be a positive number of seconds, not {v}"
    );
    Ok(Duration::from_secs_f64(v))
}

pub fn run(args: &DaemonArgs) -> anyhow::Result<()> {
    let placement = args.placement.placement()?;
    let metrics: Option<SocketAddr> = match args.metrics.as_str() {
        "off" | "none" => None,
        a => Some(a.parse().with_context(|| format!("--metrics {a}: not an address:port"))?),
    };
    let source = match (&args.config, args.fleet.host.as_ref()) {
        (Some(config), _) => {
            Source::File { config: config.clone(), format: args.format.into(), aws: args.aws.context()? }
        }
        (None, Some(host)) => {
            anyhow::ensure!(args.fleet.lease_ttl >= 2, "--lease-ttl must be at least 2 seconds");
            anyhow::ensure!(
                !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "._:@+=-".contains(c)),
                "--host {host}: use letters, digits and . _ : @ + = -"
            );
            Source::Fleet(AgentConfig {
                endpoints: Endpoints {
                    urls: args.fleet.etcd.clone(),
                    timeout: Duration::from_secs(args.fleet.timeout),
                    tls: args.fleet.tls.tls()?,
                },
                schema: Schema::new(&args.fleet.prefix)?,
                host: host.clone(),
                lease_ttl: args.fleet.lease_ttl,
                addresses: Addresses::Interfaces,
            })
        }
        (None, None) => anyhow::bail!("give --config FILE, or --etcd URLS with --host NAME"),
    };
    daemon::run(Options {
        source,
        poll: secs("poll", args.poll)?,
        gc_interval: secs("gc-interval", args.gc_interval)?,
        metrics,
        detach_on_exit: args.detach_on_exit,
        placement,
        flow: args.flow.options()?,
    })?;
    Ok(())
}
