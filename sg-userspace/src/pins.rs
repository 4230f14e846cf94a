//! Where an instance lives on bpffs.
//!
//! `/sys/fs/bpf/sg/<netns cookie>/<interface>/` holds, for one attached interface: the programs
//! (`sg_ingress`, `sg_egress`), the links (`link_xdp`, `link_tc`) and every map (by its name in
//! `sg_common::maps`). bpffs is shared by all network namespaces while interface names are
//! not, hence the namespace in the path: its cookie (SO_NETNS_COOKIE), which unlike its inode
//! number is never reused while the machine runs, so a new namespace cannot inherit the pins
//! of a deleted one. Directories are created 0700.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Context as _, Error, Result};

/// Mount point of the BPF filesystem.
pub const BPFFS: &str = "/sys/fs/bpf";
/// sgctl's directory on bpffs.
pub const SG_DIR: &str = "/sys/fs/bpf/sg";

/// Pin names inside an interface directory (besides the maps, pinned by their names).
pub const PIN_LINK_XDP: &str = "link_xdp";
pub const PIN_LINK_TC: &str = "link_tc";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails with `BpffsMissing` unless /sys/fs/bpf is a mounted bpffs, and with
/// `PrivateSys` when this process sees a private /sys (`ip netns exec` mounts one): pins made
/// there would vanish with the shell, and the host's are not visible.
pub fn check_bpffs() -> Result<()> {
    if let Some(ns) = private_sys_netns() {
        return Err(Error::PrivateSys { netns: ns });
    }
    match nix::sys::statfs::statfs(BPFFS) {
        Ok(st) if st.filesystem_type().0 == BPF_FS_MAGIC => Ok(()),
        _ => Err(Error::BpffsMissing(PathBuf::from(BPFFS))),
    }
}

/// The network namespace NAME when this process runs under `ip netns exec NAME`: that mounts
/// a sysfs of its own on /sys, with NAME as its source (`/proc/self/mountinfo`), which hides
/// the host's /sys/fs/bpf (a bpffs mounted there then would vanish with the shell).
fn private_sys_netns() -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    private_sys_of(&info, |name| Path::new("/run/netns").join(name).exists())
}

/// [`private_sys_netns`] of a mountinfo text; `named` says whether a namespace of that name
/// exists. The last mount on /sys is the one in effect.
fn private_sys_of(mountinfo: &str, named: impl Fn(&str) -> bool) -> Option<String> {
    let sys = mountinfo.lines().rev().find(|l| l.split_whitespace().nth(4) == Some("/sys"))?;
    // "... - FSTYPE SOURCE OPTIONS"
    let mut after = sys.split(" - ").nth(1)?.split_whitespace();
    let (fstype, source) = (after.next()?, after.next()?);
    (fstype == "sysfs" && source != "sysfs" && source != "none" && named(source)).then(|| source.to_string())
}

/// Fails with `NotRoot` unless the effective uid is 0.
pub fn check_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(Error::NotRoot) }
}

/// `SO_NETNS_COOKIE` (Linux >= 5.14): a namespace id unique for the machine's uptime.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> Result<u64> {
    // SAFETY: plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context(|| "socket for SO_NETNS_COOKIE".to_string());
    }
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, pointer and length.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE, (&raw mut cookie).cast(), &raw mut len)
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err).context(|| "getsockopt(SO_NETNS_COOKIE) (needs Linux >= 5.14)".to_string());
    }
    Ok(cookie)
}

/// `/sys/fs/bpf/sg/<netns cookie>` for the current network namespace.
pub fn netns_dir() -> Result<PathBuf> {
    Ok(netns_dir_for(current_netns_cookie()?))
}

pub fn netns_dir_for(cookie: u64) -> PathBuf {
    Path::new(SG_DIR).join(cookie.to_string())
}

/// Fails with `BadInterfaceName` unless `name` is a valid Linux interface name (1-15 bytes,
/// not `.` or `..`, no `/`, `:` or whitespace): names become pin paths, so nothing may climb
/// out of the pin directory.
pub fn check_iface_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace());
    if bad { Err(Error::BadInterfaceName(name.to_string())) } else { Ok(()) }
}

/// The directory of `iface`'s instance in the current network namespace.
pub fn iface_dir(iface: &str) -> Result<PathBuf> {
    check_iface_name(iface)?;
    Ok(netns_dir()?.join(iface))
}

/// Creates `dir` and its parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(|| format!("creating {}", dir.display()))
}

/// Names of the interfaces with an instance directory in the current network namespace.
pub fn attached_ifaces() -> Result<Vec<String>> {
    let dir = netns_dir()?;
    let mut names = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `dir` (an instance directory) and, if it was the last, the namespace directory.
/// Removing a pin drops the kernel object once nothing else holds it: links detach.
pub fn remove_instance_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(|| format!("removing {}", dir.display())),
    }
    if let Some(parent) = dir.parent() {
        // Only succeeds when empty; other interfaces keep it alive.
        let _ = fs::remove_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::private_sys_of;

    #[test]
    fn ip_netns_exec_is_recognised_by_its_sysfs() {
        let host = "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n";
        let exec =
            "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n70 67 0:41 / /sys rw,relatime - sysfs uA rw\n";
        assert_eq!(private_sys_of(host, |_| true), None);
        assert_eq!(private_sys_of(exec, |n| n == "uA"), Some("uA".to_string()));
        assert_eq!(private_sys_of(exec, |_| false), None, "not a named namespace");
    }
}
