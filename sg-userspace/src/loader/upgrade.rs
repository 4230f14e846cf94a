//! Upgrading an attached instance to this build's datapath without an unfiltered instant and
//! without losing a tracked flow.
//!
//! The new programs replace the old ones behind the pinned links (`BPF_LINK_UPDATE`, atomic
//! per hook: a packet runs the old program or the new one). Maps whose layout did not change
//! are reused by the new programs (conntrack, counters and hits untouched); maps whose layout
//! changed are new maps, filled from the old ones before the switch and topped up after it.
//! Step by step ([`upgrade`]):
//!
//! 1. [`recover`] a previous upgrade that was killed (see below);
//! 2. read what the instance is ([`layout::inspect`]) and check every pinned map against its
//!    layout ([`layout::verify`]); a newer or unknown layout is refused, nothing touched;
//! 3. load this build's object with each reusable map's pin (`map_pin_path`) and the
//!    instance's table sizes, and its programs (the verifier runs here);
//! 4. stage in `<instance>/next/`: the new maps (converted entries copied in), the new
//!    `SG_META`, the programs, the ingress program last: its pin says the staging is complete;
//! 5. switch: the XDP link, then the egress (TCX link, or the classic clsact filter replaced at
//!    its priority and handle), each only if it still runs the old program (`BPF_F_REPLACE`);
//!    during the moment between the two, each program finds every flow: the old egress program
//!    writes the old table, which step 6 copies again;
//! 6. copy again what the old programs created or changed in converted tables meanwhile;
//! 7. finish: move every staged pin over the old one (maps, then `SG_META`, then programs, the
//!    ingress program last) and remove the staging directory. The old programs and maps go with
//!    their last pins.
//!
//! A crash or `kill -9` at any step leaves a state [`recover`] completes or rolls back: without
//! the staged ingress program the staging is removed (the links were not touched yet); with it
//! the upgrade is rolled forward (switch what is not switched, copy again, finish). Failpoints
//! (`SGCTL_FAILPOINT`): `upgrade_staged`, `upgrade_switch_xdp`, `upgrade_switch_tc`,
//! `upgrade_finish`.

use std::{
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    maps::{Array, HashMap, Map, MapData},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{SchedClassifierLink, TcHandle},
    },
};
use sg_common::{
    IfaceConfig,
    config::{TC_KIND_CLSACT, TC_KIND_TCX},
    conntrack::{CT_F_MIGRATED, CtEntry, CtKey, WSCALE_NONE},
    layout::{InstanceMeta, LAYOUT},
    maps::{self as reg, PROG_EGRESS, PROG_INGRESS},
    policy::GENERATIONS,
};

use super::{
    BUILD, bpf, datapath_hash,
    layout::{self, Carry, Conversion, Found},
    load::{IngressHook, Sizes, load_object_reusing},
};
use crate::{
    error::{Context as _, Error, Result},
    failpoint, iface,
    maps::{InstanceMaps, owned},
    pins::{self, PIN_LINK_TC, PIN_LINK_XDP},
    state,
};

/// The staging directory inside an instance directory.
pub const STAGING: &str = "next";

#[derive(Clone, Copy, Debug, Default)]
pub struct UpgradeOptions {
    /// Replace the programs even when the instance already runs this build's datapath.
    pub force: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UpgradeReport {
    pub iface: String,
    /// `current` (nothing to do), `same layout` (programs replaced, every map reused) or
    /// `changed layout` (some maps converted).
    pub path: &'static str,
    pub from_layout: u32,
    pub from_build: String,
    pub to_layout: u32,
    pub to_build: String,
    pub reused: Vec<&'static str>,
    pub converted: Vec<&'static str>,
    pub fresh: Vec<&'static str>,
    /// Tracked flows copied into converted tables before the switch, and again after it.
    pub flows_copied: usize,
    pub flows_recopied: usize,
    /// Program ids before and after: ingress, egress.
    pub ingress_prog: [u32; 2],
    pub egress_prog: [u32; 2],
    /// What [`recover`] did first, if anything.
    pub recovered: Option<String>,
    pub millis: f64,
}

/// Upgrades `iface`'s instance (takes the apply lock of the network namespace).
pub fn upgrade(iface_name: &str, opts: UpgradeOptions) -> Result<UpgradeReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let _lock = state::lock()?;
    upgrade_locked(iface_name, opts)
}

