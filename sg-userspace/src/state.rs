//! sgctl's state directory: `/run/sgctl/<netns cookie>/` (0700), per network namespace like the
//! pins. `state.json` (0600) holds the applied rule set with its sequence number; `lock`
//! serialises applies. The state lives in /run, like the pins on bpffs: both are gone after a
//! reboot, together.

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
    pins,
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
}

impl State {
    /// Hits of rule `id` on `iface` from earlier generations.
    pub fn base_hits(&self, iface: &str, id: usize) -> u64 {
        self.hit_base.get(iface).and_then(|v| v.get(id)).copied().unwrap_or(0)
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
    read(&dir()?.join("state.json"))
}

/// The state before the last apply (kept so that an apply killed between saving its state and
/// flipping the datapath cannot leave the state ahead of the datapath).
pub fn load_prev() -> Result<Option<State>> {
    read(&dir()?.join("state.prev.json"))
}

fn read(path: &std::path::Path) -> Result<Option<State>> {
    read_json(path)
}

/// A JSON file of the state directory; `None` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Inconsistent {
        iface: "-".into(),
        detail: format!("{} is not valid: {e}", path.display()),
    })
}

/// Saves the state of a new apply, keeping the current one as `state.prev.json`.
pub fn save_new(state: &State) -> Result<()> {
    let dir = dir()?;
    let path = dir.join("state.json");
    if path.exists() {
        fs::rename(&path, dir.join("state.prev.json")).context(|| format!("rotating {}", path.display()))?;
    }
    save(state)
}

/// Writes the state atomically (temporary file, fsync, rename).
pub fn save(state: &State) -> Result<()> {
    let dir = dir()?;
    let path = dir.join("state.json");
    let tmp = dir.join(format!("state.json.{}", std::process::id()));
    let text = serde_json::to_vec(state)
        .map_err(|e| Error::Inconsistent { iface: "-".into(), detail: e.to_string() })?;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&text).context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().context(|| format!("syncing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
        .context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, &path).context(|| format!("renaming to {}", path.display()))
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
    /// The rules file it reconciles from.
    pub config: PathBuf,
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
            let other =
                daemon_info().ok().flatten().map_or_else(String::new, |i| format!(" (pid {})", i.pid));
            Err(Error::Usage {
                what: format!("another sgctl daemon{other} runs for this network namespace"),
                detail: format!("it holds {}; stop it first", path.display()),
            })
        }
        Err((_, e)) => Err(Error::Io { what: format!("locking {}", path.display()), source: e.into() }),
    }
}

impl DaemonLock {
    /// Publishes `info` (`daemon.json`, 0600, written atomically).
    pub fn publish(&self, info: &DaemonInfo) -> Result<()> {
        let text = serde_json::to_vec_pretty(info)
            .map_err(|e| Error::Inconsistent { iface: "-".into(), detail: e.to_string() })?;
        let tmp = self.info.with_extension("json.tmp");
        fs::write(&tmp, text).context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .context(|| format!("chmod {}", tmp.display()))?;
        fs::rename(&tmp, &self.info).context(|| format!("renaming to {}", self.info.display()))
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
