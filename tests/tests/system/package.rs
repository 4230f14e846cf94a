//! The Debian package (`cargo xtask package`, issue 33) installed, upgraded and removed in a
//! throwaway root while an interface enforces: an overlay over `/` whose upper layer is a
//! directory of this test's on tmpfs, mounted in a mount namespace of each command's own (so
//! nothing of it outlives the command, and the machine's own root and dpkg database are left
//! as they were), entered in the test's network namespace.
//!
//! The previous version's package holds the field's sgctl (commit `old_build::FIELD`, whose
//! map layout is older); the upgrade to this build's package runs through the maintainer
//! scripts (postinst: `sgctl upgrade`) under traffic: no numbered datagram lost, the TCP
//! connection alive, no datagram to a denied port delivered.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use sg_tests::{
    netns::{NetnsPair, Side},
    old_build, require_bpf, write_temp,
};

use super::lifecycle_upgrade::{Traffic, rules};

/// A throwaway root: an overlay over `/` (upper and work directories under /dev/shm, removed
/// on drop), and the packages to install into it.
struct Root {
    dir: PathBuf,
}

impl Root {
    fn new() -> Root {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/dev/shm/sgctl-pkg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["upper", "work", "merged", "debs"] {
            std::fs::create_dir_all(dir.join(d)).expect("root dirs");
        }
        Root { dir }
    }

    /// What the overlay's upper layer holds at `path` (a path of the throwaway root): the
    /// root's own files, never the machine's.
    fn has(&self, path: &str) -> bool {
        self.dir.join("upper").join(path.trim_start_matches('/')).exists()
    }

    /// `sh -c script` chrooted into the overlay, in `pair`'s namespace A: returns its output
    /// (stdout and stderr together) and whether it succeeded.
    fn run(&self, pair: &NetnsPair, script: &str) -> (bool, String) {
        let d = self.dir.display().to_string();
        let setup = format!(
            "set -e; M={d}/merged; \
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/upper,workdir={d}/work $M; \
             mount --rbind /proc $M/proc; mount --rbind /sys $M/sys; mount --rbind /dev $M/dev; \
             mkdir -p /run/sgctl $M/run/sgctl; mount --bind /run/sgctl $M/run/sgctl; \
             exec chroot $M /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
             DEBIAN_FRONTEND=noninteractive sh -ec \"$0\""
        );
        let script = format!("exec 2>&1; {script}");
        let out: Output = pair.run(Side::A, move || {
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", &setup, &script])
                .output()
                .expect("spawn unshare")
        });
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Whether `path` exists in the throwaway root as it is seen from inside (lower + upper).
    fn merged_path_exists(&self, pair: &NetnsPair, path: &str) -> bool {
        self.run(pair, &format!("test -e {path}")).0
    }

    fn ok(&self, pair: &NetnsPair, script: &str) -> String {
        let (ok, out) = self.run(pair, script);
        assert!(ok, "in the throwaway root, `{script}` failed:\n{out}");
        out
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cargo xtask package` of `sgctl` as `version` into `out` (the xtask binary `cargo xtask
/// test` built beside the test binaries): the .deb's path.
fn package(sgctl: &Path, version: &str, out: &Path, lintian: bool) -> PathBuf {
    let xtask = sg_tests::sgctl_path().with_file_name("xtask");
    assert!(xtask.exists(), "{} not built: run the tests with `cargo xtask test`", xtask.display());
    let mut cmd = Command::new(&xtask);
    cmd.arg("package").arg("--sgctl").arg(sgctl).args(["--version", version]).arg("--out").arg(out);
    if !lintian {
        cmd.arg("--no-lintian");
    }
    let o = cmd.output().expect("spawn xtask package");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "xtask package {version} failed:\n{text}");
    if lintian {
        assert!(text.contains("lintian reports no error and no warning"), "{text}");
    }
    let deb = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("package: ").filter(|p| Path::new(p).extension().is_some_and(|e| e == "deb"))
        })
        .unwrap_or_else(|| panic!("no package path in:\n{text}"));
    PathBuf::from(deb)
}

fn host_dpkg_state() -> String {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", "sgctl"])
        .output()
        .expect("dpkg-query");
    format!("{} {}", o.status, String::from_utf8_lossy(&o.stdout))
}