/// [`upgrade`] for a caller that holds the apply lock.
pub fn upgrade_locked(iface_name: &str, opts: UpgradeOptions) -> Result<UpgradeReport> {
    let started = Instant::now();
    let ifindex = iface::ifindex(iface_name)?;
    let dir = pins::iface_dir(iface_name)?;
    if !dir.is_dir() {
        return Err(Error::NotAttached { iface: iface_name.to_string(), dir });
    }
    let recovered = recover(iface_name, &dir)?;
    let (from_layout, old_meta) = match layout::inspect(&dir)? {
        Found::Current(meta) => (LAYOUT, Some(meta)),
        Found::Older { layout, meta } => (layout, meta),
        Found::Newer(meta) => {
            return Err(Error::LayoutNewer {
                iface: iface_name.to_string(),
                layout: meta.layout,
                build: meta.build_str().to_string(),
            });
        }
        Found::Unknown(detail) => return Err(Error::LayoutUnknown { iface: iface_name.to_string(), detail }),
    };
    let mut report = UpgradeReport {
        iface: iface_name.to_string(),
        path: "current",
        from_layout,
        from_build: old_meta
            .as_ref()
            .map_or_else(|| "before layouts were numbered".into(), |m| m.build_str().to_string()),
        to_layout: LAYOUT,
        to_build: BUILD.to_string(),
        recovered,
        ..UpgradeReport::default()
    };
    if from_layout == LAYOUT && old_meta.is_some_and(|m| m.datapath == datapath_hash()) && !opts.force {
        report.millis = started.elapsed().as_secs_f64() * 1e3;
        return Ok(report);
    }
    let pinned = layout::verify(&dir, iface_name, from_layout)?;
    let links = Links::open(iface_name, &dir, ifindex, old_meta.as_ref())?;

    // 3. Load with every reusable map's pin.
    let mut reuse = Vec::new();
    for spec in owned() {
        let carry = layout::carry(from_layout, spec).ok_or_else(|| Error::Upgrade {
            iface: iface_name.to_string(),
            detail: format!("this build cannot carry {} over from layout {from_layout}", spec.name),
        })?;
        match carry {
            // SG_META is always staged anew: it names the programs, which change.
            Carry::Reuse if spec.name == reg::META.name => report.fresh.push(spec.name),
            Carry::Reuse => {
                reuse.push((spec.name, dir.join(spec.name)));
                report.reused.push(spec.name);
            }
            Carry::Convert(_) => report.converted.push(spec.name),
            Carry::Fresh => report.fresh.push(spec.name),
        }
    }
    let sizes = sizes_of(&pinned);
    let hook = IngressHook::of_xdp_mode(read_config(&dir)?.xdp_mode);
    let mut ebpf = load_object_reusing(sizes, &reuse, hook)?;

    // 4. Stage.
    let staging = dir.join(STAGING);
    pins::create_private_dir(&staging)?;
    let mut rollback = Rollback { dir: &staging, armed: true };
    for name in report.converted.iter().chain(&report.fresh) {
        let path = staging.join(name);
        ebpf.map(name)
            .ok_or(Error::MissingInObject(spec_name(name)))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    let mut meta = InstanceMeta::new(datapath_hash(), BUILD);
    if let Some(old) = &old_meta {
        meta.upgrades = old.upgrades.wrapping_add(1);
        meta.tc_priority = old.tc_priority;
        meta.tc_handle = old.tc_handle;
    } else {
        meta.upgrades = 1;
    }
    meta.upgraded_at = now_unix();
    write_meta(&staging, &meta)?;
    for name in &report.converted {
        report.flows_copied += copy_converted(from_layout, name, &dir, &staging, false)?;
    }
    for (name, pin) in [(PROG_EGRESS, PROG_EGRESS), (hook.program(), PROG_INGRESS)] {
        let path = staging.join(pin);
        ebpf.program_mut(name)
            .ok_or(Error::MissingInObject(spec_name(name)))?
            .pin(&path)
            .context(|| format!("pinning {}", path.display()))?;
    }
    rollback.armed = false;
    failpoint::hit("upgrade_staged")?;

    // 5-7.
    report.ingress_prog[0] = links.xdp_prog()?;
    report.egress_prog[0] = links.tc_prog(&dir)?;
    switch(&links, &dir, &staging)?;
    for name in &report.converted {
        report.flows_recopied += copy_converted(from_layout, name, &dir, &staging, true)?;
    }
    finish(&dir, &staging)?;
    refresh_local(iface_name, &dir);
    report.ingress_prog[1] = links.xdp_prog()?;
    report.egress_prog[1] = links.tc_prog(&dir)?;
    report.path = if report.converted.is_empty() { "same layout" } else { "changed layout" };
    report.millis = started.elapsed().as_secs_f64() * 1e3;
    log::info!(
        "{iface_name}: upgraded from layout {from_layout} ({}) to layout {LAYOUT} ({BUILD}): {}, {} flows carried, {:.1} ms",
        report.from_build,
        report.path,
        report.flows_copied + report.flows_recopied,
        report.millis
    );
    Ok(report)
}

/// The interface's own addresses into the upgraded instance's `SG_LOCAL` (new in layout 2);
/// a failure is logged: the next apply, attach or the daemon writes them again.
fn refresh_local(iface_name: &str, dir: &Path) {
    let done = InstanceMaps::from_pins(dir).and_then(|mut m| iface::refresh_local(iface_name, &mut m));
    if let Err(e) = done {
        log::warn!("{iface_name}: writing the own addresses after the upgrade: {e}");
    }
}

/// A registry name as `'static` for errors.
fn spec_name(name: &str) -> &'static str {
    reg::spec(name).map_or("a map", |s| s.name)
}

