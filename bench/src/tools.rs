//! External tools the benchmark drives: xdp-filter, bpftool, nft, interface statistics. Each
//! runs inside one of the benchmark's namespaces through `nsenter --net` (which, unlike
//! `ip netns exec`, keeps /sys/fs/bpf visible) and is bounded by `timeout`.

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// Runs `program ARGS` in namespace `ns` (`/run/netns/NS`), killed after `secs` seconds.
pub fn in_ns(ns: &str, secs: u32, program: &str, args: &[&str]) -> Result<Output> {
    let netns = format!("--net=/run/netns/{ns}");
    let limit = secs.to_string();
    let mut all = vec![netns.as_str(), "timeout", "-s", "KILL", limit.as_str(), program];
    all.extend_from_slice(args);
    Command::new("nsenter").args(&all).output().with_context(|| format!("spawn nsenter {program}"))
}

/// As [`in_ns`]; fails unless the command succeeded; returns stdout.
pub fn in_ns_ok(ns: &str, secs: u32, program: &str, args: &[&str]) -> Result<String> {
    let out = in_ns(ns, secs, program, args)?;
    if !out.status.success() {
        bail!("{program} {}: {} {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `PACKAGE VERSION` of an installed Debian package, for the report.
pub fn package_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || format!("{package} (not from a Debian package)"),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        )
}

/// Interface counters from `ip -s -j link show`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

pub fn link_stats(ns: &str, iface: &str) -> Result<LinkStats> {
    let out = in_ns_ok(ns, 10, "ip", &["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    let s = &v[0]["stats64"];
    let n = |a: &str, b: &str| s[a][b].as_u64().unwrap_or(0);
    Ok(LinkStats {
        rx_packets: n("rx", "packets"),
        rx_dropped: n("rx", "dropped"),
        tx_packets: n("tx", "packets"),
        tx_dropped: n("tx", "dropped"),
    })
}

/// Id of the XDP program attached to `iface` in `ns`.
pub fn xdp_prog_id(ns: &str, iface: &str) -> Result<u32> {
    let out = in_ns_ok(ns, 10, "ip", &["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j output")?;
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .map(|id| id as u32)
        .with_context(|| format!("no XDP program on {iface}"))
}

/// xdp-filter on one interface of one of our namespaces. xdp-filter pins its maps in
/// /sys/fs/bpf/xdp-filter, which every namespace shares: the guard refuses to start when
/// another xdp-filter is loaded anywhere, and unloads on drop (also on panic).
pub struct XdpFilter {
    ns: String,
    iface: String,
}

pub const XDP_FILTER_PIN_DIR: &str = "/sys/fs/bpf/xdp-filter";

impl XdpFilter {
    /// `xdp-filter load -m MODE -p deny IFACE`, then `allow` rules (`["port", "5201", "-m",
    /// "dst"]`, `["ip", "192.0.2.2", "-m", "src"]`, ...): with policy deny they allow.
    pub fn load(ns: &str, iface: &str, mode: &str, allow: &[&[&str]]) -> Result<Self> {
        if Path::new(XDP_FILTER_PIN_DIR).exists() {
            bail!("{XDP_FILTER_PIN_DIR} exists: another xdp-filter is loaded on this host; not touching it");
        }
        in_ns_ok(ns, 30, "xdp-filter", &["load", "-m", mode, "-p", "deny", iface])?;
        let guard = XdpFilter { ns: ns.to_string(), iface: iface.to_string() };
        for rule in allow {
            in_ns_ok(ns, 30, "xdp-filter", rule)?;
        }
        Ok(guard)
    }

    /// Packets per action from `xdp-filter status` (aggregate statistics): (drop, pass).
    pub fn counts(&self) -> Result<(u64, u64)> {
        let out = in_ns_ok(&self.ns, 30, "xdp-filter", &["status"])?;
        let count = |action: &str| -> u64 {
            out.lines()
                .find(|l| l.trim_start().starts_with(action))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok((count("XDP_DROP"), count("XDP_PASS")))
    }

    pub fn prog_id(&self) -> Result<u32> {
        xdp_prog_id(&self.ns, &self.iface)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = in_ns(&self.ns, 30, "xdp-filter", &["unload", &self.iface]);
        let _ = in_ns(&self.ns, 30, "xdp-filter", &["unload", "--all"]);
        // The directory did not exist before `load` (checked there): what is left is ours
        // (an unload fails when the namespace is already gone).
        let _ = std::fs::remove_dir_all(XDP_FILTER_PIN_DIR);
    }
}

/// `bpftool prog run id ID data_in FILE repeat N`: (return value, average ns per run).
pub fn bpftool_prog_run(id: u32, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("frame-{id}.bin"));
    std::fs::write(&file, frame)?;
    let out = Command::new("bpftool")
        .args(["prog", "run", "id", &id.to_string(), "data_in"])
        .arg(&file)
        .args(["repeat", &repeat.to_string()])
        .output()
        .context("spawn bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // "Return value: 1, duration (average): 180ns"
    let ret = text
        .split("Return value:")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|r| r.trim().parse().ok())
        .with_context(|| format!("bpftool prog run: {text}"))?;
    let ns = text
        .split("duration (average):")
        .nth(1)
        .and_then(|r| r.trim().strip_suffix("ns").or_else(|| r.trim().split("ns").next()))
        .and_then(|r| r.trim().parse().ok())
        .with_context(|| format!("bpftool prog run: {text}"))?;
    Ok((ret, ns))
}

/// Loads an nftables script into namespace `ns`.
pub fn nft_load(ns: &str, script: &str) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{ns}.nft"));
    std::fs::write(&file, script)?;
    in_ns_ok(ns, 30, "nft", &["-f", &file.display().to_string()]).map(drop)
}

/// Packets counted by the `counter` statements of `table inet sgctl` in `ns`.
pub fn nft_counter_packets(ns: &str) -> Result<u64> {
    let out = in_ns_ok(ns, 30, "nft", &["-j", "list", "table", "inet", "sgctl"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("nft -j output")?;
    let mut total = 0;
    for item in v["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            total += expr["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}
