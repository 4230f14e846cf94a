//! `cargo xtask setup`: one line per item, saying what it found or did. Idempotent.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{run, target_dir};

/// bpf-linker version known to work with the nightly's LLVM (newer ones need a newer LLVM).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major version of the installed nightly, which bpf-linker must match.
const LLVM_MAJOR: &str = "22";
/// Oldest kernel sgctl supports (XDP links, BTF, bounded loops).
const MIN_KERNEL: (u32, u32) = (5, 15);

pub fn all() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    bpffs()?;
    kernel()?;
    debian_tools()?;
    fleet_tools()?;
    Ok(())
}

fn say(item: &str, what: &str) {
    println!("setup: {item:<14} {what}");
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("no nightly toolchain (rustup toolchain list): sgctl's eBPF side needs it")?;
    Ok(PathBuf::from(sysroot))
}

fn rust_src() -> Result<()> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.exists() {
        say("rust-src", "present (nightly)");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    say("rust-src", "installed for nightly");
    Ok(())
}

fn bpf_linker_version() -> Option<String> {
    // Through rustup: the nightly's libLLVM is on its library path there.
    output(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = bpf_linker_version() {
        if v.contains(BPF_LINKER_VERSION) {
            say("bpf-linker", &format!("present ({v})"));
            return Ok(());
        }
        say("bpf-linker", &format!("found {v}, want {BPF_LINKER_VERSION}: reinstalling"));
    }
    // bpf-linker links against the LLVM shipped with the nightly: a prefix whose
    // lib/libLLVM.so points at it.
    let lib = nightly_sysroot()?.join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}")))
        })
        .with_context(|| format!("no libLLVM.so.{LLVM_MAJOR}* in {}", lib.display()))?;
    let prefix = target_dir().join("xtask").join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    say("bpf-linker", &format!("building {BPF_LINKER_VERSION} against {} (about 90 s)", llvm.display()));
    run(Command::new("cargo")
        .args(["install", "--locked", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", &format!("llvm-{LLVM_MAJOR}")])
        .env("LLVM_PREFIX", &prefix)
        .stdout(Stdio::null()))?;
    match bpf_linker_version() {
        Some(v) => say("bpf-linker", &format!("installed ({v})")),
        None => bail!("bpf-linker installed but does not run"),
    }
    Ok(())
}

const BPFFS: &str = "/sys/fs/bpf";

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.contains(" bpf ")))
}

fn bpffs() -> Result<()> {
    if bpffs_mounted() {
        say("bpffs", &format!("mounted at {BPFFS}"));
        return Ok(());
    }
    if !is_root() {
        say("bpffs", &format!("not mounted at {BPFFS} (needs root: mount -t bpf bpf {BPFFS})"));
        return Ok(());
    }
    fs::create_dir_all(BPFFS).ok();
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    say("bpffs", &format!("mounted at {BPFFS}"));
    Ok(())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).as_deref() == Some("0")
}

fn kernel() -> Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").context("reading kernel release")?;
    let release = release.trim();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < MIN_KERNEL {
        bail!("kernel {release} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("kernel {release} has no BTF (/sys/kernel/btf/vmlinux)");
    }
    say("kernel", &format!("{release} with BTF"));
    Ok(())
}

/// Debian packages the tests and the demo use: (command, package).
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("bpftool", "bpftool"),
    ("setpriv", "util-linux"),
    // `cargo xtask package` and its test: Debian's own tools for Debian's conventions.
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    ("deb-systemd-helper", "init-system-helpers"),
];

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn debian_tools() -> Result<()> {
    install_debian("tools", TOOLS)
}

/// What the fleet needs: etcd (server and etcdctl, started by the tests and the demo on
/// ports of their own), protoc and the well-known types it imports (etcd-client's build script
/// generates its gRPC code from protos that import `google/protobuf/descriptor.proto`, which
/// is in libprotobuf-dev: only a recommendation of protobuf-compiler, which we do not install).
const FLEET_TOOLS: &[(&str, &str)] = &[
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("protoc", "protobuf-compiler"),
    ("/usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev"),
];

fn fleet_tools() -> Result<()> {
    install_debian("fleet tools", FLEET_TOOLS)?;
    system_etcd_off()
}

/// Debian's etcd-server may start a system etcd on 127.0.0.1:2379: stop and disable it (the
/// tests never use that port, but a stray store is not ours to leave running).
fn system_etcd_off() -> Result<()> {
    let pids = output(Command::new("pgrep").args(["-x", "etcd"])).unwrap_or_default();
    let system: Vec<&str> = pids
        .lines()
        .filter(|pid| {
            // The package's service runs `/usr/bin/etcd` configured by /etc/default/etcd (no
            // --data-dir argument), on /var/lib/etcd. Other etcds (ours: sgctl-etcd-*, or an
            // operator's own) are left alone.
            let cmdline =
                String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                    .into_owned();
            !cmdline.contains("--data-dir") || cmdline.contains("/var/lib/etcd")
        })
        .collect();
    let systemd = Path::new("/run/systemd/system").exists();
    let enabled = systemd
        && output(Command::new("systemctl").args(["is-enabled", "etcd"])).is_some_and(|s| s == "enabled");
    if system.is_empty() && !enabled {
        say("system etcd", "not running (tests start their own)");
        return Ok(());
    }
    if !is_root() {
        say("system etcd", "running: stop it as root (systemctl disable --now etcd)");
        return Ok(());
    }
    if systemd {
        run(Command::new("systemctl").args(["disable", "--now", "etcd"]))?;
    } else {
        let _ = Command::new("service").args(["etcd", "stop"]).stdout(Stdio::null()).status();
        let _ = Command::new("update-rc.d").args(["etcd", "disable"]).stdout(Stdio::null()).status();
        for pid in &system {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
    say("system etcd", "was running: stopped and disabled (tests start their own)");
    Ok(())
}

/// Peers and generators of `cargo xtask bench`: (command, package).
const BENCH_TOOLS: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("xdp-filter", "xdp-tools"),
    ("trafgen", "netsniff-ng"),
    ("iperf3", "iperf3"),
    ("ethtool", "ethtool"),
];

/// Installs what the benchmark drives (nftables, xdp-tools, netsniff-ng, iperf3, ethtool).
pub fn bench_tools() -> Result<()> {
    install_debian("bench tools", BENCH_TOOLS)
}

/// Whether a tool entry is present: an absolute path must exist, anything else is a command.
fn present(what: &str) -> bool {
    if what.starts_with('/') { Path::new(what).exists() } else { have(what) }
}

/// Installs the Debian packages of the missing commands (or files) of `tools`; says what it did.
fn install_debian(item: &str, tools: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = tools.iter().filter(|(c, _)| !present(c)).map(|(_, p)| *p).collect();
    missing.dedup();
    let names: Vec<&str> = tools.iter().map(|(c, _)| *c).collect();
    if missing.is_empty() {
        say(item, &format!("present ({})", names.join(", ")));
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        say(item, &format!("missing Debian packages: {} (install them as root)", missing.join(" ")));
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["-qq", "update"]).stdout(Stdio::null());
    run(&mut update)?;
    let mut install = Command::new("apt-get");
    install.args(["-qq", "install", "-y", "--no-install-recommends"]).args(&missing);
    install.env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null());
    run(&mut install)?;
    say(item, &format!("installed {}", missing.join(" ")));
    Ok(())
}
