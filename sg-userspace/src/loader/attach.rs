//! Attaching an instance to an interface, pinned under `pins::iface_dir` so that enforcement
//! outlives sgctl; opening the attached instance of an interface.
//!
//! A new attach is a sequence of named steps, any failure of which removes the half-made
//! instance directory (nothing half-applied survives):
//! [`choose_xdp_mode`], [`choose_tc_kind`], load the object, [`pin_objects`],
//! [`initial_config`] (plus a policy through the generation flip, for `sgctl apply`), the config
//! written before any packet can reach the programs, [`attach_xdp`], [`attach_egress`]. The
//! report is built by [`report`] for new and existing attaches alike.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, TcAttachType, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use sg_common::{
    IfaceConfig, Posture,
    config::{
        CONFIG_IMPLICIT_MASK, CONFIG_MONITOR, CONFIG_VALID, POLICY_GROUPS, POLICY_POSTURE, TC_KIND_CLSACT,
        TC_KIND_NONE, TC_KIND_TCX, XDP_MODE_GENERIC, XDP_MODE_NATIVE, XDP_MODE_NONE, XDP_MODE_TCX,
        with_monitor,
    },
    conntrack::CtTimeouts,
    layout::InstanceMeta,
    maps::{PROG_EGRESS, PROG_INGRESS},
};

use super::load::{IngressHook, Sizes, load_object_hooked, tc_ingress_mut, tc_mut, xdp_mut};
use crate::{
    adopt::{self, AdoptReport},
    error::{Context as _, Error, Result},
    failpoint, generation, iface,
    maps::{self, InstanceMaps},
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
    rules::compile::IfacePlan,
};

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

/// Where sgctl's ingress program goes in the interface's TCX ingress chain (`--ingress-hook
/// tcx`): first (before every other program: nothing it denies reaches them) or last (after
/// them: they see, and may drop, every packet first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressOrder {
    #[default]
    First,
    Last,
}

/// Where `sgctl apply` and the daemon put the programs of interfaces they attach (`--mode`,
/// `--ingress-hook`, `--ingress-order`); an attached interface keeps its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// XDP mode (`None`: auto).
    pub mode: Option<ModeRequest>,
    /// Ingress hook (`None`: XDP).
    pub ingress_hook: Option<IngressHook>,
    pub ingress_order: IngressOrder,
}

#[derive(Clone, Debug)]
pub struct AttachRequest {
    pub iface: String,
    pub mode: ModeRequest,
    pub tc: TcRequest,
    /// Ingress at XDP (default) or TCX; `None`: keep (a new attach: XDP).
    pub ingress_hook: Option<IngressHook>,
    /// The place in the TCX ingress chain (`ingress_hook` TCX, new attach only).
    pub ingress_order: IngressOrder,
    /// `None`: keep the current posture (default for a new attach: ingress deny).
    pub ingress: Option<Posture>,
    /// `None`: keep the current posture (default for a new attach: egress allow).
    pub egress: Option<Posture>,
    /// Table sizes for a new attach (an attached interface keeps its own).
    pub sizes: Sizes,
    /// `CONFIG_NO_IMPLICIT_*` bits to set (replacing the current ones); `None`: keep.
    pub no_implicit: Option<u32>,
    /// Monitor mode on or off (`CONFIG_MONITOR`); `None`: keep (new attach: off). Allowed in
    /// groups mode too: it changes enforcement, not the policy.
    pub monitor: Option<bool>,
}

