//! Loading the embedded eBPF object, attaching it to an interface (pinned, so enforcement
//! outlives sgctl), detaching it, and private instances for BPF_PROG_TEST_RUN.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use sg_common::{
    Direction, IfaceConfig, Posture,
    config::{
        CONFIG_IMPLICIT_MASK, CONFIG_MONITOR, CONFIG_VALID, POLICY_GROUPS, POLICY_POSTURE, TC_KIND_CLSACT,
        TC_KIND_NONE, TC_KIND_TCX, XDP_MODE_GENERIC, XDP_MODE_NATIVE, XDP_MODE_NONE,
    },
    conntrack::CtTimeouts,
    maps::{ALL_MAPS, CT_MAX_ENTRIES, CT_NEW_MAX_ENTRIES, MAP_CT, MAP_CT_NEW, PROG_EGRESS, PROG_INGRESS},
};

use crate::{
    error::{Context as _, Error, Result},
    iface,
    maps::InstanceMaps,
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
    rules::compile::IfacePlan,
};

/// The eBPF object built by build.rs (aya-build) from `sg-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-ebpf"));

/// The benchmark-only object (`sg-ebpf/src/bin/sg-bench.rs`): bare XDP_PASS/XDP_DROP baselines
/// and the XDP_TX traffic generator. sgctl itself never loads it.
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-bench"));

/// Loads the object and both programs into the kernel (not attached), with the default
/// conntrack sizes.
pub fn load_object() -> Result<Ebpf> {
    load_object_sized(CtSizes::default())
}

/// Sizes of the conntrack tables of an instance (fixed when the instance is loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtSizes {
    /// `SG_CT`: flows that saw both directions.
    pub established: u32,
    /// `SG_CT_NEW`: flows not answered yet (LRU).
    pub new: u32,
}

impl Default for CtSizes {
    fn default() -> Self {
        CtSizes { established: CT_MAX_ENTRIES, new: CT_NEW_MAX_ENTRIES }
    }
}

/// Loads the object with conntrack tables of the given sizes.
pub fn load_object_sized(sizes: CtSizes) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_CT, sizes.established)
        .map_max_entries(MAP_CT_NEW, sizes.new)
        .load(EBPF_OBJECT)
        .map_err(Box::new)?;
    xdp_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_INGRESS}"))?;
    tc_mut(&mut ebpf)?.load().context(|| format!("loading {PROG_EGRESS}"))?;
    Ok(ebpf)
}

fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf.program_mut(PROG_INGRESS).ok_or(Error::MissingInObject(PROG_INGRESS))?;
    <&mut Xdp>::try_from(prog).context(|| PROG_INGRESS.to_string())
}

fn tc_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog = ebpf.program_mut(PROG_EGRESS).ok_or(Error::MissingInObject(PROG_EGRESS))?;
    <&mut SchedClassifier>::try_from(prog).context(|| PROG_EGRESS.to_string())
}

/// Whether the running kernel has TCX (Linux >= 6.6).
fn kernel_has_tcx() -> bool {
    aya::util::KernelVersion::current()
        .is_ok_and(|v| v.code() >= aya::util::KernelVersion::new(6, 6, 0).code())
}

/// A loaded instance that is attached nowhere: packets reach it only through
/// BPF_PROG_TEST_RUN. Used by the verdict tables (and any dry run on real programs).
pub struct PrivateInstance {
    ebpf: Ebpf,
    maps: InstanceMaps,
}

impl PrivateInstance {
    /// Loads a fresh instance (its own maps) and writes `cfg` (marked valid).
    pub fn load(cfg: &IfaceConfig) -> Result<Self> {
        Self::load_sized(cfg, CtSizes::default())
    }

    /// As [`Self::load`], with conntrack tables of the given sizes.
    pub fn load_sized(cfg: &IfaceConfig, sizes: CtSizes) -> Result<Self> {
        let mut ebpf = load_object_sized(sizes)?;
        let mut maps = InstanceMaps::take_from(&mut ebpf)?;
        maps.set_config(&IfaceConfig { flags: cfg.flags | CONFIG_VALID, ..*cfg })?;
        Ok(Self { ebpf, maps })
    }

    pub fn maps(&self) -> &InstanceMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut InstanceMaps {
        &mut self.maps
    }

    /// Writes `plan` into the inactive generation and flips to it, switching the instance to
    /// security groups: the same two steps as `sgctl apply` on a live interface.
    pub fn apply_plan(&mut self, plan: &IfacePlan, seq: u64) -> Result<()> {
        self.apply_plan_with(plan, seq, false)
    }

