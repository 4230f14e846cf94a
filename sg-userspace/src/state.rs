//! sgctl's state directory: `/run/sgctl/<netns cookie>/` (0700), per network namespace like the
//! pins. `state.json` (0600) holds the applied rule set with its sequence number, and
//! `state.prev.json` the one before; `lock` serialises applies; `daemon.lock` and
//! `daemon.json` belong to the daemon. The state lives in /run, like the pins on bpffs: both
//! are gone after a reboot, together. Every file is written atomically ([`write_atomic`]).
//!
//! [`current_state`] is the applied state as the datapath enforces it (an apply killed between
//! saving its state and flipping left the previous one in force).

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::PathBuf,
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Context as _, Error, Result},
    layer::Layer,
    loader, pins,
    rules::RuleSet,
};

/// Root of the state directories.
pub const STATE_ROOT: &str = "/run/sgctl";

/// What the last successful apply wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Incremented by every apply; interfaces' `IfaceConfig::policy_seq` must match.
    pub seq: u64,
    pub ruleset: RuleSet,
    /// Per interface, per rule id: hits counted under earlier applies of the same rule (the
    /// datapath's counters restart with each generation; `sgctl stats` adds these).
    #[serde(default)]
    pub hit_base: BTreeMap<String, Vec<u64>>,
    /// Per interface, per network ACL entry id: packets counted under earlier applies of the
    /// same entry (same ACL, direction, number and content).
    #[serde(default)]
    pub acl_hit_base: BTreeMap<String, Vec<u64>>,
    /// Where the rule set came from: `file PATH`, `daemon PATH`, `fleet etcd revision N (host
    /// H)`, `sgctl rule`.
    #[serde(default)]
    pub source: Option<String>,
}

impl State {
    /// The bases of `layer`: per interface, per item id, what earlier generations counted.
    pub fn bases(&self, layer: Layer) -> &BTreeMap<String, Vec<u64>> {
        match layer {
            Layer::Rules => &self.hit_base,
            Layer::Acl => &self.acl_hit_base,
        }
    }

    pub fn bases_mut(&mut self, layer: Layer) -> &mut BTreeMap<String, Vec<u64>> {
        match layer {
            Layer::Rules => &mut self.hit_base,
            Layer::Acl => &mut self.acl_hit_base,
        }
    }

    /// What item `id` of `layer` on `iface` counted under earlier generations.
    pub fn base(&self, layer: Layer, iface: &str, id: usize) -> u64 {
        self.bases(layer).get(iface).and_then(|v| v.get(id)).copied().unwrap_or(0)
    }
}

/// `/run/sgctl/<netns cookie>`.
pub fn state_dir_for(cookie: u64) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(cookie.to_string())
}

/// The state directory of the current network namespace (created 0700).
pub fn dir() -> Result<PathBuf> {
    let d = state_dir_for(pins::current_netns_cookie()?);
    pins::create_private_dir(&d)?;
    Ok(d)
}

/// Holds the apply lock of this network namespace until dropped.
pub struct Lock(#[allow(dead_code, reason = "held for its Drop")] Flock<fs::File>);

/// Takes the apply lock; waits for a concurrent apply to finish.
pub fn lock() -> Result<Lock> {
    let path = dir()?.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .context(|| format!("opening {}", path.display()))?;
    let locked = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Io { what: format!("locking {}", path.display()), source: e.into() })?;
    Ok(Lock(locked))
}

/// The applied state, if any.
pub fn load() -> Result<Option<State>> {
    read(&dir()?.join(STATE))
}

/// The state before the last apply (kept so that an apply killed between saving its state and
/// flipping the datapath cannot leave the state ahead of the datapath).
pub fn load_prev() -> Result<Option<State>> {
    read(&dir()?.join(STATE_PREV))
}

fn read(path: &std::path::Path) -> Result<Option<State>> {
    read_json(path)
}

const STATE: &str = "state.json";
const STATE_PREV: &str = "state.prev.json";

/// A JSON file of the state directory; `None` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::StateFile { path: path.to_path_buf(), detail: e.to_string() })
}

/// Writes `bytes` to `path` atomically, mode 0600: a temporary file beside it, fsync, rename.
/// Readers see the old file or the new one, never a part.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes).context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().context(|| format!("syncing {}", tmp.display()))?;
    // `mode` applies only when the file is created: an old temporary file keeps its mode.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, path).context(|| format!("renaming to {}", path.display()))
}

