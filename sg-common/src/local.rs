//! The interface's own addresses, as the datapath checks them: a packet arriving from outside
//! with one of them as its source is spoofed or looped, creates no state and is dropped
//! (`src_is_local`). Userspace keeps `SG_LOCAL` equal to the kernel's addresses of the
//! interface (at attach, at every apply, and in the daemon as they change).

/// Key of `SG_LOCAL`: an address (IPv4 in the first 4 bytes) and its family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    pub addr: [u8; 16],
    /// `packet::FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<LocalAddr>() == 20);

/// Addresses `SG_LOCAL` holds per interface.
pub const LOCAL_MAX_ENTRIES: u32 = 256;

crate::impl_pod!(LocalAddr);