    /// As [`Self::apply_plan`]; with `revoke`, tracked flows the new rules do not allow end
    /// (on their next packet), as `sgctl apply --revoke`.
    pub fn apply_plan_with(&mut self, plan: &IfacePlan, seq: u64, revoke: bool) -> Result<()> {
        let cfg = self.maps.config()?;
        let gen_ = if cfg.policy_mode == POLICY_GROUPS { (cfg.active_gen & 1) ^ 1 } else { 0 };
        self.maps.write_generation(gen_, plan)?;
        self.maps.set_config(&IfaceConfig {
            policy_mode: POLICY_GROUPS,
            active_gen: gen_,
            policy_seq: seq,
            revoke_seq: if revoke { seq } else { cfg.revoke_seq },
            ct_timeouts: plan.timeouts,
            flags: sg_common::config::with_monitor(
                (cfg.flags & !CONFIG_IMPLICIT_MASK) | plan.no_implicit,
                plan.monitor,
            ),
            ..cfg
        })
    }

    /// Turns flow-log events on (`CONFIG_FLOW_LOG`) with the given rate limits, as
    /// `sgctl daemon --flow-log` does on an attached interface (nothing reads the events).
    pub fn set_flow_log(&mut self, limits: &sg_common::flowlog::FlowLogConfig) -> Result<()> {
        let name = sg_common::maps::MAP_FLOW_CFG;
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingInObject(name))?;
        let mut arr: aya::maps::Array<_, sg_common::flowlog::FlowLogConfig> =
            aya::maps::Array::try_from(map).context(|| name.to_string())?;
        arr.set(0, limits, 0).context(|| format!("writing {name}"))?;
        let cfg = self.maps.config()?;
        self.maps.set_config(&IfaceConfig { flags: cfg.flags | sg_common::config::CONFIG_FLOW_LOG, ..cfg })
    }

    /// Every item waiting in the flow-log ring buffer (tests read what the datapath emitted).
    pub fn flow_items(&mut self) -> Result<Vec<crate::maps::FlowItem>> {
        let name = sg_common::maps::MAP_FLOW_EVENTS;
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingInObject(name))?;
        let mut ring = aya::maps::RingBuf::try_from(map).context(|| name.to_string())?;
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            out.extend(crate::maps::FlowItem::parse(&item));
        }
        Ok(out)
    }

    /// Runs `frame` through the program of `dir` once; returns the program's return value
    /// (XDP action for ingress, TC action as u32 for egress).
    pub fn run(&mut self, dir: Direction, frame: &[u8]) -> Result<u32> {
        Ok(self.run_timed(dir, frame, 1)?.0)
    }

    /// Ids of the maps either program uses (every map of the instance), for memory accounting.
    pub fn map_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for name in [PROG_INGRESS, PROG_EGRESS] {
            let prog = self.ebpf.program(name).ok_or(Error::MissingInObject(name))?;
            let info = prog.info().context(|| format!("{name}: program info"))?;
            ids.extend(info.map_ids().context(|| format!("{name}: map ids"))?.unwrap_or_default());
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Runs `frame` through the program of `dir` `repeat` times in one BPF_PROG_TEST_RUN call;
    /// returns the last return value and the kernel's average time per run.
    pub fn run_timed(&mut self, dir: Direction, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() };
        let res = match dir {
            Direction::Ingress => xdp_mut(&mut self.ebpf)?.test_run(opts),
            Direction::Egress => tc_mut(&mut self.ebpf)?.test_run(opts),
        };
        let res = res.context(|| format!("BPF_PROG_TEST_RUN on {} program", dir.as_str()))?;
        Ok((res.return_value, res.duration))
    }
}

/// `--mode` of `sgctl attach`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeRequest {
    /// veth: generic (native XDP on veth segments GSO traffic); other drivers: native, falling
    /// back to generic when the driver has no XDP support.
    Auto,
    Native,
    Generic,
}

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TcRequest {
    /// TCX on Linux >= 6.6, classic clsact before.
    Auto,
    Tcx,
    Clsact,
}

