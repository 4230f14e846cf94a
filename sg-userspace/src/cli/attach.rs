//! `sgctl attach IFACE [--mode auto|native|generic] [--ingress allow|deny] [--egress allow|deny]`

use clap::{Args, ValueEnum};
use sg_common::Posture;

use super::common;
use crate::loader::{self, AttachRequest, IngressHook, IngressOrder, ModeRequest, TcRequest};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Interface to protect (in the current network namespace).
    pub iface: String,
    /// XDP mode for ingress.
    #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
    pub mode: ModeRequest,
    /// Where ingress is decided (new attach: xdp): `xdp`, the earliest and cheapest hook, which
    /// sgctl then owns; `tcx`, the TCX ingress chain, beside another program that owns the XDP
    /// hook (xdp-filter, ...: it sees every packet first). See docs/operations.md, "Sharing the
    /// hooks".
    #[arg(long, value_enum)]
    pub ingress_hook: Option<IngressHook>,
    /// With `--ingress-hook tcx`: sgctl's place in the TCX ingress chain (new attach only;
    /// default first).
    #[arg(long, value_enum, requires = "ingress_hook")]
    pub ingress_order: Option<IngressOrder>,
    /// Default for ingress IP packets (new attach: deny, as AWS).
    #[arg(long, value_enum)]
    pub ingress: Option<PostureArg>,
    /// Default for egress IP packets (new attach: allow, as AWS).
    #[arg(long, value_enum)]
    pub egress: Option<PostureArg>,
    /// How to attach the egress program (auto: TCX on Linux >= 6.6, else clsact).
    #[arg(long, value_enum, default_value_t = TcRequest::Auto)]
    pub tc: TcRequest,
    /// Size of the conntrack table of established flows (new attach only).
    #[arg(long, default_value_t = sg_common::maps::CT_MAX_ENTRIES)]
    pub ct_size: u32,
    /// Size of the LRU table of flows not answered yet (new attach only).
    #[arg(long, default_value_t = sg_common::maps::CT_NEW_MAX_ENTRIES)]
    pub ct_new_size: u32,
    /// Capacity of the prefix tables per generation (new attach only): about the number of
    /// distinct peer prefixes the interface's rules may name (tips and port sets; nodes get a
    /// sixteenth). An apply that needs more is refused before anything changes.
    #[arg(long, default_value_t = sg_common::policy::PREFIX_CAPACITY, value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    pub prefix_capacity: u32,
    /// Switch implicit allowances off (posture mode; in a rules file use `implicit = {...}`).
    /// `none` switches them all back on.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub no_implicit: Option<Vec<ImplicitArg>>,
    /// Monitor mode: compute, count and log every verdict but drop nothing (`on`), or enforce
    /// again (`off`). Works in posture and in groups mode; the drop reasons' counters then
    /// show what would have been dropped.
    #[arg(long, value_enum)]
    pub monitor: Option<Switch>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImplicitArg {
    /// IPv6 neighbour discovery (ICMPv6 133-137, hop limit 255).
    Ndp,
    /// DHCPv4 client traffic.
    Dhcp,
    /// DHCPv6 client traffic.
    Dhcpv6,
    /// None: every implicit allowance on.
    None,
}

fn implicit_bits(v: &[ImplicitArg]) -> u32 {
    use sg_common::config::{CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6, CONFIG_NO_IMPLICIT_NDP};
    v.iter().fold(0, |acc, a| {
        acc | match a {
            ImplicitArg::Ndp => CONFIG_NO_IMPLICIT_NDP,
            ImplicitArg::Dhcp => CONFIG_NO_IMPLICIT_DHCP,
            ImplicitArg::Dhcpv6 => CONFIG_NO_IMPLICIT_DHCPV6,
            ImplicitArg::None => 0,
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PostureArg {
    Allow,
    Deny,
}

impl From<PostureArg> for Posture {
    fn from(p: PostureArg) -> Self {
        match p {
            PostureArg::Allow => Posture::Allow,
            PostureArg::Deny => Posture::Deny,
        }
    }
}

pub fn run(args: &AttachArgs) -> anyhow::Result<()> {
    common::check_order(args.ingress_hook, args.ingress_order)?;
    let report = loader::attach(&AttachRequest {
        iface: args.iface.clone(),
        mode: args.mode,
        tc: args.tc,
        ingress_hook: args.ingress_hook,
        ingress_order: args.ingress_order.unwrap_or_default(),
        ingress: args.ingress.map(Into::into),
        egress: args.egress.map(Into::into),
        sizes: loader::Sizes {
            established: args.ct_size,
            new: args.ct_new_size,
            prefixes: args.prefix_capacity,
        },
        no_implicit: args.no_implicit.as_deref().map(implicit_bits),
        monitor: args.monitor.map(|m| m == Switch::On),
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    // What monitor mode is now (read back from the interface's config), when on or asked for.
    let monitor = match (report.monitor, args.monitor.is_some()) {
        (true, _) => "; monitor mode on: verdicts counted, nothing dropped",
        (false, true) => "; monitor mode off: enforcing",
        (false, false) => "",
    };
    if report.newly_attached {
        println!(
            "attached {}: {} (prog {}), TC egress {} (prog {}); ingress {}, egress {}{monitor}",
            report.iface,
            hook_desc(&report),
            report.ingress_prog_id,
            report.tc_kind,
            report.egress_prog_id,
            report.ingress,
            report.egress
        );
        if let Some(note) = &report.mode_note {
            println!("  mode: {note}");
        }
        println!("  pinned under {}", report.pin_dir.display());
        if let Some(a) = report.adopted.filter(|a| a.found > 0) {
            println!("  {}", common::adopted_line(&a));
        }
    } else {
        println!(
            "{} already attached ({}, prog {}); ingress {}, egress {}{}",
            report.iface,
            hook_desc(&report),
            report.ingress_prog_id,
            report.ingress,
            report.egress,
            monitor
        );
    }
    Ok(())
}

/// "XDP generic", or "TCX ingress (1 of 2 in the chain)".
fn hook_desc(report: &loader::AttachReport) -> String {
    match (report.ingress_hook, &report.ingress_chain) {
        ("tcx", Some(c)) => format!("TCX ingress ({c})"),
        ("tcx", None) => "TCX ingress".to_string(),
        _ => format!("XDP {}", report.xdp_mode),
    }
}
