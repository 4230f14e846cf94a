//! Builds the eBPF object (`sg-ebpf`, nightly, bpfel-unknown-none) with aya-build and leaves it
//! in OUT_DIR, where `loader.rs` embeds it. Needs rust-src on nightly and bpf-linker:
//! `cargo xtask setup` installs both.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest
        .parent()
        .ok_or_else(|| anyhow::anyhow!("sg-userspace has no parent directory"))?
        .join("sg-ebpf");
    let root_dir =
        ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // sg-common is shared: a change there must rebuild the eBPF object too.
    println!("cargo:rerun-if-changed={}", manifest.join("../sg-common").display());
    aya_build::build_ebpf(
        [aya_build::Package { name: "sg-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
