//! The layout of an instance's maps, numbered, and the metadata an instance carries about
//! itself (`SG_META`).
//!
//! A datapath reads its maps with the layouts compiled into it. An upgrade (a newer sgctl
//! taking over an instance an older one attached) may reuse a pinned map only when the map is
//! exactly what the new programs expect; otherwise it must convert its entries into a new map.
//! The layout number says which, map by map (`sg_userspace::loader::layout` holds what each
//! earlier layout's maps were and how each is carried over), and every reuse is also checked
//! against the kernel's own description of the pinned map (type, key and value sizes, flags).
//!
//! Bump [`LAYOUT`] whenever any map's type, key or value layout, flags or the meaning of its
//! contents change; add the old layout's table and the carry-over of each changed map in
//! userspace (a unit test refuses a layout without them).
//!
//! [`InstanceMeta`] itself never changes its first fields (magic and layout), so that every
//! build can tell which layout an instance has, also a newer one it must refuse.

/// The layout of the maps this build's datapath uses.
///
/// 1: the builds before layouts were numbered (up to commit 47437fc): no `SG_META`, recognised
/// by its pinned maps. 2: `SG_META` and `SG_LOCAL` added; `CtEntry` (`SG_CT`, `SG_CT_NEW`,
/// and the flow-log ring's `FlowEnd`) grows from 80 to 96 bytes (each side's TCP sequence
/// space), `PacketSummary` (`SG_SCRATCH`, `SG_LAST_PARSE`) from 112 to 128 (TCP sequence
/// fields), `ClockCache` (`SG_CLOCK`) from 16 to 24 (the sweep's timestamp); every other map
/// as in 1.
pub const LAYOUT: u32 = 2;

/// The layout of the builds before layouts were numbered.
pub const LAYOUT_UNVERSIONED: u32 = 1;

/// `InstanceMeta::magic`: "sgctlmet" in little-endian byte order.
pub const META_MAGIC: u64 = u64::from_le_bytes(*b"sgctlmet");

/// Bytes of `InstanceMeta::build`.
pub const BUILD_LEN: usize = 64;

/// What an instance says about itself: the one entry of `SG_META`, written by userspace at
/// attach and at every upgrade, never read by the datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceMeta {
    /// [`META_MAGIC`]; zero in a map nobody wrote.
    pub magic: u64,
    /// The layout of the instance's maps ([`LAYOUT`] of the build that made them).
    pub layout: u32,
    /// Upgrades done on this instance (program replacements, same layout or not).
    pub upgrades: u32,
    /// FNV-1a 64 of the eBPF object the running programs were loaded from ([`object_hash`]).
    pub datapath: u64,
    /// Unix seconds of the last upgrade (0: none since the attach).
    pub upgraded_at: u64,
    /// Classic clsact egress only: the filter's priority and handle, to replace it in place.
    pub tc_priority: u32,
    pub tc_handle: u32,
    /// The build of the running programs, NUL-padded UTF-8 ("0.1.0 (git 47437fc)").
    pub build: [u8; BUILD_LEN],
}

const _: () = assert!(size_of::<InstanceMeta>() == 104);

impl InstanceMeta {
    /// Metadata of an instance of this layout whose programs come from `datapath` (an
    /// [`object_hash`]) built as `build`.
    pub fn new(datapath: u64, build: &str) -> Self {
        let mut b = [0u8; BUILD_LEN];
        let n = build.len().min(BUILD_LEN);
        b[..n].copy_from_slice(&build.as_bytes()[..n]);
        InstanceMeta {
            magic: META_MAGIC,
            layout: LAYOUT,
            upgrades: 0,
            datapath,
            upgraded_at: 0,
            tc_priority: 0,
            tc_handle: 0,
            build: b,
        }
    }

    /// Whether a build wrote this entry (a map nobody wrote holds zeros).
    pub const fn is_valid(&self) -> bool {
        self.magic == META_MAGIC
    }

    /// The build, as text.
    pub fn build_str(&self) -> &str {
        let end = self.build.iter().position(|&c| c == 0).unwrap_or(BUILD_LEN);
        core::str::from_utf8(&self.build[..end]).unwrap_or("?")
    }
}

/// FNV-1a 64 of an eBPF object's bytes: which datapath an instance runs.
pub const fn object_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

crate::impl_pod!(InstanceMeta);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_its_build_and_knows_an_unwritten_entry() {
        let m = InstanceMeta::new(7, "0.1.0 (git 47437fc)");
        assert!(m.is_valid());
        assert_eq!(m.build_str(), "0.1.0 (git 47437fc)");
        assert_eq!(m.layout, LAYOUT);
        let long = "x".repeat(100);
        assert_eq!(InstanceMeta::new(0, &long).build_str().len(), BUILD_LEN);
        // SAFETY: all-zero bytes are a valid InstanceMeta (integers only).
        let zero: InstanceMeta = unsafe { core::mem::zeroed() };
        assert!(!zero.is_valid());
        assert_ne!(object_hash(b"a"), object_hash(b"b"));
        assert_eq!(object_hash(b""), 0xcbf2_9ce4_8422_2325);
    }
}