/// Removes an unfinished staging directory unless disarmed.
struct Rollback<'a> {
    dir: &'a Path,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = std::fs::remove_dir_all(self.dir)
        {
            log::error!("rollback of {}: {e}", self.dir.display());
        }
    }
}

/// The instance's table sizes, as pinned.
fn sizes_of(pinned: &[layout::Pinned]) -> Sizes {
    let mut s = Sizes::default();
    for p in pinned {
        match p.map.name {
            n if n == reg::CT.name => s.established = p.info.max_entries,
            n if n == reg::CT_NEW.name => s.new = p.info.max_entries,
            n if n == reg::PFX_TIPS.name => s.prefixes = p.info.max_entries / GENERATIONS,
            _ => {}
        }
    }
    s
}

use crate::clock::now_unix;

/// Writes `SG_META` of the instance (or staging) directory `dir`.
pub fn write_meta(dir: &Path, meta: &InstanceMeta) -> Result<()> {
    let path = dir.join(reg::META.name);
    let data = MapData::from_pin(&path).context(|| format!("opening {}", path.display()))?;
    let mut map: Array<MapData, InstanceMeta> =
        Array::try_from(Map::Array(data)).context(|| format!("opening {}", path.display()))?;
    map.set(0, meta, 0).context(|| format!("writing {}", path.display()))
}

/// The pinned links of an instance and how its egress is attached.
struct Links {
    iface: String,
    xdp: std::os::fd::OwnedFd,
    /// TCX: the pinned link; classic clsact: the filter's priority and handle.
    tc: TcHook,
}

enum TcHook {
    Tcx(std::os::fd::OwnedFd),
    Clsact { priority: u16, handle: u32 },
}

