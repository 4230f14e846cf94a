//! `cargo xtask fuzz`: cargo fuzz on the rules front ends and the compiler, bounded in time.
//! The corpus lives in `sg-rules/fuzz/corpus/<target>/`.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{target_dir, workspace_root};

/// cargo-fuzz version known to work here.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
pub const TARGETS: &[&str] = &["toml_rules", "aws_json", "aws_inputs", "compile"];

fn cargo_fuzz_present() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))
            .with_context(|| format!("copying {}", e.path().display()))?;
    }
    Ok(())
}

pub fn run(secs: u64, only: Option<&str>, scratch: bool) -> Result<()> {
    if !cargo_fuzz_present() {
        println!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
        run_cmd(Command::new("cargo").args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    let crate_dir = workspace_root().join("sg-rules");
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("unknown fuzz target {t} (one of {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    for t in targets {
        let corpus = crate_dir.join("fuzz").join("corpus").join(t);
        let dir = if scratch {
            let d = target_dir().join("fuzz-corpus").join(t);
            let _ = std::fs::remove_dir_all(&d);
            copy_dir(&corpus, &d)?;
            d
        } else {
            corpus
        };
        println!("fuzz: {t} for {secs} s on {}", dir.display());
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", "fuzz", "run", t])
            .arg(&dir)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-timeout=10",
                "-rss_limit_mb=4096",
                "-print_final_stats=1",
            ])
            .current_dir(&crate_dir);
        for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "CARGO", "RUSTUP_TOOLCHAIN"] {
            cmd.env_remove(key);
        }
        run_cmd(&mut cmd).with_context(|| {
            format!("fuzz target {t} failed: the crashing input is in sg-rules/fuzz/artifacts/{t}/")
        })?;
    }
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    crate::run(cmd)
}
