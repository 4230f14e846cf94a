//! Facts about network interfaces in the current network namespace.
//!
//! Only namespace-aware interfaces are used (ioctl on a socket, netlink via `ip`), never
//! /sys/class/net: a process that entered a namespace with setns still sees the sysfs of the
//! namespace that mounted it.

use std::{ffi::CString, net::IpAddr, process::Command};

use crate::error::{Error, Result};

/// Index of `name`, or `NoSuchInterface`.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_string()))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(Error::NoSuchInterface(name.to_string())) } else { Ok(idx) }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
struct IfReqData {
    name: [u8; libc::IF_NAMESIZE],
    data: *mut EthtoolDrvinfo,
    _pad: [u8; 16],
}

/// Kernel driver of `name` (`veth`, `virtio_net`, `mlx5_core`, ...), via ETHTOOL_GDRVINFO.
/// `None` for interfaces without ethtool support (e.g. `lo`).
pub fn driver(name: &str) -> Option<String> {
    if name.len() >= libc::IF_NAMESIZE {
        return None;
    }
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfReqData { name: [0; libc::IF_NAMESIZE], data: &raw mut info, _pad: [0; 16] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: req points to a valid ifreq whose data points to a valid ethtool_drvinfo.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &raw mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The XDP program currently attached to `name`, described for an error message
/// ("program 42 `xdp_filter` (native mode)"), via `ip -j -d link show`.
pub fn xdp_holder(name: &str) -> Option<String> {
    let out = Command::new("ip").args(["-j", "-d", "link", "show", "dev", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let xdp = v.get(0)?.get("xdp")?;
    let mode = match xdp.get("mode").and_then(serde_json::Value::as_u64) {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offload",
        Some(4) => "multi",
        _ => "unknown",
    };
    let id = xdp.get("prog").and_then(|p| p.get("id")).and_then(serde_json::Value::as_u64).or_else(|| {
        xdp.get("attached")?.as_array()?.iter().find_map(|a| a.get("prog")?.get("id")?.as_u64())
    })?;
    let prog_name = aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|p| u64::from(p.id()) == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    Some(format!("program {id} `{prog_name}` ({mode} mode)"))
}

/// The addresses of `iface` in the current network namespace.
pub fn addrs(iface: &str) -> Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(std::io::Error::from)
        .map_err(|source| Error::Io { what: "getifaddrs".into(), source })?;
    Ok(addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let s = a.address?;
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

/// Makes the instance's `SG_LOCAL` the interface's addresses as the kernel has them now (the
/// datapath drops packets that arrive with one as their source); returns how many entries
/// changed.
pub fn refresh_local(iface: &str, maps: &mut crate::maps::InstanceMaps) -> Result<usize> {
    let n = maps.set_local_addrs(&addrs(iface)?)?;
    if n > 0 {
        log::debug!("{iface}: own addresses updated ({n} changes)");
    }
    Ok(n)
}