#[derive(Clone, Debug)]
pub struct AttachRequest {
    pub iface: String,
    pub mode: ModeRequest,
    pub tc: TcRequest,
    /// `None`: keep the current posture (default for a new attach: ingress deny).
    pub ingress: Option<Posture>,
    /// `None`: keep the current posture (default for a new attach: egress allow).
    pub egress: Option<Posture>,
    /// Conntrack table sizes for a new attach (an attached interface keeps its own).
    pub ct_sizes: CtSizes,
    /// `CONFIG_NO_IMPLICIT_*` bits to set (replacing the current ones); `None`: keep.
    pub no_implicit: Option<u32>,
    /// Monitor mode on or off (`CONFIG_MONITOR`); `None`: keep (new attach: off). Allowed in
    /// groups mode too: it changes enforcement, not the policy.
    pub monitor: Option<bool>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachReport {
    pub iface: String,
    /// `false` when the interface was already attached (postures updated in place).
    pub newly_attached: bool,
    pub xdp_mode: &'static str,
    /// Why this XDP mode, when sgctl chose it.
    pub mode_note: Option<String>,
    pub tc_kind: &'static str,
    pub ingress: &'static str,
    pub egress: &'static str,
    pub ingress_prog_id: u32,
    pub egress_prog_id: u32,
    pub pin_dir: PathBuf,
}

pub const fn xdp_mode_name(mode: u8) -> &'static str {
    match mode {
        XDP_MODE_NATIVE => "native",
        XDP_MODE_GENERIC => "generic",
        XDP_MODE_NONE => "none",
        _ => "unknown",
    }
}

pub const fn tc_kind_name(kind: u8) -> &'static str {
    match kind {
        TC_KIND_TCX => "tcx",
        TC_KIND_CLSACT => "clsact",
        TC_KIND_NONE => "none",
        _ => "unknown",
    }
}

fn posture_name(p: u8) -> &'static str {
    Posture::from_u8(p).map_or("invalid", Posture::as_str)
}

/// Program id of a pinned program.
pub fn pinned_prog_id(path: &Path) -> Result<u32> {
    Ok(aya::programs::ProgramInfo::from_pin(path).context(|| format!("reading {}", path.display()))?.id())
}

/// Link id of a pinned link.
pub fn pinned_link_id(path: &Path) -> Result<u32> {
    let link = PinnedLink::from_pin(path).context(|| format!("reading {}", path.display()))?;
    let fd: FdLink = link.into();
    let info = fd.info().context(|| format!("reading {}", path.display()))?;
    // Dropping `fd` closes our descriptor only: the pin keeps the link.
    Ok(info.id())
}

/// The errno inside a program error, if it came from a syscall.
fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Removes a half-made instance directory unless disarmed: nothing half-applied survives.
struct Rollback<'a> {
    dir: &'a Path,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = pins::remove_instance_dir(self.dir)
        {
            log::error!("rollback of {}: {e}", self.dir.display());
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Attaches sgctl to `req.iface` (idempotent: an attached interface gets its postures
/// updated in place, same programs, no re-attach).
pub fn attach(req: &AttachRequest) -> Result<AttachReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let ifindex = iface::ifindex(&req.iface)?;
    let dir = pins::iface_dir(&req.iface)?;
    if dir.is_dir() {
        if let Some(report) = update_existing(req, ifindex, &dir)? {
            return Ok(report);
        }
        log::warn!("{}: removing stale pins of a previous attach", req.iface);
        pins::remove_instance_dir(&dir)?;
    }
    attach_new(req, ifindex, &dir, None)
}

/// An interface sgctl is attached to, with its maps open.
pub struct Attached {
    pub iface: String,
    pub dir: PathBuf,
    pub maps: InstanceMaps,
}

/// Opens the live instance of `iface`, if sgctl is attached to it (stale pins of a deleted
/// interface are removed and count as not attached).
pub fn open_attached(iface_name: &str) -> Result<Option<Attached>> {
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    if !dir.is_dir() {
        return Ok(None);
    }
    if let Ok(maps) = InstanceMaps::from_pins(&dir)
        && let Ok(cfg) = maps.config()
        && cfg.is_valid()
        && cfg.ifindex == ifindex
        && dir.join(PIN_LINK_XDP).exists()
    {
        return Ok(Some(Attached { iface: iface_name.to_string(), dir, maps }));
    }
    log::warn!("{iface_name}: removing stale pins of a previous attach");
    pins::remove_instance_dir(&dir)?;
    Ok(None)
}

/// Attaches `iface` with a security-group policy already in place (generation 0) before the
/// first packet reaches the programs. Used by `sgctl apply` for interfaces new to it.
pub fn attach_with_policy(
    iface_name: &str,
    mode: ModeRequest,
    plan: &IfacePlan,
    seq: u64,
) -> Result<AttachReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    let req = AttachRequest {
        iface: iface_name.to_string(),
        mode,
        tc: TcRequest::Auto,
        ingress: None,
        egress: None,
        ct_sizes: CtSizes::default(),
        no_implicit: None,
        monitor: None,
    };
    attach_new(&req, ifindex, &dir, Some((plan, seq)))
}

