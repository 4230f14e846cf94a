//! The attached interfaces of this network namespace, as `sgctl status` shows them: attach
//! state, XDP mode, TC kind, policy, program and link ids, conntrack occupancy and every
//! verdict counter.

use serde::Serialize;
use sg_common::{
    Direction, Posture, Reason,
    config::{CONFIG_MONITOR, POLICY_GROUPS},
    maps::{PROG_EGRESS, PROG_INGRESS},
};

use crate::{
    error::Result,
    iface,
    loader::{open_pinned, pinned_link_id, pinned_prog_id, tc_kind_name, xdp_mode_name},
    maps::{CtTable, ReasonCount},
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub netns_cookie: u64,
    pub interfaces: Vec<IfaceStatus>,
}

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub iface: String,
    /// `attached`, or `stale` when the interface was deleted or re-created since the attach.
    pub state: &'static str,
    pub ifindex: u32,
    pub xdp_mode: &'static str,
    pub tc_kind: &'static str,
    /// `posture` or `groups`.
    pub policy: &'static str,
    /// Rule set applied (`groups`), as numbered by sgctl apply.
    pub policy_seq: u64,
    pub ingress: &'static str,
    pub egress: &'static str,
    /// Monitor mode (`attach --monitor on`): drops are counted, not enforced.
    pub monitor: bool,
    pub attached_at: u64,
    pub ingress_prog_id: Option<u32>,
    pub egress_prog_id: Option<u32>,
    pub xdp_link_id: Option<u32>,
    pub tc_link_id: Option<u32>,
    pub conntrack: CtTotals,
    pub counters: Vec<ReasonCount>,
}

/// Conntrack occupancy of an interface.
#[derive(Debug, Serialize)]
pub struct CtTotals {
    /// Flows in `SG_CT` (both directions seen) and its capacity.
    pub established: usize,
    pub established_capacity: u32,
    /// Flows in `SG_CT_NEW` (LRU, not answered yet) and its capacity.
    pub new: usize,
    pub new_capacity: u32,
    /// Packets dropped because a flow could not be tracked (both directions).
    pub ct_full_drops: u64,
}

/// Collects the status of every interface attached in the current network namespace (an
/// instance still being attached, with no XDP link yet, is not listed).
pub fn collect() -> Result<Status> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let dir = pins::netns_dir()?;
    let mut interfaces = Vec::new();
    for name in pins::attached_ifaces()? {
        let d = dir.join(&name);
        let Some(maps) = open_pinned(&d)? else { continue };
        let cfg = maps.config()?;
        let live = iface::ifindex(&name).ok() == Some(cfg.ifindex);
        interfaces.push(IfaceStatus {
            state: if live { "attached" } else { "stale" },
            ifindex: cfg.ifindex,
            xdp_mode: xdp_mode_name(cfg.xdp_mode),
            tc_kind: tc_kind_name(cfg.tc_kind),
            policy: if cfg.policy_mode == POLICY_GROUPS { "groups" } else { "posture" },
            policy_seq: cfg.policy_seq,
            ingress: Posture::from_u8(cfg.ingress_posture).map_or("invalid", Posture::as_str),
            egress: Posture::from_u8(cfg.egress_posture).map_or("invalid", Posture::as_str),
            attached_at: cfg.attached_at,
            monitor: cfg.flags & CONFIG_MONITOR != 0,
            ingress_prog_id: pinned_prog_id(&d.join(PROG_INGRESS)).ok(),
            egress_prog_id: pinned_prog_id(&d.join(PROG_EGRESS)).ok(),
            xdp_link_id: pinned_link_id(&d.join(PIN_LINK_XDP)).ok(),
            tc_link_id: pinned_link_id(&d.join(PIN_LINK_TC)).ok(),
            conntrack: {
                let entries = maps.ct_entries()?;
                let est = entries.iter().filter(|(t, _, _)| *t == CtTable::Established).count();
                CtTotals {
                    established: est,
                    established_capacity: maps.ct_capacity(CtTable::Established),
                    new: entries.len() - est,
                    new_capacity: maps.ct_capacity(CtTable::New),
                    ct_full_drops: Direction::ALL
                        .iter()
                        .map(|d| maps.counter(*d, Reason::CtFull).map_or(0, |c| c.packets))
                        .sum(),
                }
            },
            counters: maps.counters()?,
            iface: name,
        });
    }
    Ok(Status { netns_cookie: pins::current_netns_cookie()?, interfaces })
}
