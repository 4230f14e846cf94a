//! `cargo xtask <command>`: toolchain bootstrap, demo, the whole test suite, lints, benchmarks.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` works on a
//! fresh machine and installs what the rest of the build needs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod package;
mod setup;

#[derive(Parser)]
#[command(name = "xtask", about = "sgctl developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (rust-src, bpf-linker, bpffs mount, Debian tools); idempotent.
    Setup,
    /// Set up, build, and run the demo: two namespaces, sgctl attached, real traffic
    /// (`demo fleet`: three hosts and an etcd cluster, a group following a host).
    Demo {
        /// Which demo: none for the single host, `fleet` for the fleet.
        #[arg(value_parser = ["fleet"])]
        which: Option<String>,
    },
    /// Set up, build, and run the whole test suite, fmt and clippy, and a short fuzz run.
    Test,
    /// Clippy with -D warnings on the host crates and on sg-ebpf for its BPF target.
    Clippy,
    /// Benchmarks: sgctl against nftables, xdp-filter, bare XDP and no filter. Writes
    /// bench/results/*.csv, BENCHMARKS.md and bench/*.svg (--quick: target/bench-quick/).
    Bench {
        /// Every configuration briefly (under 3 minutes); checks only that each produced numbers.
        #[arg(long)]
        quick: bool,
        /// Only these sections (testrun, traffic, iperf3, connrate, updates, lifecycle, attacks, memory, learn, fleet), comma-separated.
        #[arg(long)]
        only: Option<String>,
    },
    /// The Debian package (target/debian/sgctl_VERSION_ARCH.deb), checked by lintian.
    Package {
        /// Package this sgctl instead of building the release one.
        #[arg(long)]
        sgctl: Option<PathBuf>,
        /// Package version (default: the workspace's).
        #[arg(long)]
        version: Option<String>,
        /// Output directory (default: target/debian).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip the lintian check.
        #[arg(long)]
        no_lintian: bool,
    },
    /// Fuzz the rules front ends and the compiler (cargo fuzz, bounded in time).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target (toml_rules, aws_json, compile).
        #[arg(long)]
        target: Option<String>,
        /// Fuzz on a copy of the corpus (CI); by default new inputs are added to the corpus
        /// in the repository, to be committed.
        #[arg(long)]
        scratch: bool,
    },
}

fn main() -> std::process::ExitCode {
    match run_cli(&Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: &Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup => setup::all(),
        Cmd::Demo { ref which } => {
            setup::all()?;
            cargo(&["build", "--package", "sg-userspace", "--package", "sg-tests", "--bins"])?;
            let demo = target_dir().join("debug").join("sg-demo");
            run(Command::new(&demo).args(which).env("SGCTL", target_dir().join("debug").join("sgctl")))
        }
        Cmd::Test => {
            setup::all()?;
            // nft for the export test, and what the quick benchmark at the end drives.
            setup::bench_tools()?;
            cargo(&["build", "--package", "sg-userspace", "--bins"])?;
            cargo(&["test", "--", "--show-output"])?;
            cargo(&["fmt", "--all", "--check"])?;
            clippy()?;
            fuzz::run(15, None, true)?;
            // The benchmark, briefly, so that it cannot rot (numbers only, no speed asserted).
            bench(true, None)
        }
        Cmd::Bench { quick, ref only } => {
            setup::all()?;
            bench(quick, only.as_deref())
        }
        Cmd::Clippy => clippy(),
        Cmd::Package { ref sgctl, ref version, ref out, no_lintian } => {
            if sgctl.is_none() {
                setup::all()?;
            }
            package::build(&package::Options {
                sgctl: sgctl.clone(),
                version: version.clone(),
                out: out.clone(),
                lintian: !no_lintian,
            })
            .map(|_| ())
        }
        Cmd::Fuzz { secs, ref target, scratch } => {
            setup::all()?;
            fuzz::run(secs, target.as_deref(), scratch)
        }
    }
}

/// Builds release binaries, installs the peers, runs sg-bench from the workspace root.
fn bench(quick: bool, only: Option<&str>) -> Result<()> {
    setup::bench_tools()?;
    cargo(&["build", "--release", "--package", "sg-userspace", "--package", "sg-bench", "--bins"])?;
    let release = target_dir().join("release");
    let mut cmd = Command::new(release.join("sg-bench"));
    cmd.env("SGCTL", release.join("sgctl")).current_dir(workspace_root());
    if quick {
        cmd.arg("--quick");
    }
    if let Some(only) = only {
        cmd.args(["--only", only]);
    }
    run(&mut cmd)
}

fn clippy() -> Result<()> {
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    // The datapath as attached, and the benchmark's objects (features `stages`, `bench`).
    for features in [&[][..], &["--features", "stages,bench"][..]] {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", "clippy", "--package", "sg-ebpf"])
            .args(features)
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--release"])
            .args(["--target-dir", &target_dir().join("ebpf-clippy").to_string_lossy()])
            .args(["--", "-D", "warnings"])
            .current_dir(workspace_root());
        // rustup's proxy environment from the stable cargo must not leak into the nightly one.
        for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "RUSTUP_TOOLCHAIN"] {
            cmd.env_remove(key);
        }
        run(&mut cmd)?;
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(Command::new(cargo).args(args).current_dir(workspace_root()))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