/// `Some(report)` when `dir` holds a live instance for `ifindex` (postures updated);
/// `None` when it is stale (interface deleted and re-created, or half-removed).
fn update_existing(req: &AttachRequest, ifindex: u32, dir: &Path) -> Result<Option<AttachReport>> {
    let Ok(mut maps) = InstanceMaps::from_pins(dir) else { return Ok(None) };
    let mut cfg = maps.config()?;
    if !cfg.is_valid() || cfg.ifindex != ifindex || !dir.join(PIN_LINK_XDP).exists() {
        return Ok(None);
    }
    let requested = match req.mode {
        ModeRequest::Native => Some(XDP_MODE_NATIVE),
        ModeRequest::Generic => Some(XDP_MODE_GENERIC),
        ModeRequest::Auto => None,
    };
    if let Some(m) = requested
        && m != cfg.xdp_mode
    {
        return Err(Error::ModeMismatch {
            iface: req.iface.clone(),
            current: xdp_mode_name(cfg.xdp_mode),
            requested: xdp_mode_name(m),
        });
    }
    if cfg.policy_mode == POLICY_GROUPS
        && (req.ingress.is_some() || req.egress.is_some() || req.no_implicit.is_some())
    {
        return Err(Error::ManagedByRules(req.iface.clone()));
    }
    if let Some(bits) = req.no_implicit {
        cfg.flags = (cfg.flags & !CONFIG_IMPLICIT_MASK) | bits;
    }
    cfg.flags = sg_common::config::with_monitor(cfg.flags, req.monitor);
    if let Some(p) = req.ingress {
        cfg.ingress_posture = p as u8;
    }
    if let Some(p) = req.egress {
        cfg.egress_posture = p as u8;
    }
    maps.set_config(&cfg)?;
    Ok(Some(AttachReport {
        iface: req.iface.clone(),
        newly_attached: false,
        xdp_mode: xdp_mode_name(cfg.xdp_mode),
        mode_note: None,
        tc_kind: tc_kind_name(cfg.tc_kind),
        ingress: posture_name(cfg.ingress_posture),
        egress: posture_name(cfg.egress_posture),
        ingress_prog_id: pinned_prog_id(&dir.join(PROG_INGRESS))?,
        egress_prog_id: pinned_prog_id(&dir.join(PROG_EGRESS))?,
        pin_dir: dir.to_path_buf(),
    }))
}

