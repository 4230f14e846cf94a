//! The attached interfaces of this network namespace, as `sgctl status` shows them: attach
//! state, XDP mode, TC kind, policy, program and link ids, conntrack occupancy and every
//! verdict counter.

use serde::Serialize;
use sg_common::{
    Direction, Posture, Reason,
    config::{CONFIG_MONITOR, POLICY_GROUPS, XDP_MODE_TCX},
    conntrack::{CT_F_ADOPTED, CT_F_MIGRATED},
    layout::{InstanceMeta, LAYOUT},
    maps::{PROG_EGRESS, PROG_INGRESS},
};

use crate::{
    error::Result,
    iface,
    loader::{
        self, IngressHook,
        layout::{self, Found},
        open_pinned, pinned_link_id, pinned_prog_id, tc_kind_name, tcx_ingress_position, xdp_mode_name,
    },
    maps::{CtTable, ReasonCount},
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
    state,
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
    /// Where ingress is decided: `xdp` (then `xdp_mode` says how) or `tcx` (`--ingress-hook tcx`,
    /// beside another program on the XDP hook).
    pub ingress_hook: &'static str,
    /// TCX ingress: sgctl's place in the interface's TCX ingress chain ("1 of 2 in the chain").
    pub ingress_chain: Option<String>,
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
    /// What the interface enforces in groups mode: its security groups and network ACL.
    pub groups: Vec<String>,
    pub acl: Option<String>,
    /// Where that comes from: the applied rule set's source (`file PATH`, `daemon PATH`,
    /// `fleet ...`, `sgctl rule`), or `sgctl attach` for postures.
    pub source: String,
    pub attached_at: u64,
    pub ingress_prog_id: Option<u32>,
    pub egress_prog_id: Option<u32>,
    pub xdp_link_id: Option<u32>,
    pub tc_link_id: Option<u32>,
    /// The instance's datapath: its map layout and the build of its programs.
    pub datapath: DatapathStatus,
    pub conntrack: CtTotals,
    pub counters: Vec<ReasonCount>,
}

/// Which datapath an instance runs, against this sgctl's.
#[derive(Debug, Serialize)]
pub struct DatapathStatus {
    /// Map layout (`sg_common::layout`).
    pub layout: u32,
    /// The build of the running programs ("0.1.0 (git ...)").
    pub build: String,
    /// `current` (this sgctl's datapath), `differs` (same layout, other programs: `sgctl
    /// upgrade` replaces them), `older` (an older layout: `sgctl upgrade`), `newer` (a newer
    /// sgctl's: this one cannot read it), `unknown`.
    pub state: &'static str,
    /// One line for an operator, when not `current`.
    pub note: Option<String>,
    /// Upgrades done on the instance since its attach.
    pub upgrades: u32,
    /// Unix seconds of the last upgrade (0: none).
    pub upgraded_at: u64,
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
    /// Flows taken over from the socket table when sgctl was enabled (`adopt`), still tracked.
    pub adopted: usize,
    /// Flows carried over from an older datapath's tables by an upgrade, still tracked.
    pub migrated: usize,
}