fn encode<T: Serialize>(what: &str, v: &T, pretty: bool) -> Result<Vec<u8>> {
    let r = if pretty { serde_json::to_vec_pretty(v) } else { serde_json::to_vec(v) };
    r.map_err(|source| Error::Encode { what: what.to_string(), source })
}

/// Saves the state of a new apply, keeping the current one as `state.prev.json`. Returns
/// whether there was a current one (for [`undo_new`]).
pub fn save_new(state: &State) -> Result<bool> {
    let dir = dir()?;
    let path = dir.join(STATE);
    let had_state = path.exists();
    if had_state {
        fs::rename(&path, dir.join(STATE_PREV)).context(|| format!("rotating {}", path.display()))?;
    }
    save(state)?;
    Ok(had_state)
}

/// Takes back [`save_new`] (an apply that failed after saving): `state.prev.json` becomes
/// `state.json` again, or `state.json` goes when there was none before.
pub fn undo_new(had_state: bool) -> Result<()> {
    let dir = dir()?;
    let path = dir.join(STATE);
    if had_state {
        fs::rename(dir.join(STATE_PREV), &path).context(|| format!("restoring {}", path.display()))
    } else {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Writes the state (atomically).
pub fn save(state: &State) -> Result<()> {
    write_atomic(&dir()?.join(STATE), &encode("the state", state, false)?)
}

/// Holds the daemon lock of this network namespace (one `sgctl daemon` per namespace, that is
/// per host for the root namespace) until dropped.
pub struct DaemonLock {
    _lock: Flock<fs::File>,
    info: PathBuf,
}

/// What a running daemon tells other commands (`daemon.json` in the state directory).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    /// The rules file it reconciles from (file mode).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The fleet it follows (fleet mode): etcd endpoints and key prefix.
    #[serde(default)]
    pub fleet: Option<String>,
    /// Its JSON-lines flow log, if any (`sgctl flows` reads it).
    pub flow_log: Option<PathBuf>,
    /// Its VPC Flow Logs v2 file, if any.
    pub vpc_flow_log: Option<PathBuf>,
    /// Its metrics address, if any.
    pub metrics: Option<String>,
    /// Unix time (seconds) it started.
    pub started: u64,
}

/// Takes the daemon lock without waiting: fails if another daemon holds it.
pub fn daemon_lock() -> Result<DaemonLock> {
    let dir = dir()?;
    let path = dir.join("daemon.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .context(|| format!("opening {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(DaemonLock { _lock: l, info: dir.join("daemon.json") }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            Err(Error::DaemonRunning { pid: daemon_info().ok().flatten().map(|i| i.pid), lock: path })
        }
        Err((_, e)) => Err(Error::Io { what: format!("locking {}", path.display()), source: e.into() }),
    }
}

impl DaemonLock {
    /// Publishes `info` (`daemon.json`, 0600, written atomically).
    pub fn publish(&self, info: &DaemonInfo) -> Result<()> {
        write_atomic(&self.info, &encode("daemon.json", info, true)?)
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.info);
    }
}

/// The running daemon's `daemon.json`, if any (a stale file after `kill -9` is still read:
/// check the pid if it matters).
pub fn daemon_info() -> Result<Option<DaemonInfo>> {
    read_json(&dir()?.join("daemon.json"))
}

/// The rule-set number the datapath enforces on the first attached interface of `s`.
fn live_seq(s: &State) -> Result<Option<u64>> {
    for b in &s.ruleset.interfaces {
        if let Ok(Some(a)) = loader::open_attached(&b.iface) {
            let cfg = a.maps.config()?;
            if cfg.policy_mode == sg_common::config::POLICY_GROUPS {
                return Ok(Some(cfg.policy_seq));
            }
        }
    }
    Ok(None)
}

/// The applied state that matches the datapath: after an apply that died between saving its
/// state and flipping, that is the previous state.
pub fn current_state() -> Result<Option<State>> {
    let Some(s) = load()? else { return Ok(None) };
    if let Some(seq) = live_seq(&s)?
        && seq != s.seq
        && let Some(prev) = load_prev()?
        && prev.seq == seq
    {
        log::warn!("rule set #{} was saved but never applied (interrupted apply): using #{seq}", s.seq);
        return Ok(Some(prev));
    }
    Ok(Some(s))
}

/// The applied rule set, or [`Error::NoRuleSet`].
pub fn applied() -> Result<State> {
    current_state()?.ok_or(Error::NoRuleSet)
}