#[test]
fn the_package_installs_upgrades_and_removes_while_an_interface_enforces() {
    if !require_bpf("the_package_installs_upgrades_and_removes_while_an_interface_enforces") {
        return;
    }
    let host_before = host_dpkg_state();
    let root = Root::new();
    let debs = root.dir.join("debs");
    let prev = package(&old_build::sgctl_of(old_build::FIELD), "0.1.0~field1", &debs, false);
    let cur = package(&sg_tests::sgctl_path(), "0.1.0", &debs, true);
    let pair = NetnsPair::new();

    // Installing enforces nothing, and applies no policy.
    let out = root.ok(&pair, &format!("dpkg -i {}", prev.display()));
    assert!(!out.contains("taking over"), "{out}");
    assert_eq!(
        pair.status_json()["interfaces"].as_array().map(Vec::len),
        Some(0),
        "installing attached something"
    );
    let files = [
        "/usr/sbin/sgctl",
        "/lib/systemd/system/sgctl.service",
        "/etc/sgctl/example.toml",
        "/etc/logrotate.d/sgctl",
        "/usr/share/man/man8/sgctl.8.gz",
        "/usr/share/bash-completion/completions/sgctl",
        "/usr/share/zsh/vendor-completions/_sgctl",
        "/usr/share/fish/vendor_completions.d/sgctl.fish",
    ];
    let missing =
        root.ok(&pair, &format!("for f in {}; do test -e $f || echo missing $f; done", files.join(" ")));
    assert!(!missing.contains("missing"), "the package did not install: {missing}");
    // ... into the throwaway root, not the machine's (the overlay's upper layer holds it).
    assert!(root.has("usr/sbin/sgctl"), "the binary is not in the throwaway root's own layer");
    assert!(!root.merged_path_exists(&pair, "/etc/sgctl/rules.toml"), "the package wrote a rules file");

    // The previous version's sgctl enforces on the interface.
    let file = write_temp(&format!("{}-pkg.toml", pair.if_a), &rules(&pair.if_a));
    root.ok(&pair, &format!("sgctl attach {} --mode generic && sgctl apply {}", pair.if_a, file.display()));
    let st = pair.status_json();
    assert_eq!(st["interfaces"][0]["datapath"]["state"], "older", "{st}");

    // The upgrade through the maintainer scripts, under traffic.
    let traffic = Traffic::start(&pair);
    std::thread::sleep(Duration::from_millis(300));
    let out = root.ok(&pair, &format!("dpkg -i {}", cur.display()));
    std::thread::sleep(Duration::from_millis(500));
    traffic.check("package upgrade 0.1.0~field1 -> 0.1.0");
    assert!(out.contains("taking over the attached interfaces") && out.contains("changed layout"), "{out}");
    let st = pair.status_json();
    assert_eq!(st["interfaces"][0]["datapath"]["state"], "current", "{st}");
    assert_eq!(root.ok(&pair, "dpkg-query -W -f '${Version}' sgctl"), "0.1.0");

    // Removing leaves enforcement in place, and says so.
    let traffic = Traffic::start(&pair);
    let out = root.ok(&pair, "dpkg -r sgctl");
    assert!(out.contains(&format!("still enforcing on: {}", pair.if_a)), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    traffic.check("after dpkg -r");
    assert!(!root.merged_path_exists(&pair, "/usr/sbin/sgctl"), "the binary was not removed");
    assert!(root.merged_path_exists(&pair, "/etc/sgctl/example.toml"), "remove took a conffile");

    // Purging removes the configuration (and the flow logs), still not the enforcement.
    root.ok(&pair, "mkdir -p /var/log/sgctl && touch /var/log/sgctl/flows.jsonl && dpkg --purge sgctl");
    assert!(!root.merged_path_exists(&pair, "/etc/sgctl/example.toml"), "purge left the conffile");
    assert!(!root.merged_path_exists(&pair, "/var/log/sgctl"), "purge left the flow logs");
    assert_eq!(pair.status_json()["interfaces"][0]["iface"], pair.if_a.as_str(), "purge detached");

    // The machine's own package database never saw any of it.
    assert_eq!(host_dpkg_state(), host_before, "the machine's dpkg database changed");
    drop(root);
}
