//! Network-namespace fixture: two namespaces joined by one veth pair.
//!
//! Network rule: both ends of the veth are inside namespaces created here; addresses only from
//! 192.0.2.0/24 and 2001:db8::/32; no default route; everything is deleted on drop (also when
//! a test panics), including sgctl's pins for these namespaces.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The protected host (sgctl attaches here in most tests).
    A,
    /// The peer.
    B,
}

pub struct NetnsPair {
    pub ns_a: String,
    pub ns_b: String,
    /// Interface in `ns_a`.
    pub if_a: String,
    /// Interface in `ns_b`.
    pub if_b: String,
    pub v4_a: Ipv4Addr,
    pub v4_b: Ipv4Addr,
    pub v6_a: Ipv6Addr,
    pub v6_b: Ipv6Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl NetnsPair {
    /// Creates the namespaces, the veth pair, addresses (v4 /24 and v6 /64) and brings all up.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id());
        let pair = NetnsPair {
            ns_a: format!("sgt-{id}-a"),
            ns_b: format!("sgt-{id}-b"),
            if_a: format!("s{id}a"),
            if_b: format!("s{id}b"),
            v4_a: Ipv4Addr::new(192, 0, 2, 1),
            v4_b: Ipv4Addr::new(192, 0, 2, 2),
            v6_a: "2001:db8::1".parse().expect("v6"),
            v6_b: "2001:db8::2".parse().expect("v6"),
        };
        assert!(pair.if_a.len() < 16, "interface name too long: {}", pair.if_a);
        if let Err(e) = pair.setup() {
            drop(pair);
            panic!("netns fixture: {e}");
        }
        pair
    }

    fn setup(&self) -> Result<(), String> {
        ip(&["netns", "add", &self.ns_a])?;
        ip(&["netns", "add", &self.ns_b])?;
        for ns in [&self.ns_a, &self.ns_b] {
            // DAD off before any link exists: fresh IPv6 addresses are usable at once.
            for key in ["all", "default"] {
                self.sysctl(ns, &format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", &self.if_a, "netns", &self.ns_a, "type", "veth", "peer", "name", &self.if_b,
            "netns", &self.ns_b,
        ])?;
        for (ns, ifn, v4, v6) in
            [(&self.ns_a, &self.if_a, self.v4_a, self.v6_a), (&self.ns_b, &self.if_b, self.v4_b, self.v6_b)]
        {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", ifn])?;
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", ifn, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
        }
        Ok(())
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        run_in_ns(ns, move || std::fs::write(&path, value).map_err(|e| format!("{path}: {e}")))
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    pub fn iface(&self, side: Side) -> &str {
        match side {
            Side::A => &self.if_a,
            Side::B => &self.if_b,
        }
    }

    pub fn addr(&self, side: Side, v6: bool) -> IpAddr {
        match (side, v6) {
            (Side::A, false) => IpAddr::V4(self.v4_a),
            (Side::B, false) => IpAddr::V4(self.v4_b),
            (Side::A, true) => IpAddr::V6(self.v6_a),
            (Side::B, true) => IpAddr::V6(self.v6_b),
        }
    }

    /// Runs `f` on a thread that has entered `side`'s network namespace.
    pub fn run<T: Send + 'static>(&self, side: Side, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_ns(self.ns(side), f)
    }

    /// Starts `f` on a thread inside `side`'s network namespace.
    pub fn run_spawn<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in_ns(self.ns(side), f)
    }

    /// Runs `sgctl ARGS` inside `side`'s namespace.
    pub fn sgctl(&self, side: Side, args: &[&str]) -> Output {
        let bin = crate::sgctl_path();
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        self.run(side, move || Command::new(bin).args(&args).output().expect("spawn sgctl"))
    }

    /// `sgctl ARGS` that must succeed; returns stdout.
    pub fn sgctl_ok(&self, side: Side, args: &[&str]) -> String {
        let out = self.sgctl(side, args);
        assert!(
            out.status.success(),
            "sgctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Any other command inside `side`'s namespace.
    pub fn cmd(&self, side: Side, program: &str, args: &[&str]) -> Output {
        let program = program.to_string();
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        self.run(side, move || Command::new(program).args(&args).output().expect("spawn"))
    }

    /// Cookie of `side`'s namespace (sgctl keys its pins and state by it).
    pub fn cookie(&self, side: Side) -> Option<u64> {
        let path = format!("/run/netns/{}", self.ns(side));
        if !std::path::Path::new(&path).exists() {
            return None;
        }
        self.run(side, || sg_userspace::pins::current_netns_cookie().ok())
    }

    /// sgctl's pin directory for `side`'s namespace.
    pub fn pin_dir(&self, side: Side) -> Option<PathBuf> {
        self.cookie(side).map(sg_userspace::pins::netns_dir_for)
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for side in [Side::A, Side::B] {
            if let Some(cookie) = self.cookie(side) {
                let _ = std::fs::remove_dir_all(sg_userspace::pins::netns_dir_for(cookie));
                let _ = std::fs::remove_dir_all(sg_userspace::state::state_dir_for(cookie));
            }
        }
        // Deleting a namespace deletes its end of the veth, which deletes the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}

/// Runs `f` on a new thread inside the named namespace (`/run/netns/NAME`).
/// Only that thread changes namespace; /sys stays as it is (unlike `ip netns exec`).
pub fn run_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_ns(ns, f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts `f` on a new thread inside the named namespace; join the handle for its result.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}
