//! Loading the object and both programs into the kernel (not attached anywhere).

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use sg_common::{
    maps::{self as reg, CT_MAX_ENTRIES, CT_NEW_MAX_ENTRIES, PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_TC},
    policy::{GENERATIONS, PREFIX_CAPACITY, nodes_for},
    stage::STAGE_STOP_GLOBAL,
};

use super::EBPF_OBJECT;
use crate::error::{Context as _, Error, Result};

/// The sizes of an instance's tables that can be chosen (fixed when the instance is loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `SG_CT`: flows that saw both directions.
    pub established: u32,
    /// `SG_CT_NEW`: flows not answered yet (LRU).
    pub new: u32,
    /// Prefix tables, per generation: tips and port sets (`SG_PFX_TIPS`, `SG_PORT_SETS`);
    /// `SG_PFX_NODES` gets `policy::nodes_for` of it.
    pub prefixes: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes { established: CT_MAX_ENTRIES, new: CT_NEW_MAX_ENTRIES, prefixes: PREFIX_CAPACITY }
    }
}

/// Where the ingress program runs: XDP (the default, the earliest and cheapest hook) or TCX
/// ingress, for an interface whose XDP hook another program owns (`--ingress-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    #[default]
    Xdp,
    Tcx,
}

impl IngressHook {
    /// The ingress program of this hook in the object (pinned as `PROG_INGRESS` either way).
    pub const fn program(self) -> &'static str {
        match self {
            IngressHook::Xdp => PROG_INGRESS,
            IngressHook::Tcx => PROG_INGRESS_TC,
        }
    }

    /// The hook an instance uses, from its config's `xdp_mode`.
    pub const fn of_xdp_mode(mode: u8) -> Self {
        if mode == sg_common::config::XDP_MODE_TCX { IngressHook::Tcx } else { IngressHook::Xdp }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            IngressHook::Xdp => "xdp",
            IngressHook::Tcx => "tcx",
        }
    }
}

/// Loads the object and both programs (XDP ingress), with the default sizes.
pub fn load_object() -> Result<Ebpf> {
    load_object_sized(Sizes::default())
}

/// Loads the object with tables of the given sizes (XDP ingress).
pub fn load_object_sized(sizes: Sizes) -> Result<Ebpf> {
    load_object_hooked(sizes, IngressHook::Xdp)
}

/// Loads the object with tables of the given sizes and the ingress program of `hook` (only the
/// programs an instance runs are loaded: each costs the verifier's time).
pub fn load_object_hooked(sizes: Sizes, hook: IngressHook) -> Result<Ebpf> {
    load(EbpfLoader::new(), sizes, EBPF_OBJECT, hook)
}

/// Loads the object for an upgrade: each of `reuse` (map name, pin path) is the pinned map at
/// that path (checked by the caller against the layout first: aya does not), every other map
/// is created; tables of the given sizes.
pub fn load_object_reusing(
    sizes: Sizes,
    reuse: &[(&'static str, std::path::PathBuf)],
    hook: IngressHook,
) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (name, path) in reuse {
        loader.map_pin_path(name, path.as_path());
    }
    load(loader, sizes, EBPF_OBJECT, hook)
}

/// Loads `object`, the datapath built with the benchmark's stage stops (`sg_common::stage`;
/// the benchmark crate builds and holds it, sgctl does not), with tables of the given sizes
/// and a stage stop.
pub fn load_object_staged(object: &[u8], sizes: Sizes, stop: u32, hook: IngressHook) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader.override_global(STAGE_STOP_GLOBAL, &stop, true);
    load(loader, sizes, object, hook)
}

fn load(mut loader: EbpfLoader<'_>, sizes: Sizes, object: &[u8], hook: IngressHook) -> Result<Ebpf> {
    let mut ebpf = loader
        .map_max_entries(reg::CT.name, sizes.established)
        .map_max_entries(reg::CT_NEW.name, sizes.new)
        .map_max_entries(reg::PFX_NODES.name, GENERATIONS * nodes_for(sizes.prefixes))
        .map_max_entries(reg::PFX_TIPS.name, GENERATIONS * sizes.prefixes)
        .map_max_entries(reg::PORT_SETS.name, GENERATIONS * sizes.prefixes)
        .load(object)
        .map_err(Box::new)?;
    match hook {
        IngressHook::Xdp => xdp_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_INGRESS}"))?,
        IngressHook::Tcx => {
            tc_ingress_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_INGRESS_TC}"))?;
        }
    }
    tc_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_EGRESS}"))?;
    Ok(ebpf)
}

/// The ingress program of the TCX hook (`--ingress-hook tcx`).
pub(super) fn tc_ingress_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog = ebpf.program_mut(PROG_INGRESS_TC).ok_or(Error::MissingInObject(PROG_INGRESS_TC))?;
    <&mut SchedClassifier>::try_from(prog).context(|| PROG_INGRESS_TC.to_string())
}

/// The ingress program (XDP).
pub(super) fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf.program_mut(PROG_INGRESS).ok_or(Error::MissingInObject(PROG_INGRESS))?;
    <&mut Xdp>::try_from(prog).context(|| PROG_INGRESS.to_string())
}

/// The egress program (TC).
pub(super) fn tc_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog = ebpf.program_mut(PROG_EGRESS).ok_or(Error::MissingInObject(PROG_EGRESS))?;
    <&mut SchedClassifier>::try_from(prog).context(|| PROG_EGRESS.to_string())
}