impl Links {
    fn open(iface_name: &str, dir: &Path, ifindex: u32, meta: Option<&InstanceMeta>) -> Result<Self> {
        let refuse = |detail: String| Error::Upgrade { iface: iface_name.to_string(), detail };
        let cfg = read_config(dir)?;
        // The ingress link: XDP, or TCX with `--ingress-hook tcx` (pinned at the same place).
        let want = match IngressHook::of_xdp_mode(cfg.xdp_mode) {
            IngressHook::Xdp => bpf::LINK_TYPE_XDP,
            IngressHook::Tcx => bpf::LINK_TYPE_TCX,
        };
        let xdp =
            bpf::obj_get(&dir.join(PIN_LINK_XDP)).map_err(|_| refuse("no pinned ingress link".into()))?;
        let info = bpf::link_info(xdp.as_fd())?;
        if info.kind != want || info.ifindex != ifindex {
            return Err(refuse(format!(
                "its ingress link is not attached to this interface (ifindex {} of {ifindex}): the interface was \
                 re-created; `sgctl apply` or `sgctl attach` replaces the stale instance",
                info.ifindex
            )));
        }
        let tc = match cfg.tc_kind {
            TC_KIND_TCX => {
                let link =
                    bpf::obj_get(&dir.join(PIN_LINK_TC)).map_err(|_| refuse("no pinned TCX link".into()))?;
                TcHook::Tcx(link)
            }
            TC_KIND_CLSACT => match meta {
                Some(m) if m.tc_priority != 0 => {
                    TcHook::Clsact { priority: m.tc_priority as u16, handle: m.tc_handle }
                }
                _ => {
                    return Err(refuse(
                        "its egress is a classic clsact filter whose priority and handle the attaching build did \
                         not record, so it cannot be replaced in place; detach and attach it again in a \
                         maintenance window"
                            .into(),
                    ));
                }
            },
            k => return Err(refuse(format!("unknown egress attachment kind {k}"))),
        };
        Ok(Links { iface: iface_name.to_string(), xdp, tc })
    }

    fn xdp_prog(&self) -> Result<u32> {
        Ok(bpf::link_info(self.xdp.as_fd())?.prog_id)
    }

    /// The egress program's id: the TCX link's, or (clsact) the pinned program's.
    fn tc_prog(&self, dir: &Path) -> Result<u32> {
        match &self.tc {
            TcHook::Tcx(link) => Ok(bpf::link_info(link.as_fd())?.prog_id),
            TcHook::Clsact { .. } => pinned_prog_id(&dir.join(PROG_EGRESS)),
        }
    }
}

/// The config of an instance, read with layout 1's and 2's `IfaceConfig` (the same).
fn read_config(dir: &Path) -> Result<IfaceConfig> {
    let path = dir.join(reg::CONFIG.name);
    let data = MapData::from_pin(&path).context(|| format!("opening {}", path.display()))?;
    let map: Array<MapData, IfaceConfig> =
        Array::try_from(Map::Array(data)).context(|| format!("opening {}", path.display()))?;
    map.get(&0, 0).context(|| format!("reading {}", path.display()))
}

fn pinned_prog_id(path: &Path) -> Result<u32> {
    bpf::prog_id(bpf::obj_get(path)?.as_fd())
}

/// Step 5: each hook to the staged program, if it does not run it yet (a recovery calls it
/// again: what is switched stays).
fn switch(links: &Links, dir: &Path, staging: &Path) -> Result<()> {
    let new_in = bpf::obj_get(&staging.join(PROG_INGRESS))?;
    let new_in_id = bpf::prog_id(new_in.as_fd())?;
    if links.xdp_prog()? != new_in_id {
        let old = bpf::obj_get(&dir.join(PROG_INGRESS))?;
        swap(&links.iface, "ingress", links.xdp.as_fd(), new_in.as_fd(), old.as_fd())?;
    }
    failpoint::hit("upgrade_switch_xdp")?;
    let new_eg = bpf::obj_get(&staging.join(PROG_EGRESS))?;
    let new_eg_id = bpf::prog_id(new_eg.as_fd())?;
    match &links.tc {
        TcHook::Tcx(link) => {
            if bpf::link_info(link.as_fd())?.prog_id != new_eg_id {
                let old = bpf::obj_get(&dir.join(PROG_EGRESS))?;
                swap(&links.iface, "TCX", link.as_fd(), new_eg.as_fd(), old.as_fd())?;
            }
        }
        TcHook::Clsact { priority, handle } => {
            // Replaced in place at the same priority and handle (netlink NLM_F_REPLACE): the
            // staged program, opened from its pin (so a recovery can do it too; replacing a
            // filter with the program it already runs changes nothing).
            let link = SchedClassifierLink::attached(
                &links.iface,
                TcAttachType::Egress,
                *priority,
                TcHandle::from(*handle),
                None,
            )
            .context(|| format!("finding the clsact filter of {}", links.iface))?;
            let mut tc = SchedClassifier::from_pin(staging.join(PROG_EGRESS))
                .context(|| format!("opening the staged {PROG_EGRESS}"))?;
            let id = tc
                .attach_to_link(link)
                .context(|| format!("replacing the clsact filter of {}", links.iface))?;
            let link = tc.take_link(id).context(|| "taking the TC link".to_string())?;
            // Dropping it would remove the filter.
            std::mem::forget(link);
        }
    }
    failpoint::hit("upgrade_switch_tc")?;
    Ok(())
}