impl AttachRequest {
    /// A new attach with every setting at its default.
    pub fn new(iface: &str, mode: ModeRequest) -> Self {
        AttachRequest {
            iface: iface.to_string(),
            mode,
            tc: TcRequest::Auto,
            ingress_hook: None,
            ingress_order: IngressOrder::First,
            ingress: None,
            egress: None,
            sizes: Sizes::default(),
            no_implicit: None,
            monitor: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachReport {
    pub iface: String,
    /// `false` when the interface was already attached (postures updated in place).
    pub newly_attached: bool,
    pub xdp_mode: &'static str,
    /// Where ingress is decided: `xdp` or `tcx`.
    pub ingress_hook: &'static str,
    /// TCX ingress: sgctl's place in the interface's TCX ingress chain ("1 of 2 in the chain").
    pub ingress_chain: Option<String>,
    /// Why this XDP mode, when sgctl chose it.
    pub mode_note: Option<String>,
    pub tc_kind: &'static str,
    pub ingress: &'static str,
    pub egress: &'static str,
    pub ingress_prog_id: u32,
    pub egress_prog_id: u32,
    pub pin_dir: PathBuf,
    /// A new attach: the existing connections it adopted (`adopt`).
    pub adopted: Option<AdoptReport>,
    /// Monitor mode: verdicts counted and logged, nothing dropped.
    pub monitor: bool,
}

pub const fn xdp_mode_name(mode: u8) -> &'static str {
    match mode {
        XDP_MODE_NATIVE => "native",
        XDP_MODE_GENERIC => "generic",
        XDP_MODE_TCX => "none (ingress at tcx)",
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

/// Whether the running kernel has TCX (Linux >= 6.6).
fn kernel_has_tcx() -> bool {
    aya::util::KernelVersion::current()
        .is_ok_and(|v| v.code() >= aya::util::KernelVersion::new(6, 6, 0).code())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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

/// Attaches sgctl to `req.iface` (idempotent: an attached interface gets its postures
/// updated in place, same programs, no re-attach; an instance of an older datapath is upgraded
/// first).
pub fn attach(req: &AttachRequest) -> Result<AttachReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let ifindex = iface::ifindex(&req.iface)?;
    let dir = pins::iface_dir(&req.iface)?;
    if dir.is_dir() {
        match open_for_write(&req.iface, &dir, ifindex, Locking::Take)? {
            Instance::Live(maps, cfg) => return update_existing(req, &dir, *maps, cfg),
            Instance::Stale => {
                log::warn!("{}: removing stale pins of a previous attach", req.iface);
                pins::remove_instance_dir(&dir)?;
            }
        }
    }
    attach_new(req, ifindex, &dir, None, None)
}

/// Attaches `iface` with a security-group policy (rule set `seq`) already in force before the
/// first packet reaches the programs. Used by `sgctl apply` for interfaces new to it. The
/// connections the interface has are adopted when `decide` (the rules' answer for a
/// connection's first packet, `adopt::by_rules`) allows them.
pub fn attach_with_policy(
    iface_name: &str,
    placement: Placement,
    plan: &IfacePlan,
    seq: u64,
    decide: &Decide<'_>,
) -> Result<AttachReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    if dir.is_dir() {
        // The caller (an apply, under the apply lock) found no live instance here.
        log::warn!("{iface_name}: removing stale pins of a previous attach");
        pins::remove_instance_dir(&dir)?;
    }
    let req = AttachRequest {
        ingress_hook: placement.ingress_hook,
        ingress_order: placement.ingress_order,
        ..AttachRequest::new(iface_name, placement.mode.unwrap_or(ModeRequest::Auto))
    };
    attach_new(&req, ifindex, &dir, Some((plan, seq)), Some(decide))
}

/// Whether the policy allows an existing connection (`adopt`): `Some(rule id)`, or
/// `policy::NO_RULE` for a posture.
pub type Decide<'a> = dyn Fn(&adopt::Candidate) -> Option<u32> + 'a;

/// An interface sgctl is attached to, with its maps open.
pub struct Attached {
    pub iface: String,
    pub dir: PathBuf,
    pub maps: InstanceMaps,
}

/// What an instance directory holds for an interface.
pub enum Instance {
    /// A live instance of this build's map layout.
    Live(Box<InstanceMaps>, IfaceConfig),
    /// Pins of no live instance: an attach in progress or half-removed (no XDP link pinned),
    /// or of an interface deleted and re-created since (the link is not on it).
    Stale,
}

/// The instance in `dir` for `ifindex`. A live instance of another layout is an error
/// (`LayoutOlder`, `LayoutNewer`, ...), not staleness: nothing is removed for it. An error
/// reading a config that opened is an error too.
fn open_live(dir: &Path, ifindex: u32) -> Result<Instance> {
    let Ok(link) = super::bpf::obj_get(&dir.join(PIN_LINK_XDP)) else { return Ok(Instance::Stale) };
    if super::bpf::link_info(std::os::fd::AsFd::as_fd(&link))?.ifindex != ifindex {
        return Ok(Instance::Stale);
    }
    let maps = InstanceMaps::from_pins(dir)?;
    let cfg = maps.config()?;
    Ok(if cfg.is_valid() && cfg.ifindex == ifindex {
        Instance::Live(Box::new(maps), cfg)
    } else {
        Instance::Stale
    })
}

/// Whether the caller holds the apply lock (an upgrade takes it otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    Held,
    Take,
}

/// [`open_live`] for a caller that will write the instance: an interrupted upgrade is
/// completed or rolled back first, and a live instance that runs another datapath than this
/// build's (an older map layout, or the same layout with other programs) is upgraded to it
/// (`sgctl upgrade`: no gap, no flow lost) so that a new release's datapath is deployed by its
/// first apply; a newer or unknown layout is refused.
pub fn open_for_write(iface_name: &str, dir: &Path, ifindex: u32, locking: Locking) -> Result<Instance> {
    super::upgrade::recover(iface_name, dir)?;
    match open_live(dir, ifindex) {
        // Another datapath: upgraded below.
        Err(Error::LayoutOlder { .. }) => {}
        Ok(Instance::Live(maps, cfg)) => {
            if maps.meta()?.datapath == super::datapath_hash() {
                return Ok(Instance::Live(maps, cfg));
            }
        }
        other => return other,
    }
    let opts = super::upgrade::UpgradeOptions::default();
    let r = match locking {
        Locking::Held => super::upgrade::upgrade_locked(iface_name, opts)?,
        Locking::Take => super::upgrade::upgrade(iface_name, opts)?,
    };
    log::warn!(
        "{iface_name}: the datapath of sgctl {} (map layout {}) upgraded to this build's ({}, layout {}): {}",
        r.from_build,
        r.from_layout,
        super::BUILD,
        r.to_layout,
        r.path
    );
    open_live(dir, ifindex)
}

/// Brings `iface`'s instance, if it has one, to this build's datapath: an interrupted upgrade
/// completed, another datapath upgraded (see [`open_for_write`]). For a daemon that starts
/// (a restart after a package upgrade) and finds the rule set already enforced.
pub fn bring_up_to_date(iface_name: &str) -> Result<()> {
    let Ok(ifindex) = iface::ifindex(iface_name) else { return Ok(()) };
    let dir = pins::iface_dir(iface_name)?;
    if dir.is_dir() {
        open_for_write(iface_name, &dir, ifindex, Locking::Take)?;
    }
    Ok(())
}

/// The maps pinned in instance directory `dir`, for reading; `None` while the instance has no
/// XDP link pinned: an attach in progress (the directory and its maps come first, the link
/// last) or a half-removed instance. Readers (`status`, `top`) skip those instead of failing.
pub fn open_pinned(dir: &Path) -> Result<Option<InstanceMaps>> {
    if !dir.join(PIN_LINK_XDP).exists() {
        return Ok(None);
    }
    InstanceMaps::from_pins(dir).map(Some)
}

/// Opens the live instance of `iface`, if sgctl is attached to it. Pins that are not a live
/// instance (of a deleted interface, half-removed, or of an attach still in progress) count as
/// not attached and are left alone: only an attach removes stale pins, so that a reader
/// (status, stats, metrics) never removes the pins of an attach running beside it.
pub fn open_attached(iface_name: &str) -> Result<Option<Attached>> {
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(match open_live(&dir, ifindex)? {
        Instance::Live(maps, _) => Some(Attached { iface: iface_name.to_string(), dir, maps: *maps }),
        Instance::Stale => None,
    })
}

/// [`open_attached`] for a caller that will write the instance and holds the apply lock
/// (`sgctl apply`, the daemon): see [`open_for_write`].
pub fn open_attached_for_write(iface_name: &str) -> Result<Option<Attached>> {
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    if !dir.is_dir() {
        return Ok(None);
    }
    Ok(match open_for_write(iface_name, &dir, ifindex, Locking::Held)? {
        Instance::Live(maps, _) => Some(Attached { iface: iface_name.to_string(), dir, maps: *maps }),
        Instance::Stale => None,
    })
}

/// Updates the settings of a live instance in place.
fn update_existing(
    req: &AttachRequest,
    dir: &Path,
    mut maps: InstanceMaps,
    mut cfg: IfaceConfig,
) -> Result<AttachReport> {
    let requested = match req.mode {
        ModeRequest::Native => Some(XDP_MODE_NATIVE),
        ModeRequest::Generic => Some(XDP_MODE_GENERIC),
        ModeRequest::Auto => None,
    };
    let current_hook = IngressHook::of_xdp_mode(cfg.xdp_mode);
    if let Some(h) = req.ingress_hook
        && h != current_hook
    {
        return Err(Error::HookMismatch {
            iface: req.iface.clone(),
            current: current_hook.as_str(),
            requested: h.as_str(),
        });
    }
    if let Some(m) = requested
        && current_hook == IngressHook::Xdp
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
    cfg.flags = with_monitor(cfg.flags, req.monitor);
    if let Some(p) = req.ingress {
        cfg.ingress_posture = p as u8;
    }
    if let Some(p) = req.egress {
        cfg.egress_posture = p as u8;
    }
    maps.set_config(&cfg)?;
    iface::refresh_local(&req.iface, &mut maps)?;
    report(&req.iface, false, &cfg, None, dir)
}

/// A new attach, step by step (see the module documentation). Existing connections are
/// adopted twice ([`adopt`]): before the links (so that the first packet after the attach finds
/// its flow) and after them (connections opened meanwhile); by `decide`, or by the postures.
fn attach_new(
    req: &AttachRequest,
    ifindex: u32,
    dir: &Path,
    policy: Option<(&IfacePlan, u64)>,
    decide: Option<&Decide<'_>>,
) -> Result<AttachReport> {
    let driver = iface::driver(&req.iface);
    let mut xdp = choose_xdp_mode(req.mode, driver.as_deref());
    let tc_kind = choose_tc_kind(req.tc);
    let hook = req.ingress_hook.unwrap_or_default();
    if hook == IngressHook::Tcx && !kernel_has_tcx() {
        return Err(Error::NoTcx);
    }

    let mut ebpf = load_object_hooked(req.sizes, hook)?;
    pins::create_private_dir(dir)?;
    let mut rollback = Rollback { dir, armed: true };
    pin_objects(&mut ebpf, dir, hook)?;

    let mut maps = InstanceMaps::take_from(&mut ebpf)?;
    let mut cfg = initial_config(req, ifindex, tc_kind);
    maps.set_config(&cfg)?;
    let mut meta = InstanceMeta::new(super::datapath_hash(), super::BUILD);
    maps.set_meta(&meta)?;
    iface::refresh_local(&req.iface, &mut maps)?;
    if let Some((plan, seq)) = policy {
        cfg = generation::apply(&mut maps, plan, seq, false)?.next;
    }
    // The config is complete before any packet can reach the programs.
    let posture = adopt::by_posture(cfg);
    let decide: &Decide<'_> = decide.unwrap_or(&posture);
    let seq = cfg.policy_seq as u32;
    let mut adopted = adopt::adopt(&req.iface, &mut maps, seq, decide)?;
    failpoint::hit("attach_link")?;

    cfg.xdp_mode = match hook {
        IngressHook::Xdp => attach_xdp(&mut ebpf, req, ifindex, dir, driver.as_deref(), &mut xdp)?,
        IngressHook::Tcx => {
            xdp.note = None;
            attach_ingress_tcx(&mut ebpf, &req.iface, req.ingress_order, dir)?;
            XDP_MODE_TCX
        }
    };
    maps.set_config(&cfg)?;
    if let Some((priority, handle)) = attach_egress(&mut ebpf, &req.iface, tc_kind, dir)? {
        // Recorded so that an upgrade can replace the filter in place.
        meta.tc_priority = u32::from(priority);
        meta.tc_handle = handle;
        maps.set_meta(&meta)?;
    }
    rollback.armed = false;
    // Connections opened between the first pass and the links: their first packets passed
    // before sgctl was there.
    match adopt::adopt(&req.iface, &mut maps, seq, decide) {
        Ok(second) => {
            adopted = adopted.and(AdoptReport { adopted: second.adopted, ..AdoptReport::default() });
        }
        Err(e) => log::warn!("{}: adopting connections opened during the attach: {e}", req.iface),
    }
    Ok(AttachReport { adopted: Some(adopted), ..report(&req.iface, true, &cfg, xdp.note, dir)? })
}

/// The XDP mode to try first, and why (when sgctl chose it).
struct XdpChoice {
    mode: XdpMode,
    note: Option<String>,
}

/// `--mode auto`: generic XDP on veth (native XDP on veth makes the kernel segment GSO
/// packets), native elsewhere (with a fallback in [`attach_xdp`]).
fn choose_xdp_mode(req: ModeRequest, driver: Option<&str>) -> XdpChoice {
    match req {
        ModeRequest::Native => XdpChoice { mode: XdpMode::Driver, note: None },
        ModeRequest::Generic => XdpChoice { mode: XdpMode::Skb, note: None },
        ModeRequest::Auto if driver == Some("veth") => XdpChoice {
            mode: XdpMode::Skb,
            note: Some(
                "auto: generic on veth (native XDP on veth makes the kernel segment GSO packets)".to_string(),
            ),
        },
        ModeRequest::Auto => XdpChoice { mode: XdpMode::Driver, note: Some("auto: native".to_string()) },
    }
}

/// `--tc auto`: TCX where the kernel has it.
fn choose_tc_kind(req: TcRequest) -> u8 {
    match req {
        TcRequest::Tcx => TC_KIND_TCX,
        TcRequest::Clsact => TC_KIND_CLSACT,
        TcRequest::Auto if kernel_has_tcx() => TC_KIND_TCX,
        TcRequest::Auto => TC_KIND_CLSACT,
    }
}

/// Pins every map sgctl owns and both programs in `dir` (the ingress program of `hook` as
/// `PROG_INGRESS`).
fn pin_objects(ebpf: &mut Ebpf, dir: &Path, hook: IngressHook) -> Result<()> {
    for spec in maps::owned() {
        let path = dir.join(spec.name);
        ebpf.map(spec.name)
            .ok_or(Error::MissingInObject(spec.name))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    for (name, pin) in [(hook.program(), PROG_INGRESS), (PROG_EGRESS, PROG_EGRESS)] {
        let path = dir.join(pin);
        ebpf.program_mut(name)
            .ok_or(Error::MissingInObject(name))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    Ok(())
}

/// The config of a new attach: the requested postures (AWS defaults: ingress deny, egress
/// allow), implicit allowances and monitor mode; XDP not attached yet.
fn initial_config(req: &AttachRequest, ifindex: u32, tc_kind: u8) -> IfaceConfig {
    IfaceConfig {
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
        acl_epoch: 0,
        _pad1: [0; 4],
    }
}

/// Ingress: XDP through a BPF link pinned next to the maps. A busy interface names its holder;
/// `--mode auto` falls back to generic when the driver refuses native. Returns the mode used
/// (`XDP_MODE_*`).
fn attach_xdp(
    ebpf: &mut Ebpf,
    req: &AttachRequest,
    ifindex: u32,
    dir: &Path,
    driver: Option<&str>,
    choice: &mut XdpChoice,
) -> Result<u8> {
    let xdp = xdp_mut(ebpf)?;
    let link_id = match xdp.attach_to_if_index(ifindex, choice.mode) {
        Ok(id) => id,
        Err(e) if matches!(errno(&e), Some(libc::EBUSY | libc::EEXIST)) => {
            return Err(Error::XdpBusy {
                iface: req.iface.clone(),
                holder: iface::xdp_holder(&req.iface).unwrap_or_else(|| "another program".to_string()),
            });
        }
        Err(e) if req.mode == ModeRequest::Auto && choice.mode == XdpMode::Driver => {
            log::info!("{}: native XDP failed ({e}); using generic", req.iface);
            choice.mode = XdpMode::Skb;
            choice.note = Some(format!(
                "auto: generic (driver {} refused native XDP: {e})",
                driver.unwrap_or("unknown")
            ));
            xdp.attach_to_if_index(ifindex, choice.mode)
                .context(|| format!("attaching XDP to {}", req.iface))?
        }
        Err(source) if choice.mode == XdpMode::Driver => {
            return Err(Error::NativeUnsupported {
                iface: req.iface.clone(),
                driver: driver.unwrap_or("unknown").to_string(),
                source: Box::new(source),
            });
        }
        Err(e) => return Err(e).context(|| format!("attaching XDP to {}", req.iface)),
    };
    let link = xdp.take_link(link_id).context(|| "taking the XDP link".to_string())?;
    let link = FdLink::try_from(link).map_err(|_| Error::NoXdpLink(req.iface.clone()))?;
    let path = dir.join(PIN_LINK_XDP);
    link.pin(&path).context(|| format!("pinning {}", path.display()))?;
    Ok(if choice.mode == XdpMode::Driver { XDP_MODE_NATIVE } else { XDP_MODE_GENERIC })
}

/// Ingress at TCX (`--ingress-hook tcx`): the TC ingress program first or last in the
/// interface's TCX ingress chain, its link pinned where an XDP attach pins its link
/// (`PIN_LINK_XDP`: the instance's ingress link, whatever the hook). The XDP hook stays free for
/// another program (xdp-filter, ...), which then sees every packet before sgctl.
fn attach_ingress_tcx(ebpf: &mut Ebpf, iface_name: &str, order: IngressOrder, dir: &Path) -> Result<()> {
    let order = match order {
        IngressOrder::First => LinkOrder::first(),
        IngressOrder::Last => LinkOrder::last(),
    };
    let tc = tc_ingress_mut(ebpf)?;
    let id = tc
        .attach_with_options(iface_name, TcAttachType::Ingress, TcAttachOptions::TcxOrder(order))
        .context(|| format!("attaching TCX ingress to {iface_name}"))?;
    let link = tc.take_link(id).context(|| "taking the TCX ingress link".to_string())?;
    let link = FdLink::try_from(link).context(|| "converting the TCX ingress link".to_string())?;
    let path = dir.join(PIN_LINK_XDP);
    link.pin(&path).context(|| format!("pinning {}", path.display()))?;
    Ok(())
}

/// Egress: the TC program first in the chain, as a TCX link (pinned) or a classic clsact
/// filter (which cannot be pinned: it stays until `sgctl detach` removes it by name; its
/// priority and handle are returned).
fn attach_egress(ebpf: &mut Ebpf, iface_name: &str, tc_kind: u8, dir: &Path) -> Result<Option<(u16, u32)>> {
    let (options, kind) = if tc_kind == TC_KIND_TCX {
        (TcAttachOptions::TcxOrder(LinkOrder::first()), "TCX")
    } else {
        if let Err(e) = tc::qdisc_add_clsact(iface_name) {
            // EEXIST: the qdisc is already there (shared with other tc users): fine.
            log::debug!("{iface_name}: clsact qdisc: {e}");
        }
        (TcAttachOptions::Netlink(NlOptions::default()), "clsact")
    };
    let tc = tc_mut(ebpf)?;
    let id = tc
        .attach_with_options(iface_name, TcAttachType::Egress, options)
        .context(|| format!("attaching {kind} egress to {iface_name}"))?;
    let link = tc.take_link(id).context(|| "taking the TC link".to_string())?;
    if tc_kind == TC_KIND_TCX {
        let link = FdLink::try_from(link).context(|| "converting the TCX link".to_string())?;
        let path = dir.join(PIN_LINK_TC);
        link.pin(&path).context(|| format!("pinning {}", path.display()))?;
        Ok(None)
    } else {
        let at = (
            link.priority().context(|| "the clsact filter's priority".to_string())?,
            u32::from(link.handle().context(|| "the clsact filter's handle".to_string())?),
        );
        // Dropping the link would remove the filter.
        std::mem::forget(link);
        Ok(Some(at))
    }
}

/// Where program `prog_id` sits in `iface`'s TCX ingress chain, as "N of M in the chain"
/// (the kernel's order: the first runs first).
pub fn tcx_ingress_position(iface_name: &str, prog_id: u32) -> Option<String> {
    let (_, progs) = aya::programs::SchedClassifier::query_tcx(iface_name, TcAttachType::Ingress).ok()?;
    let n = progs.len();
    let at = progs.iter().position(|p| p.id() == prog_id)?;
    Some(format!("{} of {n} in the chain", at + 1))
}

/// The report of an attach (new or existing), from the config written and the pins.
fn report(
    iface_name: &str,
    newly_attached: bool,
    cfg: &IfaceConfig,
    mode_note: Option<String>,
    dir: &Path,
) -> Result<AttachReport> {
    Ok(AttachReport {
        iface: iface_name.to_string(),
        newly_attached,
        xdp_mode: xdp_mode_name(cfg.xdp_mode),
        ingress_hook: IngressHook::of_xdp_mode(cfg.xdp_mode).as_str(),
        ingress_chain: (cfg.xdp_mode == XDP_MODE_TCX)
            .then(|| tcx_ingress_position(iface_name, pinned_prog_id(&dir.join(PROG_INGRESS)).ok()?))
            .flatten(),
        mode_note,
        tc_kind: tc_kind_name(cfg.tc_kind),
        ingress: posture_name(cfg.ingress_posture),
        egress: posture_name(cfg.egress_posture),
        ingress_prog_id: pinned_prog_id(&dir.join(PROG_INGRESS))?,
        egress_prog_id: pinned_prog_id(&dir.join(PROG_EGRESS))?,
        pin_dir: dir.to_path_buf(),
        adopted: None,
        monitor: cfg.flags & CONFIG_MONITOR != 0,
    })
}
