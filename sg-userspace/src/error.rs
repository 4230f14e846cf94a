//! Errors of the sgctl library. `anyhow` is used only at the binary edge (`main.rs`).

use std::{io, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sgctl must run as root: it loads BPF programs and writes under /sys/fs/bpf")]
    NotRoot,

    #[error(
        "bpffs is not mounted at {0} (mount it with `mount -t bpf bpf /sys/fs/bpf`, or run `cargo xtask setup`)"
    )]
    BpffsMissing(PathBuf),

    #[error(
        "this shell runs under `ip netns exec {netns}`, which gives it a private /sys without the host's /sys/fs/bpf (pins made here would vanish with the shell): run `nsenter --net=/run/netns/{netns} sgctl ...` instead"
    )]
    PrivateSys { netns: String },

    #[error("invalid interface name '{0}' (1-15 characters, no '/', ':' or spaces, not . or ..)")]
    BadInterfaceName(String),

    #[error("no such interface: {0} (in this network namespace)")]
    NoSuchInterface(String),

    #[error("{loc}: no interface {iface} in this network namespace (nothing was applied)")]
    NoSuchInterfaceAt { loc: String, iface: String },

    #[error(
        "interface {iface} already has an XDP program attached: {holder}; remove it first, or attach sgctl's \
         ingress at TCX beside it (`--ingress-hook tcx`)"
    )]
    XdpBusy { iface: String, holder: String },

    #[error(
        "{iface} is already attached with its ingress at {current}; run `sgctl detach {iface}` first to move it to \
         {requested}"
    )]
    HookMismatch { iface: String, current: &'static str, requested: &'static str },

    #[error("--ingress-hook tcx needs TCX (Linux 6.6 or later); this kernel is older")]
    NoTcx,

    #[error("{iface} is not attached by sgctl (nothing under {dir})")]
    NotAttached { iface: String, dir: PathBuf },

    #[error(
        "{iface} is already attached with XDP in {current} mode; run `sgctl detach {iface}` first to change the mode to {requested}"
    )]
    ModeMismatch { iface: String, current: &'static str, requested: &'static str },

    #[error("native XDP is not supported on {iface} (driver {driver}): {source}; use --mode generic")]
    NativeUnsupported { iface: String, driver: String, source: Box<aya::programs::ProgramError> },

    #[error("the kernel attached XDP to {0} without a BPF link (kernel too old: sgctl needs Linux >= 5.15)")]
    NoXdpLink(String),

    #[error("loading the BPF object failed: {0}")]
    Load(#[from] Box<aya::EbpfError>),

    #[error("{what}: {source}")]
    Program { what: String, source: Box<aya::programs::ProgramError> },

    #[error("{what}: {source}")]
    Link { what: String, source: Box<aya::programs::links::LinkError> },

    #[error("{what}: {source}")]
    Map { what: String, source: Box<aya::maps::MapError> },

    #[error("{what}: {source}")]
    Pin { what: String, source: Box<aya::pin::PinError> },

    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },

    #[error(
        "{iface}: the rules need {n} {what} per generation, the interface's prefix tables hold {max}; detach and attach again with a larger --prefix-capacity"
    )]
    PrefixTableFull { iface: String, what: &'static str, n: usize, max: usize },
    #[error("BPF object is missing {0} (sgctl build is inconsistent)")]
    MissingInObject(&'static str),

    #[error(
        "{0} is managed by a rules file (sgctl apply): its postures do not apply; edit the rules instead"
    )]
    ManagedByRules(String),

    #[error("{0}")]
    Rules(#[from] crate::rules::RuleErrors),

    #[error("{0}")]
    Compile(#[from] crate::rules::compile::CompileError),

    #[error("{what}: {detail}")]
    Usage { what: String, detail: String },

    #[error("pinned state of {iface} is inconsistent: {detail}")]
    Inconsistent { iface: String, detail: String },

    #[error("map {name} is not {expected} (sgctl build is inconsistent)")]
    WrongMapKind { name: &'static str, expected: &'static str },

    #[error("{}: not a valid sgctl state file ({detail}); remove it and apply again", path.display())]
    StateFile { path: PathBuf, detail: String },

    #[error("encoding {what}: {source}")]
    Encode { what: String, source: serde_json::Error },

    #[error("no rule set applied in this network namespace (run `sgctl apply FILE` first)")]
    NoRuleSet,

    #[error("another sgctl daemon{} runs for this network namespace: it holds {}; stop it first",
        pid.map_or_else(String::new, |p| format!(" (pid {p})")), lock.display())]
    DaemonRunning { pid: Option<u32>, lock: PathBuf },

    #[error("{}: nothing to enforce: the file does not apply (see above) and no rule set is enforced yet",
        path.display())]
    NothingToEnforce { path: PathBuf },

    #[error("{}: not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },

    #[error(
        "the rules bind interfaces only per host ([hosts.*]: {hosts}): applying them here would detach every interface; \
         pick this host's with `sgctl apply --host NAME`, or give them to a fleet with `sgctl fleet put`"
    )]
    HostsOnly { hosts: String },

    #[error("{}: {detail}", path.display())]
    Capture { path: PathBuf, detail: String },

    #[error(
        "the rules bind no interface{}: nothing was changed (an empty file, a file cut short, or AWS JSON without --bind?); \
         give --allow-empty to apply it on purpose",
        if enforcing.is_empty() { String::new() } else { format!(" and would leave {enforcing} unfiltered") }
    )]
    BindsNothing { enforcing: String },

    #[error(
        "rule set #{seq} awaits `sgctl confirm` (it rolls back by itself {}); confirm it or let it roll back first",
        crate::clock::when(*deadline)
    )]
    AwaitingConfirm { seq: u64, deadline: u64 },

    #[error("failpoint {site}: injected failure")]
    Injected { site: String },

    #[error(
        "{iface} runs an older datapath (map layout {layout}, sgctl {build}); this sgctl uses layout {}: run `sgctl upgrade {iface}`",
        sg_common::layout::LAYOUT
    )]
    LayoutOlder { iface: String, layout: u32, build: String },

    #[error(
        "{iface} was attached by a newer sgctl ({build}, map layout {layout}); this sgctl (layout {}) cannot read its maps: use that build or a newer one (nothing was changed)",
        sg_common::layout::LAYOUT
    )]
    LayoutNewer { iface: String, layout: u32, build: String },

    #[error(
        "{iface}: pinned maps of an unknown layout ({detail}); nothing was changed: detach it with the sgctl that attached it"
    )]
    LayoutUnknown { iface: String, detail: String },

    #[error(
        "{iface}: pinned map {map} is not what map layout {layout} says ({detail}); refusing to reuse it (nothing was changed)"
    )]
    LayoutMismatch { iface: String, layout: u32, map: String, detail: String },

    #[error("{iface}: cannot upgrade: {detail}")]
    Upgrade { iface: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds a "what were we doing" message to low-level errors.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

macro_rules! impl_context {
    ($err:ty, $variant:ident) => {
        impl<T> Context<T> for std::result::Result<T, $err> {
            fn context(self, what: impl FnOnce() -> String) -> Result<T> {
                self.map_err(|source| Error::$variant { what: what(), source: source.into() })
            }
        }
    };
}

impl_context!(io::Error, Io);
impl_context!(aya::programs::ProgramError, Program);
impl_context!(aya::programs::links::LinkError, Link);
impl_context!(aya::maps::MapError, Map);
impl_context!(aya::pin::PinError, Pin);
