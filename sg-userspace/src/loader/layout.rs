//! Which layout an instance's maps have (`sg_common::layout`), checked against the kernel's own
//! description of every pinned map before any of them is reused, and what an upgrade does with
//! each map of an older layout.
//!
//! aya 0.14 reuses a pinned map by name without checking that it is the map the program
//! expects (libbpf and cilium/ebpf refuse a mismatch). sgctl checks explicitly: type, key and
//! value sizes and flags of every pinned map must be those of the layout the instance claims
//! ([`verify`]), and a map is reused by a newer datapath only when [`carry`] says its layout did
//! not change in between.

use std::path::Path;

use sg_common::{
    layout::{InstanceMeta, LAYOUT, LAYOUT_UNVERSIONED, META_MAGIC},
    maps::{self as reg, MapSpec, owned},
};

use super::bpf;
use crate::error::{Error, Result};

/// A map as an earlier layout had it: name, `bpf_map_type`, key and value sizes, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PastMap {
    pub name: &'static str,
    pub kind: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub flags: u32,
}

const fn past(name: &'static str, kind: u32, key_size: u32, value_size: u32, flags: u32) -> PastMap {
    PastMap { name, kind, key_size, value_size, flags }
}

/// Layout 1: the maps of the builds before layouts were numbered (up to commit 47437fc), as
/// the kernel describes them. Frozen: never edit (it is what is in the field).
pub const LAYOUT_1: &[PastMap] = &[
    past("SG_CONFIG", 2, 4, 80, 0),
    past("SG_COUNTERS", 6, 4, 16, 0),
    past("SG_SCRATCH", 6, 4, 112, 0),
    past("SG_LAST_PARSE", 2, 4, 112, 0),
    past("SG_PFX_ROOT", 2, 4, 262_144, 0),
    past("SG_PFX_NODES", 2, 4, 1064, 0),
    past("SG_PFX_TIPS", 2, 4, 40, 0),
    past("SG_PORT_SETS", 2, 4, 8, 0),
    past("SG_SEGMENTS", 2, 4, 16, 0),
    past("SG_RULE_HITS", 6, 4, 8, 0),
    past("SG_ACL_HITS", 6, 4, 8, 0),
    past("SG_CT", 1, 40, 80, 1),
    past("SG_CT_NEW", 9, 40, 80, 2),
    past("SG_CT_SEEN", 2, 4, 8, 1024),
    past("SG_FRAGS", 9, 40, 8, 0),
    past("SG_FLOW_EVENTS", 27, 0, 0, 0),
    past("SG_FLOW_CFG", 2, 4, 32, 0),
    past("SG_FLOW_RATE", 9, 20, 8, 0),
    past("SG_FLOW_STATS", 6, 4, 48, 0),
    past("SG_CLOCK", 6, 4, 16, 0),
];

/// This build's maps as [`PastMap`]s (the registry's entries sgctl pins).
pub fn current() -> impl Iterator<Item = PastMap> {
    owned().map(|s| past(s.name, s.kind.bpf_type(), s.key_size, s.value_size, s.flags))
}

/// The maps of `layout`, if this build knows it.
pub fn maps_of(layout: u32) -> Option<Vec<PastMap>> {
    match layout {
        LAYOUT => Some(current().collect()),
        LAYOUT_UNVERSIONED => Some(LAYOUT_1.to_vec()),
        _ => None,
    }
}

/// How an upgrade carries one of this build's maps over from an instance of an older layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// The same map, reused by the new programs (its contents stay: nothing is copied).
    Reuse,
    /// A new map, filled from the old one's entries converted to this layout.
    Convert(Conversion),
    /// A new map, empty (new in this layout, or contents that cannot outlive their programs).
    Fresh,
}

/// The conversions this build can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// `CtEntry` of layout 1 (80 bytes) to this layout's, in `SG_CT` and `SG_CT_NEW`.
    CtEntryV1,
}

/// What an upgrade from `from` does with this build's map `spec`; `None` when this build
/// cannot carry it over (the upgrade is refused).
pub fn carry(from: u32, spec: &MapSpec) -> Option<Carry> {
    match from {
        LAYOUT => Some(Carry::Reuse),
        LAYOUT_UNVERSIONED => Some(match spec.name {
            n if n == reg::CT.name || n == reg::CT_NEW.name => Carry::Convert(Conversion::CtEntryV1),
            // New in layout 2.
            n if n == reg::META.name || n == reg::LOCAL.name => Carry::Fresh,
            // A packet's scratch space and the last one's summary: nothing to carry.
            n if n == reg::SCRATCH.name || n == reg::LAST_PARSE.name => Carry::Fresh,
            // A per-CPU cache (it grew the sweep's timestamp).
            n if n == reg::CLOCK.name => Carry::Fresh,
            // The ring buffer's `FlowEnd` items carry a `CtEntry`: their size changed.
            n if n == reg::FLOW_EVENTS.name => Carry::Fresh,
            _ => Carry::Reuse,
        }),
        _ => None,
    }
}

/// What an instance directory holds, as far as its layout goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// This build's layout.
    Current(InstanceMeta),
    /// An older layout this build can upgrade (`meta`: `None` for the unversioned layout 1).
    Older { layout: u32, meta: Option<InstanceMeta> },
    /// A newer layout: this build must not touch it.
    Newer(InstanceMeta),
    /// Neither: why.
    Unknown(String),
}