/// Collects the status of every interface attached in the current network namespace (an
/// instance still being attached, with no XDP link yet, is not listed).
pub fn collect() -> Result<Status> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let dir = pins::netns_dir()?;
    let applied = state::current_state().ok().flatten();
    let mut interfaces = Vec::new();
    for name in pins::attached_ifaces()? {
        let d = dir.join(&name);
        if !d.join(PIN_LINK_XDP).exists() {
            continue;
        }
        // Another layout's maps cannot be read: what it is, and what to do.
        let found = layout::inspect(&d)?;
        if !matches!(found, Found::Current(_)) {
            interfaces.push(IfaceStatus::other_layout(name, &found));
            continue;
        }
        let Some(maps) = open_pinned(&d)? else { continue };
        let meta = maps.meta()?;
        let cfg = maps.config()?;
        let enforced = (cfg.policy_mode == POLICY_GROUPS)
            .then(|| {
                applied
                    .as_ref()
                    .filter(|s| s.seq == cfg.policy_seq)
                    .and_then(|s| s.ruleset.binding(&name).map(|b| (s, b)))
            })
            .flatten();
        let live = iface::ifindex(&name).ok() == Some(cfg.ifindex);
        interfaces.push(IfaceStatus {
            state: if live { "attached" } else { "stale" },
            ifindex: cfg.ifindex,
            ingress_hook: IngressHook::of_xdp_mode(cfg.xdp_mode).as_str(),
            ingress_chain: (live && cfg.xdp_mode == XDP_MODE_TCX)
                .then(|| tcx_ingress_position(&name, pinned_prog_id(&d.join(PROG_INGRESS)).ok()?))
                .flatten(),
            xdp_mode: xdp_mode_name(cfg.xdp_mode),
            tc_kind: tc_kind_name(cfg.tc_kind),
            policy: if cfg.policy_mode == POLICY_GROUPS { "groups" } else { "posture" },
            policy_seq: cfg.policy_seq,
            ingress: Posture::from_u8(cfg.ingress_posture).map_or("invalid", Posture::as_str),
            egress: Posture::from_u8(cfg.egress_posture).map_or("invalid", Posture::as_str),
            attached_at: cfg.attached_at,
            monitor: cfg.flags & CONFIG_MONITOR != 0,
            groups: enforced.map(|(_, b)| b.groups.clone()).unwrap_or_default(),
            acl: enforced.and_then(|(_, b)| b.acl.clone()),
            source: match (cfg.policy_mode == POLICY_GROUPS, enforced) {
                (false, _) => "sgctl attach (postures)".to_string(),
                (true, Some((s, _))) => s.source.clone().unwrap_or_else(|| "sgctl apply".to_string()),
                (true, None) => format!("rule set #{} (not the saved one)", cfg.policy_seq),
            },
            ingress_prog_id: pinned_prog_id(&d.join(PROG_INGRESS)).ok(),
            egress_prog_id: pinned_prog_id(&d.join(PROG_EGRESS)).ok(),
            xdp_link_id: pinned_link_id(&d.join(PIN_LINK_XDP)).ok(),
            tc_link_id: pinned_link_id(&d.join(PIN_LINK_TC)).ok(),
            datapath: DatapathStatus::of(&meta),
            conntrack: {
                let entries = maps.ct_entries()?;
                let est = entries.iter().filter(|(t, _, _)| *t == CtTable::Established).count();
                let flagged = |f: u8| entries.iter().filter(|(_, _, e)| e.flags & f != 0).count();
                CtTotals {
                    established: est,
                    established_capacity: maps.ct_capacity(CtTable::Established),
                    new: entries.len() - est,
                    new_capacity: maps.ct_capacity(CtTable::New),
                    ct_full_drops: Direction::ALL
                        .iter()
                        .map(|d| maps.counter(*d, Reason::CtFull).map_or(0, |c| c.packets))
                        .sum(),
                    adopted: flagged(CT_F_ADOPTED),
                    migrated: flagged(CT_F_MIGRATED),
                }
            },
            counters: maps.counters()?,
            iface: name,
        });
    }
    Ok(Status { netns_cookie: pins::current_netns_cookie()?, interfaces })
}

impl DatapathStatus {
    /// The datapath of an instance of this build's layout.
    fn of(meta: &InstanceMeta) -> Self {
        let current = meta.datapath == loader::datapath_hash();
        DatapathStatus {
            layout: meta.layout,
            build: meta.build_str().to_string(),
            state: if current { "current" } else { "differs" },
            note: (!current).then(|| {
                format!(
                    "runs the datapath of sgctl {}, not this sgctl's ({}): `sgctl upgrade` replaces it without a gap",
                    meta.build_str(),
                    loader::BUILD
                )
            }),
            upgrades: meta.upgrades,
            upgraded_at: meta.upgraded_at,
        }
    }
}

impl IfaceStatus {
    /// An instance whose maps this build cannot read: its layout and what to do.
    fn other_layout(iface: String, found: &Found) -> Self {
        let (state, layout, meta, note) = match found {
            Found::Older { layout, meta } => (
                "older",
                *layout,
                *meta,
                format!(
                    "runs an older datapath (map layout {layout}, this sgctl uses {LAYOUT}): `sgctl upgrade {iface}` \
                     replaces it without a gap and keeps its flows"
                ),
            ),
            Found::Newer(m) => (
                "newer",
                m.layout,
                Some(*m),
                format!(
                    "was attached by a newer sgctl ({}, map layout {}): use that build; this one cannot read its maps",
                    m.build_str(),
                    m.layout
                ),
            ),
            Found::Unknown(d) => ("unknown", 0, None, format!("pinned maps of an unknown layout ({d})")),
            Found::Current(m) => ("current", m.layout, Some(*m), String::new()),
        };
        IfaceStatus {
            state: "attached",
            ifindex: iface::ifindex(&iface).unwrap_or(0),
            ingress_hook: "unknown",
            ingress_chain: None,
            xdp_mode: "unknown",
            tc_kind: "unknown",
            policy: "unknown",
            policy_seq: 0,
            ingress: "unknown",
            egress: "unknown",
            monitor: false,
            groups: Vec::new(),
            acl: None,
            source: String::new(),
            attached_at: 0,
            ingress_prog_id: None,
            egress_prog_id: None,
            xdp_link_id: None,
            tc_link_id: None,
            datapath: DatapathStatus {
                layout,
                build: meta
                    .map_or_else(|| "before layouts were numbered".into(), |m| m.build_str().to_string()),
                state,
                note: Some(note),
                upgrades: meta.map_or(0, |m| m.upgrades),
                upgraded_at: meta.map_or(0, |m| m.upgraded_at),
            },
            conntrack: CtTotals {
                established: 0,
                established_capacity: 0,
                new: 0,
                new_capacity: 0,
                ct_full_drops: 0,
                adopted: 0,
                migrated: 0,
            },
            counters: Vec::new(),
            iface,
        }
    }
}
