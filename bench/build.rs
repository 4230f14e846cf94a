//! Builds the benchmark's eBPF objects (nightly, bpfel-unknown-none, aya-build) into OUT_DIR:
//! `sg-ebpf` with the stage stops (feature `stages`, `sg-ebpf/src/stage.rs`), which only the
//! benchmark loads into private instances, and `sg-bench` (feature `bench`: the baselines and
//! the built-in traffic generator). sgctl itself embeds neither.
use std::{path::PathBuf, time::Instant};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir =
        manifest.parent().ok_or_else(|| anyhow::anyhow!("bench has no parent directory"))?.join("sg-ebpf");
    let root_dir =
        ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    println!("cargo:rerun-if-changed={}", manifest.join("../sg-common").display());
    // SAFETY: the build script is single-threaded; the nested cargo inherits the variable.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let started = Instant::now();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sg-ebpf",
            root_dir,
            features: &["stages", "bench"],
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    println!(
        "cargo:warning=benchmark eBPF objects (staged sg-ebpf, sg-bench) built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