/// Reads what `dir` claims to be: `SG_META` if pinned, else the unversioned layout if its maps
/// are all there. The claim is not checked here (see [`verify`]).
pub fn inspect(dir: &Path) -> Result<Found> {
    let meta_path = dir.join(reg::META.name);
    if !meta_path.exists() {
        let missing: Vec<&str> = LAYOUT_1.iter().map(|m| m.name).filter(|n| !dir.join(n).exists()).collect();
        return Ok(if missing.is_empty() {
            Found::Older { layout: LAYOUT_UNVERSIONED, meta: None }
        } else {
            Found::Unknown(format!("no {} and no {}", reg::META.name, missing.join(", ")))
        });
    }
    let fd = bpf::obj_get(&meta_path)?;
    let info = bpf::map_info(std::os::fd::AsFd::as_fd(&fd))?;
    // The magic and the layout number are the first 12 bytes of every build's InstanceMeta.
    if info.kind != 2 || info.value_size < 12 {
        return Ok(Found::Unknown(format!("{} is not an array of InstanceMeta", reg::META.name)));
    }
    let raw = bpf::lookup_raw(std::os::fd::AsFd::as_fd(&fd), 0, info.value_size)?;
    let magic = u64::from_ne_bytes(raw[0..8].try_into().unwrap_or_default());
    let layout = u32::from_ne_bytes(raw[8..12].try_into().unwrap_or_default());
    if magic != META_MAGIC {
        return Ok(Found::Unknown(format!("{} was never written", reg::META.name)));
    }
    // An InstanceMeta as this build knows it (a newer build's may be longer).
    let mut meta = [0u8; size_of::<InstanceMeta>()];
    let n = meta.len().min(raw.len());
    meta[..n].copy_from_slice(&raw[..n]);
    // SAFETY: InstanceMeta is plain integers and byte arrays; any bytes are a value.
    let meta: InstanceMeta = unsafe { std::ptr::read_unaligned(meta.as_ptr().cast()) };
    Ok(match layout.cmp(&LAYOUT) {
        std::cmp::Ordering::Equal => Found::Current(meta),
        std::cmp::Ordering::Less if maps_of(layout).is_some() => Found::Older { layout, meta: Some(meta) },
        std::cmp::Ordering::Less => {
            Found::Unknown(format!("layout {layout}, which this build does not know"))
        }
        std::cmp::Ordering::Greater => Found::Newer(meta),
    })
}

/// A pinned map as the kernel describes it.
#[derive(Clone, Copy, Debug)]
pub struct Pinned {
    pub map: PastMap,
    pub info: bpf::MapInfo,
}

/// Checks every map `layout` has against the kernel's description of its pin in `dir` (type,
/// key and value sizes, flags); returns them. Any difference fails: nothing is reused then.
pub fn verify(dir: &Path, iface: &str, layout: u32) -> Result<Vec<Pinned>> {
    let maps = maps_of(layout).ok_or_else(|| Error::LayoutUnknown {
        iface: iface.to_string(),
        detail: format!("layout {layout}, which this build does not know"),
    })?;
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let path = dir.join(m.name);
        let fd = bpf::obj_get(&path).map_err(|_| Error::LayoutMismatch {
            iface: iface.to_string(),
            layout,
            map: m.name.to_string(),
            detail: "not pinned".into(),
        })?;
        let info = bpf::map_info(std::os::fd::AsFd::as_fd(&fd))?;
        let got = (info.kind, info.key_size, info.value_size, info.flags);
        let want = (m.kind, m.key_size, m.value_size, m.flags);
        if got != want {
            return Err(Error::LayoutMismatch {
                iface: iface.to_string(),
                layout,
                map: m.name.to_string(),
                detail: format!(
                    "the kernel says type {}, key {} bytes, value {} bytes, flags {:#x}; layout {layout} has {}, {}, {}, {:#x}",
                    got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
                ),
            });
        }
        out.push(Pinned { map: m, info });
    }
    Ok(out)
}

/// Fails unless `dir` holds an instance of this build's layout whose pinned maps are what the
/// layout says: what every reader and writer of an instance's maps checks before opening them.
pub fn require_current(dir: &Path, iface: &str) -> Result<InstanceMeta> {
    match inspect(dir)? {
        Found::Current(meta) => {
            verify(dir, iface, LAYOUT)?;
            Ok(meta)
        }
        Found::Older { layout, meta } => Err(Error::LayoutOlder {
            iface: iface.to_string(),
            layout,
            build: meta.map_or_else(|| "before layouts were numbered".into(), |m| m.build_str().to_string()),
        }),
        Found::Newer(meta) => Err(Error::LayoutNewer {
            iface: iface.to_string(),
            layout: meta.layout,
            build: meta.build_str().to_string(),
        }),
        Found::Unknown(detail) => Err(Error::LayoutUnknown { iface: iface.to_string(), detail }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_of_every_known_layout_is_carried_over_or_refused_on_purpose() {
        // Layout 1 is this build's registry with the changes layout 2 made, and nothing else:
        // a map whose layout changed without a carry-over rule fails here.
        for from in [LAYOUT_UNVERSIONED, LAYOUT] {
            let old = maps_of(from).expect("known layout");
            for spec in owned() {
                let now = current().find(|m| m.name == spec.name).expect("registry");
                match carry(from, spec).expect("every map has a rule") {
                    Carry::Reuse => {
                        let was = old.iter().find(|m| m.name == spec.name);
                        assert_eq!(was, Some(&now), "{} reused from layout {from} but it changed", spec.name);
                    }
                    Carry::Convert(_) | Carry::Fresh => {}
                }
            }
        }
        assert_eq!(carry(LAYOUT_UNVERSIONED, &reg::CT), Some(Carry::Convert(Conversion::CtEntryV1)));
        assert_eq!(carry(LAYOUT + 1, &reg::CT), None, "a newer layout is never carried");
        assert_eq!(maps_of(LAYOUT).map(|m| m.len()), Some(owned().count()));
    }
}
