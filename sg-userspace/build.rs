//! Builds the eBPF object (`sg-ebpf`, nightly, bpfel-unknown-none) with aya-build and leaves it
//! in OUT_DIR, where `loader/mod.rs` embeds it. Needs rust-src on nightly and bpf-linker:
//! `cargo xtask setup` installs both.
//!
//! aya-build relays everything the nested cargo prints on stderr as `cargo:warning` lines (about
//! fifty `Compiling ...` lines on a clean build). The nested cargo runs quiet
//! (`CARGO_TERM_QUIET`), so what reaches the terminal is the compiler's own diagnostics (real
//! warnings and errors, which aya-build relays from cargo's JSON messages) and one line that says
//! what was built and how long it took.
use std::{path::PathBuf, time::Instant};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest
        .parent()
        .ok_or_else(|| anyhow::anyhow!("sg-userspace has no parent directory"))?
        .join("sg-ebpf");
    let root_dir =
        ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // The build instances record (`loader::BUILD`): the commit, when built from a checkout.
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .current_dir(&manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "no git".to_string(),
            |o| format!("git {}", String::from_utf8_lossy(&o.stdout).trim()),
        );
    println!("cargo:rustc-env=SGCTL_GIT={git}");
    if let Some(head) = manifest.parent().map(|p| p.join(".git/HEAD")).filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    // sg-common is shared: a change there must rebuild the eBPF object too.
    println!("cargo:rerun-if-changed={}", manifest.join("../sg-common").display());
    // SAFETY: the build script is single-threaded here; the variable is read by the nested
    // cargo that aya-build spawns (it inherits this environment).
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let started = Instant::now();
    aya_build::build_ebpf(
        [aya_build::Package { name: "sg-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )?;
    println!(
        "cargo:warning=eBPF object sg-ebpf built (nightly, bpfel-unknown-none) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
