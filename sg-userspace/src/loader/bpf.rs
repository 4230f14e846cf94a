//! The few bpf(2) commands an upgrade needs that aya 0.14 does not offer in the form needed:
//! a pinned object's fd, a link's program and interface, a map's description by the kernel,
//! an entry read as raw bytes, and a link's program replaced only if it still runs the one
//! expected (`BPF_LINK_UPDATE` with `BPF_F_REPLACE`, compare-and-swap).
//!
//! Each call fills a zeroed `bpf_attr` (the kernel requires the bytes it does not know to be
//! zero) at the offsets of `include/uapi/linux/bpf.h`.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use crate::error::{Context as _, Result};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `BPF_LINK_UPDATE`: replace only if the link runs `old_prog_fd`'s program.
const BPF_F_REPLACE: u32 = 1 << 2;

/// `enum bpf_link_type`: XDP and TCX links.
pub const LINK_TYPE_XDP: u32 = 6;
pub const LINK_TYPE_TCX: u32 = 11;

/// A zeroed `union bpf_attr`, written field by field.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }

    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: bpf(2) with a zero-filled attr of 128 bytes, every pointer in it valid for
        // the call (set by the callers from live buffers).
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), self.0.len()) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
    }
}

/// The pinned object at `path` (map, program or link), opened.
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        .context(|| format!("opening {}", path.display()))?;
    let fd = Attr::new()
        .u64(0, c.as_ptr() as u64)
        .call(BPF_OBJ_GET)
        .context(|| format!("opening {}", path.display()))?;
    // SAFETY: a new fd the kernel returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` (the kernel fills what it has).
fn info(fd: BorrowedFd<'_>, info: &mut [u8]) -> io::Result<()> {
    Attr::new()
        .u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64)
        .call(BPF_OBJ_GET_INFO_BY_FD)
        .map(drop)
}

fn word(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// What the kernel says of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// `enum bpf_link_type`.
    pub kind: u32,
    pub id: u32,
    pub prog_id: u32,
    /// XDP and TCX links: the interface (0 once the interface is gone).
    pub ifindex: u32,
}

/// `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the per-type union whose first
/// word is the ifindex for XDP and TCX links.
pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo> {
    let mut b = [0u8; 64];
    info(fd, &mut b).context(|| "reading a link's info".to_string())?;
    let kind = word(&b, 0);
    let ifindex = if matches!(kind, LINK_TYPE_XDP | LINK_TYPE_TCX) { word(&b, 16) } else { 0 };
    Ok(LinkInfo { kind, id: word(&b, 4), prog_id: word(&b, 8), ifindex })
}

/// The id of a program.
pub fn prog_id(fd: BorrowedFd<'_>) -> Result<u32> {
    // struct bpf_prog_info: type, id, ...
    let mut b = [0u8; 16];
    info(fd, &mut b).context(|| "reading a program's info".to_string())?;
    Ok(word(&b, 4))
}

/// What the kernel says of a map: the fields a layout is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapInfo {
    /// `enum bpf_map_type`.
    pub kind: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// `struct bpf_map_info`: type, id, key_size, value_size, max_entries, map_flags, ...
pub fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo> {
    let mut b = [0u8; 32];
    info(fd, &mut b).context(|| "reading a map's info".to_string())?;
    Ok(MapInfo {
        kind: word(&b, 0),
        id: word(&b, 4),
        key_size: word(&b, 8),
        value_size: word(&b, 12),
        max_entries: word(&b, 16),
        flags: word(&b, 20),
    })
}

/// Entry `key` of an array map as raw bytes (`value_size` of them); a map of another layout
/// than this build's is read this way.
pub fn lookup_raw(fd: BorrowedFd<'_>, key: u32, value_size: u32) -> Result<Vec<u8>> {
    let mut v = vec![0u8; value_size as usize];
    let k = key.to_ne_bytes();
    Attr::new()
        .u32(0, fd.as_raw_fd() as u32)
        .u64(8, k.as_ptr() as u64)
        .u64(16, v.as_mut_ptr() as u64)
        .call(BPF_MAP_LOOKUP_ELEM)
        .context(|| "reading a map entry".to_string())?;
    Ok(v)
}

/// Replaces the program of link `link` with `new`, only if it still runs `old`
/// (`BPF_F_REPLACE`): atomic for XDP and TCX links, a packet runs the old program or the new.
pub fn link_update(link: BorrowedFd<'_>, new: BorrowedFd<'_>, old: BorrowedFd<'_>) -> io::Result<()> {
    Attr::new()
        .u32(0, link.as_raw_fd() as u32)
        .u32(4, new.as_raw_fd() as u32)
        .u32(8, BPF_F_REPLACE)
        .u32(12, old.as_raw_fd() as u32)
        .call(BPF_LINK_UPDATE)
        .map(drop)
}
