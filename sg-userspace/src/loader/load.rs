//! Loading the object and both programs into the kernel (not attached anywhere).

use aya::{
    Ebpf, EbpfLoader,
    programs::{SchedClassifier, Xdp},
};
use sg_common::{
    maps::{self as reg, CT_MAX_ENTRIES, CT_NEW_MAX_ENTRIES, PROG_EGRESS, PROG_INGRESS},
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

/// Loads the object and both programs, with the default sizes.
pub fn load_object() -> Result<Ebpf> {
    load_object_sized(Sizes::default())
}

/// Loads the object with tables of the given sizes.
pub fn load_object_sized(sizes: Sizes) -> Result<Ebpf> {
    load(EbpfLoader::new(), sizes, EBPF_OBJECT)
}

/// Loads the object for an upgrade: each of `reuse` (map name, pin path) is the pinned map at
/// that path (checked by the caller against the layout first: aya does not), every other map
/// is created; tables of the given sizes.
pub fn load_object_reusing(sizes: Sizes, reuse: &[(&'static str, std::path::PathBuf)]) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (name, path) in reuse {
        loader.map_pin_path(name, path.as_path());
    }
    load(loader, sizes, EBPF_OBJECT)
}

/// Loads `object`, the datapath built with the benchmark's stage stops (`sg_common::stage`;
/// the benchmark crate builds and holds it, sgctl does not), with tables of the given sizes
/// and a stage stop.
pub fn load_object_staged(object: &[u8], sizes: Sizes, stop: u32) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader.override_global(STAGE_STOP_GLOBAL, &stop, true);
    load(loader, sizes, object)
}

fn load(mut loader: EbpfLoader<'_>, sizes: Sizes, object: &[u8]) -> Result<Ebpf> {
    let mut ebpf = loader
        .map_max_entries(reg::CT.name, sizes.established)
        .map_max_entries(reg::CT_NEW.name, sizes.new)
        .map_max_entries(reg::PFX_NODES.name, GENERATIONS * nodes_for(sizes.prefixes))
        .map_max_entries(reg::PFX_TIPS.name, GENERATIONS * sizes.prefixes)
        .map_max_entries(reg::PORT_SETS.name, GENERATIONS * sizes.prefixes)
        .load(object)
        .map_err(Box::new)?;
    xdp_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_INGRESS}"))?;
    tc_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_EGRESS}"))?;
    Ok(ebpf)
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
