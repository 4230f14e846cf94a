//! Per-CPU verdict counters.

/// Packets and bytes seen for one (direction, reason) slot of `SG_COUNTERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(size_of::<Counter>() == 16);

crate::impl_pod!(Counter);
