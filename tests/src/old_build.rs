//! An older sgctl, built from this repository's own history, for upgrade tests: the build of
//! commit [`FIELD`], the last one before map layouts were numbered, which is what is in the
//! field. Built once per machine into `target/old-<commit>/` (`git archive` of the commit,
//! then `cargo build` of its `sgctl` with its own target directory; a few minutes the first
//! time), shared by every test binary through a lock file.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The commit whose instances the first upgrade in the field starts from.
pub const FIELD: &str = "47437fc";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests has a parent").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}

/// The `sgctl` binary of commit `commit`, built if needed. Panics when the commit is not in
/// this clone's history (a shallow clone: fetch its history first).
pub fn sgctl_of(commit: &str) -> PathBuf {
    let base = target_dir().join(format!("old-{commit}"));
    let bin = base.join("debug/sgctl");
    std::fs::create_dir_all(&base).expect("create the old build's directory");
    // One build at a time, across test binaries.
    let lock = std::fs::File::create(base.join("lock")).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("flock");
    if bin.exists() {
        return bin;
    }
    let root = workspace_root();
    let has = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "commit {commit} (the field's sgctl, for the upgrade tests) is not in this clone's history: \
         `git fetch --unshallow` first"
    );
    let src = base.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("src dir");
    let archive = base.join("src.tar");
    run(Command::new("git")
        .args(["archive", "--format=tar", "-o"])
        .arg(&archive)
        .arg(commit)
        .current_dir(&root));
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&src));
    eprintln!("building sgctl of commit {commit} for the upgrade tests (once; a few minutes)...");
    // A clean environment: nothing of this test's cargo run (its toolchain, manifest, flags)
    // may leak into the old tree's build.
    let mut cmd = Command::new("cargo");
    cmd.env_clear();
    for key in ["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME", "RUSTUP_AUTO_INSTALL", "TMPDIR", "CI"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    run(cmd
        .args(["build", "--quiet", "--package", "sg-userspace", "--bin", "sgctl"])
        .env("CARGO_TARGET_DIR", &base)
        .current_dir(&src));
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}
