//! A `sgctl daemon` child process in a test namespace: its log goes to a file, and it is
//! killed (SIGKILL) and reaped on drop, also on panic.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
};

use crate::netns::{NetnsPair, Side};

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `sgctl -v daemon ARGS` in side A's namespace; `name` names its log file.
    pub fn start(pair: &NetnsPair, name: &str, args: &[&str]) -> Daemon {
        Daemon::start_in(pair.ns(Side::A), name, args)
    }

    /// Starts `sgctl -v daemon ARGS` in namespace `ns`.
    pub fn start_in(ns: &str, name: &str, args: &[&str]) -> Daemon {
        Daemon::start_with_env(ns, name, args, &[])
    }

    /// Starts `sgctl -v daemon ARGS` in namespace `ns` with environment variables `env` added.
    pub fn start_with_env(ns: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let bin = crate::sgctl_path();
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        let log = crate::write_temp(&format!("daemon-{name}.log"), "");
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        let log2 = log.clone();
        let child = crate::netns::run_in_ns(ns, move || {
            let err = std::fs::File::create(&log2).expect("log file");
            Command::new(bin)
                .arg("-v")
                .arg("daemon")
                .args(&args)
                .envs(env)
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("spawn sgctl daemon")
        });
        Daemon { child: Some(child), log }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (10 s at most, then SIGKILL) for its exit status.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("daemon already stopped");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(10) {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