fn attach_new(
    req: &AttachRequest,
    ifindex: u32,
    dir: &Path,
    policy: Option<(&IfacePlan, u64)>,
) -> Result<AttachReport> {
    let driver = iface::driver(&req.iface);
    let (mut mode, mut note) = match req.mode {
        ModeRequest::Native => (XdpMode::Driver, None),
        ModeRequest::Generic => (XdpMode::Skb, None),
        ModeRequest::Auto if driver.as_deref() == Some("veth") => (
            XdpMode::Skb,
            Some(
                "auto: generic on veth (native XDP on veth makes the kernel segment GSO packets)".to_string(),
            ),
        ),
        ModeRequest::Auto => (XdpMode::Driver, Some("auto: native".to_string())),
    };
    let tc_kind = match req.tc {
        TcRequest::Tcx => TC_KIND_TCX,
        TcRequest::Clsact => TC_KIND_CLSACT,
        TcRequest::Auto if kernel_has_tcx() => TC_KIND_TCX,
        TcRequest::Auto => TC_KIND_CLSACT,
    };

    let mut ebpf = load_object_sized(req.ct_sizes)?;
    pins::create_private_dir(dir)?;
    let mut rollback = Rollback { dir, armed: true };

    for name in ALL_MAPS {
        let path = dir.join(name);
        ebpf.map(name)
            .ok_or(Error::MissingInObject(name))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    for name in [PROG_INGRESS, PROG_EGRESS] {
        let path = dir.join(name);
        ebpf.program_mut(name)
            .ok_or(Error::MissingInObject(name))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    let mut maps = InstanceMaps::take_from(&mut ebpf)?;
    let mut cfg = IfaceConfig {
        flags: CONFIG_VALID
            | req.no_implicit.unwrap_or(0)
            | if req.monitor == Some(true) { CONFIG_MONITOR } else { 0 },
        ifindex,
        ingress_posture: req.ingress.unwrap_or(Posture::Deny) as u8,
        egress_posture: req.egress.unwrap_or(Posture::Allow) as u8,
        xdp_mode: XDP_MODE_NONE,
        tc_kind,
        policy_mode: POLICY_POSTURE,
        active_gen: 0,
        _pad0: [0; 2],
        attached_at: now_unix(),
        policy_seq: 0,
        revoke_seq: 0,
        ct_timeouts: CtTimeouts::AWS_DEFAULTS,
    };
    if let Some((plan, seq)) = policy {
        maps.write_generation(0, plan)?;
        cfg.policy_mode = POLICY_GROUPS;
        cfg.policy_seq = seq;
        cfg.ct_timeouts = plan.timeouts;
        cfg.flags = sg_common::config::with_monitor(cfg.flags | plan.no_implicit, plan.monitor);
    }
    // The config is complete before any packet can reach the programs.
    maps.set_config(&cfg)?;

    // Ingress: XDP, through a BPF link pinned next to the maps.
    let xdp = xdp_mut(&mut ebpf)?;
    let link_id = match xdp.attach_to_if_index(ifindex, mode) {
        Ok(id) => id,
        Err(e) if matches!(errno(&e), Some(libc::EBUSY | libc::EEXIST)) => {
            return Err(Error::XdpBusy {
                iface: req.iface.clone(),
                holder: iface::xdp_holder(&req.iface).unwrap_or_else(|| "another program".to_string()),
            });
        }
        Err(e) if req.mode == ModeRequest::Auto && mode == XdpMode::Driver => {
            log::info!("{}: native XDP failed ({e}); using generic", req.iface);
            mode = XdpMode::Skb;
            note = Some(format!(
                "auto: generic (driver {} refused native XDP: {e})",
                driver.as_deref().unwrap_or("unknown")
            ));
            xdp.attach_to_if_index(ifindex, mode).context(|| format!("attaching XDP to {}", req.iface))?
        }
        Err(source) if mode == XdpMode::Driver => {
            return Err(Error::NativeUnsupported {
                iface: req.iface.clone(),
                driver: driver.unwrap_or_else(|| "unknown".to_string()),
                source: Box::new(source),
            });
        }
        Err(e) => return Err(e).context(|| format!("attaching XDP to {}", req.iface)),
    };
    let link = xdp.take_link(link_id).context(|| "taking the XDP link".to_string())?;
    let link = FdLink::try_from(link).map_err(|_| Error::NoXdpLink(req.iface.clone()))?;
    let link_path = dir.join(PIN_LINK_XDP);
    let _xdp_link = link.pin(&link_path).context(|| format!("pinning {}", link_path.display()))?;
    cfg.xdp_mode = if mode == XdpMode::Driver { XDP_MODE_NATIVE } else { XDP_MODE_GENERIC };
    maps.set_config(&cfg)?;

    // Egress: TC, TCX link first in the chain, or a classic clsact filter.
    let tc = tc_mut(&mut ebpf)?;
    if tc_kind == TC_KIND_TCX {
        let id = tc
            .attach_with_options(
                &req.iface,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .context(|| format!("attaching TCX egress to {}", req.iface))?;
        let link = tc.take_link(id).context(|| "taking the TC link".to_string())?;
        let link = FdLink::try_from(link).context(|| "converting the TCX link".to_string())?;
        let path = dir.join(PIN_LINK_TC);
        let _tc_link = link.pin(&path).context(|| format!("pinning {}", path.display()))?;
    } else {
        if let Err(e) = tc::qdisc_add_clsact(&req.iface) {
            // EEXIST: the qdisc is already there (shared with other tc users): fine.
            log::debug!("{}: clsact qdisc: {e}", req.iface);
        }
        let id = tc
            .attach_with_options(
                &req.iface,
                TcAttachType::Egress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .context(|| format!("attaching clsact egress to {}", req.iface))?;
        let link = tc.take_link(id).context(|| "taking the TC link".to_string())?;
        // A netlink filter cannot be pinned: it stays until `sgctl detach` removes it by name.
        std::mem::forget(link);
    }
    rollback.armed = false;

    Ok(AttachReport {
        iface: req.iface.clone(),
        newly_attached: true,
        xdp_mode: xdp_mode_name(cfg.xdp_mode),
        mode_note: note,
        tc_kind: tc_kind_name(cfg.tc_kind),
        ingress: posture_name(cfg.ingress_posture),
        egress: posture_name(cfg.egress_posture),
        ingress_prog_id: pinned_prog_id(&dir.join(PROG_INGRESS))?,
        egress_prog_id: pinned_prog_id(&dir.join(PROG_EGRESS))?,
        pin_dir: dir.to_path_buf(),
    })
}

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
    let cfg = InstanceMaps::from_pins(&dir).and_then(|m| m.config()).ok();
    let current = iface::ifindex(iface_name).ok();
    let same_iface = matches!((cfg, current), (Some(c), Some(i)) if c.ifindex == i);
    if same_iface && cfg.is_some_and(|c| c.tc_kind == TC_KIND_CLSACT) {
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
