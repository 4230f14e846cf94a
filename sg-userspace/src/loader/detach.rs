//! Detaching: sgctl's links, programs and maps go; nothing else is touched.

use std::path::PathBuf;

use std::os::fd::AsFd as _;

use aya::programs::{TcAttachType, tc};
use sg_common::maps::PROG_EGRESS;

use super::bpf;
use crate::{
    error::{Error, Result},
    iface,
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
};

#[derive(Clone, Debug, serde::Serialize)]
pub struct DetachReport {
    pub iface: String,
    pub pin_dir: PathBuf,
    /// The interface no longer existed (only the pins were removed).
    pub interface_gone: bool,
}

/// Detaches sgctl from `iface`: removes its links, programs and maps (pins), nothing else.
pub fn detach(iface_name: &str) -> Result<DetachReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let dir = pins::iface_dir(iface_name)?;
    if !dir.is_dir() {
        return Err(Error::NotAttached { iface: iface_name.to_string(), dir });
    }
    // Read without the maps (any layout, also an older or newer build's): the XDP link says
    // whether the instance is on this interface; without a pinned TCX link the egress is a
    // classic clsact filter.
    let current = iface::ifindex(iface_name).ok();
    let linked = bpf::obj_get(&dir.join(PIN_LINK_XDP)).and_then(|l| bpf::link_info(l.as_fd())).ok();
    let same_iface = matches!((linked, current), (Some(l), Some(i)) if l.ifindex == i);
    if same_iface && !dir.join(PIN_LINK_TC).exists() {
        // A clsact filter has no pin: it is removed by name.
        match tc::qdisc_detach_program(iface_name, TcAttachType::Egress, PROG_EGRESS) {
            Ok(()) => {}
            Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Inconsistent {
                    iface: iface_name.to_string(),
                    detail: format!("removing the clsact filter: {e}"),
                });
            }
        }
    }
    // Removing the pins releases the links (detaching XDP and TCX), then programs and maps.
    pins::remove_instance_dir(&dir)?;
    Ok(DetachReport { iface: iface_name.to_string(), pin_dir: dir, interface_gone: current.is_none() })
}
