//! Applies that roll back by themselves unless confirmed: `sgctl apply --confirm SECS` (as
//! `iptables-apply` and routers' "commit confirmed" do), then `sgctl confirm`.
//!
//! The new rule set is enforced at once. Until it is confirmed, `confirm.json` in the state
//! directory records what taking it back needs, and a watcher process (sgctl itself, in a
//! session of its own: killing the CLI or its terminal does not stop it) waits for the deadline.
//! If nothing confirmed by then, the rollback is one flip per interface: the previous rule set
//! is still whole in the generation the apply did not write, so the previous config (under an
//! ACL epoch of its own) goes back in one map update. Interfaces the apply attached are
//! detached; interfaces the new file dropped were never detached (that waits for the
//! confirmation); the state file is the previous one again. Connections the new rules cut
//! (with `--revoke`) are adopted again from the socket table, by the previous rules.
//!
//! One unconfirmed apply at a time: another apply is refused until it is confirmed or rolled
//! back.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sg_common::IfaceConfig;

use crate::{
    adopt,
    error::{Context as _, Error, Result},
    loader, state,
};

/// The file of a pending confirmation, in the state directory.
pub const FILE: &str = "confirm.json";

/// What an unconfirmed apply left to take back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    /// The unconfirmed rule set.
    pub seq: u64,
    /// Unix seconds after which it is rolled back.
    pub deadline: u64,
    /// Interfaces the apply flipped, with the config that flips them back (raw bytes).
    pub flipped: Vec<(String, Vec<u8>)>,
    /// Interfaces the apply attached: detached by a rollback.
    pub attached: Vec<String>,
    /// Interfaces the new file no longer lists: detached by the confirmation.
    pub to_detach: Vec<String>,
    /// Whether a state file existed before the apply.
    pub had_state: bool,
}

fn path() -> Result<std::path::PathBuf> {
    Ok(state::dir()?.join(FILE))
}

/// The pending confirmation, if any.
pub fn pending() -> Result<Option<Pending>> {
    let p = path()?;
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("reading {}", p.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::StateFile { path: p, detail: e.to_string() })
}

pub use crate::clock::{now_unix, when};

/// The bytes of a config (to keep it in the JSON file).
pub fn config_bytes(c: &IfaceConfig) -> Vec<u8> {
    // SAFETY: IfaceConfig is plain integers with explicit padding.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(c).cast::<u8>(), size_of::<IfaceConfig>()) }
        .to_vec()
}

fn config_from(bytes: &[u8]) -> Option<IfaceConfig> {
    (bytes.len() == size_of::<IfaceConfig>())
        // SAFETY: the length is checked; any bytes are an IfaceConfig (integers only).
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<IfaceConfig>()) })
}

/// Records `p` and starts its watcher. The caller holds the apply lock.
pub fn arm(p: &Pending, secs: u64) -> Result<()> {
    let text = serde_json::to_vec_pretty(p).map_err(|source| Error::Encode { what: FILE.into(), source })?;
    state::write_atomic(&path()?, &text)?;
    let exe = std::env::current_exe().context(|| "finding sgctl's own path".to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state::dir()?.join("confirm.log"))
        .context(|| "opening confirm.log".to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["confirm", "--rollback-due", &p.seq.to_string(), "--after", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context(|| "confirm.log".to_string())?)
        .stderr(log);
    // SAFETY: setsid in the child before exec: async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().context(|| "starting the rollback watcher".to_string())?;
    Ok(())
}

/// `sgctl confirm`: keeps the pending rule set; detaches what its file dropped. Returns it.
pub fn confirm() -> Result<Option<Pending>> {
    let _lock = state::lock()?;
    let Some(p) = pending()? else { return Ok(None) };
    for iface in &p.to_detach {
        match loader::detach(iface) {
            Ok(_) | Err(Error::NotAttached { .. }) => {}
            Err(e) => log::warn!("detaching {iface}: {e}"),
        }
    }
    remove()?;
    Ok(Some(p))
}

fn remove() -> Result<()> {
    let p = path()?;
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// What a rollback did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rollback {
    pub seq: u64,
    pub flipped_back: Vec<String>,
    pub detached: Vec<String>,
    pub readopted: usize,
}

/// The watcher: waits `after` seconds, then rolls rule set `seq` back if it is still pending.
pub fn watch(seq: u64, after: u64) -> Result<Option<Rollback>> {
    std::thread::sleep(Duration::from_secs(after));
    rollback(seq)
}

/// Rolls rule set `seq` back now if it is still the pending one (one flip per interface).
pub fn rollback(seq: u64) -> Result<Option<Rollback>> {
    let _lock = state::lock()?;
    let Some(p) = pending()? else { return Ok(None) };
    if p.seq != seq {
        return Ok(None);
    }
    let mut r = Rollback { seq, ..Rollback::default() };
    for (iface, bytes) in &p.flipped {
        let Some(prev) = config_from(bytes) else { continue };
        match loader::open_attached(iface) {
            Ok(Some(mut a)) => {
                // Only the config this apply flipped to goes back (a later change stays).
                if a.maps.config()?.policy_seq == seq {
                    a.maps.set_config(&prev)?;
                    r.flipped_back.push(iface.clone());
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("rollback: {iface}: {e}"),
        }
    }
    for iface in &p.attached {
        match loader::detach(iface) {
            Ok(_) | Err(Error::NotAttached { .. }) => r.detached.push(iface.clone()),
            Err(e) => log::error!("rollback: detaching {iface}: {e}"),
        }
    }
    state::undo_new(p.had_state)?;
    // Connections the unconfirmed rules ended (--revoke) come back under the previous rules.
    if let Some(prev) = state::load()? {
        for iface in &r.flipped_back {
            if let Ok(Some(mut a)) = loader::open_attached(iface) {
                let decide = adopt::by_rules(&prev.ruleset, iface);
                match adopt::adopt(iface, &mut a.maps, prev.seq as u32, &decide) {
                    Ok(rep) => r.readopted += rep.adopted,
                    Err(e) => log::warn!("rollback: {iface}: adopting connections again: {e}"),
                }
            }
        }
    }
    remove()?;
    Ok(Some(r))
}
