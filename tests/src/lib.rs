//! Test harness for sgctl's privileged tests (and the demo):
//!
//! - [`netns`]: two network namespaces joined by a veth pair, documentation addresses only,
//!   unique names (tests run in parallel), torn down on drop and on panic; closures and
//!   `sgctl` run inside a namespace through `setns` on a dedicated thread.
//! - [`etcd`]: a real etcd cluster on 127.0.0.1, members stopped and restarted at will,
//!   removed on drop.
//! - [`packet`]: a small builder for v4/v6/VLAN/TCP/UDP/ICMP frames, and hostile variants.
//! - [`verdict`]: verdict tables (description, frame, expected action and reason) run through
//!   BPF_PROG_TEST_RUN against the real programs and maps.
//! - [`probes`]: live TCP and UDP traffic kept running through an event, with what it lost.
//! - [`old_build`]: the sgctl of an older commit of this repository, built once, for upgrade
//!   tests.
//! - [`require_bpf`]: privileged tests call it first; with `CI=true` a test that cannot run
//!   fails instead of skipping.

pub mod daemon;
pub mod etcd;
pub mod fleet;
pub mod lan;
pub mod netns;
pub mod old_build;
pub mod packet;
pub mod policy;
pub mod probes;
pub mod refparse;
pub mod tcx;
pub mod verdict;

use std::path::{Path, PathBuf};

/// What is missing for privileged tests, or an empty list.
pub fn missing_privileges() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("not root".to_string());
    }
    if sg_userspace::pins::check_bpffs().is_err() {
        missing.push("bpffs not mounted at /sys/fs/bpf".to_string());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel without BTF (/sys/kernel/btf/vmlinux)".to_string());
    }
    missing
}

/// `true` when privileged tests can run. Otherwise: with `CI=true` panics (a privileged test
/// never skips in CI); else prints a SKIP line and returns `false`.
pub fn require_bpf(test: &str) -> bool {
    let missing = missing_privileges();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{test}: privileged test cannot run ({why}); CI=true, so this is a failure, not a skip"
    );
    eprintln!("SKIP {test}: {why} (set CI=true to make this a failure)");
    false
}

/// Path of the `sgctl` binary of this build (next to the test executable's `deps/`).
pub fn sgctl_path() -> PathBuf {
    if let Ok(p) = std::env::var("SGCTL") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join("sgctl");
    assert!(
        p.exists(),
        "{} not built: run `cargo build -p sg-userspace` first (cargo xtask test does)",
        p.display()
    );
    p
}

/// The documentation a reader has: README.md and every page of docs/, one after the other (a
/// table that restates code is in one of them; the tests that hold it equal read this).
pub fn docs() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    pages.extend(more);
    pages
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `text` to `name` in a directory of its own under this test process's temporary
/// directory; returns the path. Every call gets a new directory, so that tests of different
/// areas running side by side in one test binary never share a file (the name is kept: errors
/// print it).
pub fn write_temp(name: &str, text: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sgctl-test-{}", std::process::id())).join(n.to_string());
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

/// Writes a rules file (as [`write_temp`]) with one group bound to `iface` that allows each
/// `PROTO PORT` of `ingress` (`"tcp 7000"`) from 192.0.2.0/24; `extra` lines go under the
/// interface's table (`"monitor = true\n"`).
pub fn group_rules(name: &str, iface: &str, ingress: &[&str], extra: &str) -> PathBuf {
    let rules: Vec<String> = ingress
        .iter()
        .map(|r| {
            let (proto, port) = r.split_once(' ').expect("PROTO PORT");
            format!("  {{ proto = \"{proto}\", ports = \"{port}\", from = \"192.0.2.0/24\" }},")
        })
        .collect();
    let text = format!(
        "[groups.g]\ningress = [\n{}\n]\n\n[interfaces.{iface}]\ngroups = [\"g\"]\n{extra}",
        rules.join("\n")
    );
    write_temp(name, &text)
}

/// One counter (`packets` or `bytes`) of an interface object of `sgctl status --json`.
pub fn reason_count(iface: &serde_json::Value, dir: &str, reason: &str, field: &str) -> u64 {
    iface["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .find(|c| c["direction"] == dir && c["reason"] == reason)
        .and_then(|c| c[field].as_u64())
        .unwrap_or_else(|| panic!("no counter {dir}/{reason}"))
}

/// Polls `f` every 10 ms until it holds or `limit` passes; returns how long it took.
pub fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}
