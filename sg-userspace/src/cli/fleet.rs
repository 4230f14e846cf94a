//! `sgctl fleet put FILE [--dry-run]`, `sgctl fleet get [--json]`: the fleet's policy in etcd
//! (key schema: `crate::fleet::schema`).

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::common::EtcdTlsArgs;

use crate::{
    fleet::{Endpoints, Schema, Store, schema},
    rules::{self, AwsContext, Format},
};

/// Where the fleet's store is (every fleet subcommand and the daemon's fleet mode).
#[derive(Debug, Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (http://127.0.0.1:2379,...).
    #[arg(long, value_name = "URL[,URL..]", value_delimiter = ',', required = true, env = "SGCTL_ETCD")]
    pub etcd: Vec<String>,
    /// Key prefix of this fleet's keys.
    #[arg(long = "etcd-prefix", value_name = "PREFIX", default_value = crate::fleet::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Seconds to wait for the store (connecting, and each request).
    #[arg(long = "etcd-timeout", value_name = "S", default_value_t = 5)]
    pub timeout: u64,
    #[command(flatten)]
    pub tls: EtcdTlsArgs,
}

impl EtcdArgs {
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        Ok(Endpoints {
            urls: self.etcd.clone(),
            timeout: Duration::from_secs(self.timeout),
            tls: self.tls.tls()?,
        })
    }

    pub fn schema(&self) -> anyhow::Result<Schema> {
        Ok(Schema::new(&self.prefix)?)
    }
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate a fleet rules file and write it as the fleet's policy, in one transaction
    /// (only the keys that change; a file with any error writes nothing).
    Put(PutArgs),
    /// Print the fleet's policy as a rules file (TOML), or its keys as JSON.
    Get(GetArgs),
    /// List the hosts: interfaces, whether their daemon is alive (holds its lease), the policy
    /// revision each enforces, since when, and its last error.
    Status(GetArgs),
    /// Propose rules for the fleet's groups from what every host observed (daemons run with
    /// --learn publish bounded summaries): group-level rules, peers named by group where they
    /// are a group's registered members; checked, printed with evidence, written with --out
    /// as a fleet rules file. Nothing is applied.
    Learn(super::learn::FleetLearnArgs),
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The fleet rules file: groups, prefix lists, quotas and `[hosts.HOST.interfaces.IF]`.
    pub file: PathBuf,
    /// Print the keys that would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Print `{"revision": N, "keys": {KEY: VALUE}}` instead of TOML.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    Ok(rt.block_on(f))
}

pub fn run(args: &FleetArgs) -> anyhow::Result<()> {
    match &args.command {
        FleetCommand::Put(a) => put(a),
        FleetCommand::Get(a) => get(a),
        FleetCommand::Status(a) => status(a),
        FleetCommand::Learn(a) => super::learn::run_fleet(a),
    }
}

fn put(a: &PutArgs) -> anyhow::Result<()> {
    let name = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("{name}: cannot read"))?;
    let loaded = rules::parse_with_warnings(&name, &text, Format::Toml, &AwsContext::default())?;
    for w in &loaded.warnings {
        eprintln!("sgctl: warning: {w}");
    }
    if loaded.rules.member_ranges.is_empty() {
        eprintln!(
            "sgctl: warning: {name}: no [fleet] member_ranges: a host's registration can add any address (but reserved ones) to its groups; give the fleet's ranges to bound them"
        );
    }
    let keys = schema::policy_of_file(&name, &text, &loaded.rules)?;
    let schema = a.etcd.schema()?;
    let ep = a.etcd.endpoints()?;
    let out = block_on(async {
        let mut store = Store::connect(&ep, schema).await?;
        store.put_policy(&keys, a.dry_run).await
    })??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for (sign, keys) in [("+", &out.diff.added), ("~", &out.diff.changed), ("-", &out.diff.removed)] {
        for k in keys {
            println!("{sign} {}{k}", a.etcd.prefix);
        }
    }
    let n = out.diff.added.len() + out.diff.changed.len() + out.diff.removed.len();
    match out.revision {
        Some(rev) => println!("wrote {n} keys in one transaction: revision {rev}"),
        None if out.diff.is_empty() => println!("no change (store at revision {})", out.from_revision),
        None => println!("dry run: {n} keys would change (store at revision {})", out.from_revision),
    }
    Ok(())
}

fn get(a: &GetArgs) -> anyhow::Result<()> {
    let schema = a.etcd.schema()?;
    let ep = a.etcd.endpoints()?;
    let snap = block_on(async {
        let mut store = Store::connect(&ep, schema.clone()).await?;
        store.read_policy().await
    })??;
    if a.json {
        let keys: serde_json::Map<String, serde_json::Value> = snap
            .keys
            .iter()
            .map(|(k, v)| {
                let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
                (format!("{}{k}", a.etcd.prefix), v)
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "revision": snap.revision, "keys": keys }))?
        );
        return Ok(());
    }
    // The document first: the line numbers of a stored policy's errors are its lines.
    print!("{}", schema::document(&snap.keys)?);
    println!("# sgctl fleet policy: etcd {} at revision {}", a.etcd.prefix, snap.revision);
    schema::ruleset(&schema, snap.revision, &snap.keys)?;
    Ok(())
}

fn status(a: &GetArgs) -> anyhow::Result<()> {
    let schema = a.etcd.schema()?;
    let ep = a.etcd.endpoints()?;
    let (revision, all) = block_on(async {
        let mut store = Store::connect(&ep, schema).await?;
        store.read_all().await
    })??;
    let rows = schema::host_rows(&all);
    // What the hosts' registrations add that the policy ignores (outside the bounds, groups
    // the policy does not bind): every host ignores the same.
    let (_, warnings) = schema::with_members(&all);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "revision": revision, "hosts": rows, "warnings": warnings })
            )?
        );
        return Ok(());
    }
    let now = crate::clock::now_unix();
    println!("{:<20} {:<6} {:>9} {:>9}  {:<16} error", "host", "alive", "revision", "since", "interfaces");
    for r in &rows {
        let st = r.status.as_ref();
        let rev = st.and_then(|s| s["revision"].as_i64()).map_or("-".to_string(), |v| v.to_string());
        let since = st
            .and_then(|s| s["at"].as_u64())
            .map_or("-".to_string(), |t| format!("{}s ago", now.saturating_sub(t)));
        let err = st.and_then(|s| s["error"].as_str()).unwrap_or("");
        println!(
            "{:<20} {:<6} {rev:>9} {since:>9}  {:<16} {err}",
            r.host,
            if r.alive { "yes" } else { "no" },
            r.interfaces.join(",")
        );
    }
    println!("(store at revision {revision})");
    for w in &warnings {
        println!("warning: {w}");
    }
    Ok(())
}