fn swap(
    iface_name: &str,
    hook: &str,
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
) -> Result<()> {
    bpf::link_update(link, new, old).map_err(|e| Error::Upgrade {
        iface: iface_name.to_string(),
        detail: format!(
            "replacing the {hook} program: {e} (the link no longer runs the instance's pinned program: another tool \
             changed it?)"
        ),
    })
}

/// Step 7: every staged pin over the old one (maps, `SG_META`, then the programs, ingress
/// last), then the staging directory goes.
fn finish(dir: &Path, staging: &Path) -> Result<()> {
    failpoint::hit("upgrade_finish")?;
    let mut names: Vec<String> = std::fs::read_dir(staging)
        .context(|| format!("listing {}", staging.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let rank = |n: &str| match n {
        n if n == PROG_INGRESS => 3,
        n if n == PROG_EGRESS => 2,
        n if n == reg::META.name => 1,
        _ => 0,
    };
    names.sort_by_key(|n| (rank(n), n.clone()));
    for name in names {
        let (from, to) = (staging.join(&name), dir.join(&name));
        std::fs::rename(&from, &to).context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    std::fs::remove_dir(staging).context(|| format!("removing {}", staging.display()))
}

/// Completes or rolls back an upgrade of `dir` that was interrupted; says what it did.
pub fn recover(iface_name: &str, dir: &Path) -> Result<Option<String>> {
    let staging = dir.join(STAGING);
    if !staging.is_dir() {
        return Ok(None);
    }
    if !staging.join(PROG_INGRESS).exists() {
        // Staging incomplete: the links were not touched.
        std::fs::remove_dir_all(&staging).context(|| format!("removing {}", staging.display()))?;
        let what = "removed the staging of an upgrade interrupted before its switch".to_string();
        log::warn!("{iface_name}: {what}");
        return Ok(Some(what));
    }
    let staged_layout = match layout::inspect(&staging) {
        Ok(Found::Current(_)) => LAYOUT,
        Ok(Found::Newer(m) | Found::Older { meta: Some(m), .. }) => m.layout,
        _ => 0,
    };
    let ifindex = iface::ifindex(iface_name)?;
    let live = bpf::obj_get(&dir.join(PIN_LINK_XDP))
        .and_then(|l| bpf::link_info(l.as_fd()))
        .is_ok_and(|i| i.ifindex == ifindex);
    if !live {
        // The instance itself is stale (its interface was re-created): the staging goes with it.
        std::fs::remove_dir_all(&staging).context(|| format!("removing {}", staging.display()))?;
        return Ok(Some("removed the staging of an upgrade of a stale instance".into()));
    }
    let old_meta = match layout::inspect(dir)? {
        Found::Current(m) | Found::Newer(m) | Found::Older { meta: Some(m), .. } => Some(m),
        _ => None,
    };
    let links = Links::open(iface_name, dir, ifindex, old_meta.as_ref())?;
    let untouched = links.xdp_prog()? == pinned_prog_id(&dir.join(PROG_INGRESS))?
        && links.tc_prog(dir)? == pinned_prog_id(&dir.join(PROG_EGRESS))?;
    if staged_layout != LAYOUT {
        if untouched {
            std::fs::remove_dir_all(&staging).context(|| format!("removing {}", staging.display()))?;
            let what = format!(
                "removed the staging of an interrupted upgrade to layout {staged_layout} (links untouched)"
            );
            log::warn!("{iface_name}: {what}");
            return Ok(Some(what));
        }
        return Err(Error::Upgrade {
            iface: iface_name.to_string(),
            detail: format!(
                "an upgrade to map layout {staged_layout} by another build was interrupted after its switch; finish it \
                 with that build (`sgctl upgrade {iface_name}`)"
            ),
        });
    }
    // Roll forward: what the old instance was decides the conversions still to top up.
    let from_layout = match layout::inspect(dir)? {
        Found::Current(_) => LAYOUT,
        Found::Older { layout, .. } => layout,
        _ => LAYOUT,
    };
    switch(&links, dir, &staging)?;
    let mut recopied = 0;
    for spec in owned() {
        if let Some(Carry::Convert(_)) = layout::carry(from_layout, spec)
            && staging.join(spec.name).exists()
        {
            recopied += copy_converted(from_layout, spec.name, dir, &staging, true)?;
        }
    }
    finish(dir, &staging)?;
    let what =
        format!("completed an interrupted upgrade (switched, {recopied} flows copied again, finished)");
    log::warn!("{iface_name}: {what}");
    Ok(Some(what))
}

/// Copies the entries of converted map `name` from `dir` (layout `from`) into `staging`
/// (this layout); returns how many. `again`: after the switch, only entries that are new or
/// that the old programs touched after the new table's copy was made.
fn copy_converted(from: u32, name: &str, dir: &Path, staging: &Path, again: bool) -> Result<usize> {
    let spec = reg::spec(name).ok_or(Error::MissingInObject("a converted map"))?;
    match layout::carry(from, spec) {
        Some(Carry::Convert(Conversion::CtEntryV1)) => copy_ct_v1(dir, staging, name, again),
        _ => Ok(0),
    }
}

/// `CtEntry` of layout 1: this layout's first 76 bytes, then 4 bytes of padding.
const CT_V1_SIZE: usize = 80;

/// A layout 1 entry in this layout: the same fields, no TCP sequence space known yet (the
/// datapath picks it up from the flow's next packets), marked as migrated.
pub fn ct_entry_from_v1(v1: &[u8; CT_V1_SIZE]) -> CtEntry {
    let mut bytes = [0u8; size_of::<CtEntry>()];
    bytes[..76].copy_from_slice(&v1[..76]);
    // SAFETY: CtEntry is plain integers; any bytes are a value.
    let mut e: CtEntry = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    e.wscale = [WSCALE_NONE; 2];
    e.seq_flags = 0;
    e.flags |= CT_F_MIGRATED;
    e
}

fn open_hash<V: aya::Pod>(path: &Path) -> Result<HashMap<MapData, CtKey, V>> {
    let data = MapData::from_pin(path).context(|| format!("opening {}", path.display()))?;
    let map = Map::from_map_data(data).context(|| format!("opening {}", path.display()))?;
    HashMap::try_from(map).context(|| format!("opening {}", path.display()))
}

fn copy_ct_v1(dir: &Path, staging: &Path, name: &str, again: bool) -> Result<usize> {
    let old: HashMap<MapData, CtKey, [u8; CT_V1_SIZE]> = open_hash(&dir.join(name))?;
    let mut new: HashMap<MapData, CtKey, CtEntry> = open_hash(&staging.join(name))?;
    let mut n = 0;
    for item in &old {
        // An entry deleted while we walk is skipped.
        let Ok((key, raw)) = item else { continue };
        let e = ct_entry_from_v1(&raw);
        if again
            && let Ok(cur) = new.get(&key, 0)
            && cur.last_seen_ns >= e.last_seen_ns
        {
            continue;
        }
        new.insert(key, e, 0).context(|| format!("copying a flow into {name}"))?;
        n += 1;
    }
    Ok(n)
}

/// The staging directory of `dir`'s instance, for readers that skip an instance mid-upgrade.
pub fn staging_dir(dir: &Path) -> PathBuf {
    dir.join(STAGING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_1_entry_keeps_every_field_and_is_marked_migrated() {
        let e = CtEntry {
            created_ns: 1,
            last_seen_ns: 2,
            packets: [3, 4],
            bytes: [5, 6],
            acl_cache: [7, 8],
            rule: 9,
            policy_seq: 10,
            state: 4,
            origin: 1,
            initiator_lo: 1,
            flags: 1,
            ..CtEntry::default()
        };
        // The layout 1 bytes: the same 76 bytes, 4 of padding.
        let mut v1 = [0u8; CT_V1_SIZE];
        // SAFETY: reading the bytes of a plain-integer struct.
        let bytes: [u8; size_of::<CtEntry>()] = unsafe { std::mem::transmute(e) };
        v1[..76].copy_from_slice(&bytes[..76]);
        let got = ct_entry_from_v1(&v1);
        assert_eq!(got, CtEntry { flags: 1 | CT_F_MIGRATED, wscale: [WSCALE_NONE; 2], ..e });
    }
}
