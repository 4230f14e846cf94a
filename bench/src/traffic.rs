//! Packets per second through a veth pair between two namespaces.
//!
//! The sender (namespace B, 192.0.2.2) sends Ethernet/IPv4/UDP frames to the receiver
//! (namespace A, 192.0.2.1), with 1,024 distinct source ports (flows): to UDP
//! [`ALLOWED_PORT`], which the receiver's policy allows, or to UDP [`DENIED_PORT`], which it
//! does not. The veth has one queue per CPU. Generators:
//! - `builtin`: the bench object's XDP_TX program driven by BPF_PROG_TEST_RUN in live-frames
//!   mode on B's veth (the frame leaves through the veth at once; random source port per frame).
//!   Only where the kernel allows live-frames test runs: [`probe_live_frames`] asks once at the
//!   start; where it refuses, the builtin rows say "not available on this kernel".
//! - `afxdp`: an AF_XDP transmitter ([`super::afxdp`]), one socket and thread per CPU.
//! - `trafgen` (netsniff-ng): the well-known packet generator, one process per CPU, source
//!   ports counting through the same 1,024 values.
//!
//! Receivers on A's veth: `none`; `nftables` (the policy through `sgctl export nft`, conntrack
//! on); `xdp-filter` (native XDP, policy deny, UDP port 5201 allowed: the stateless XDP peer);
//! `sgctl-native` and `sgctl-generic` (sgctl with the same policy); `xdp-drop` (a bare XDP_DROP
//! program that counts, native).
//!
//! Measured per run: the generator's sent packets/s (B's tx_packets), and the receiver's
//! handled packets/s: for denied traffic the packets the filter dropped (its own counter:
//! sgctl's verdict counters, nftables' `counter`, xdp-filter's statistics, the bare program's
//! map), for `none` the packets the stack received; for allowed traffic the packets the stack
//! received (the interface's rx_packets). Both ends share the machine's CPUs: a veth runs the
//! receiver's work in the sender's softirq on the sender's CPU, so every rate is bounded by
//! the generator (rate = 1 / (generator + veth + receiver)), a cheaper receiver shows as a
//! higher rate, and the receiver's own cost is what it adds over the bare XDP_DROP receiver.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::PerCpuArray,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use sg_userspace::maps::InstanceMaps;

use crate::BENCH_OBJECT;

use super::{
    Bench,
    rulegen::{ALLOWED_PORT, DENIED_PORT},
    tools::{self, XdpFilter},
};
use sg_tests::{
    netns::{NetnsPair, Side, spawn_in_ns},
    packet::{MAC_A, MAC_B, Pkt},
};

pub const FLOWS: u32 = 1024;
pub const SPORT_BASE: u16 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    None,
    Nftables,
    XdpFilter,
    SgctlNative,
    SgctlGeneric,
    /// sgctl with its ingress at TCX (`--ingress-hook tcx`).
    SgctlTcx,
    XdpDrop,
}

impl Receiver {
    pub const ALL: [Receiver; 7] = [
        Receiver::None,
        Receiver::Nftables,
        Receiver::XdpFilter,
        Receiver::SgctlNative,
        Receiver::SgctlGeneric,
        Receiver::SgctlTcx,
        Receiver::XdpDrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Receiver::None => "none",
            Receiver::Nftables => "nftables",
            Receiver::XdpFilter => "xdp-filter",
            Receiver::SgctlNative => "sgctl-native",
            Receiver::SgctlGeneric => "sgctl-generic",
            Receiver::SgctlTcx => "sgctl-tcx",
            Receiver::XdpDrop => "xdp-drop",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    Builtin,
    Afxdp,
    Trafgen,
}

impl Generator {
    pub const ALL: [Generator; 3] = [Generator::Builtin, Generator::Afxdp, Generator::Trafgen];

    pub fn name(self) -> &'static str {
        match self {
            Generator::Builtin => "builtin",
            Generator::Afxdp => "afxdp",
            Generator::Trafgen => "trafgen",
        }
    }
}

/// CPUs the generators send from (one queue, thread or process each).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Whether this kernel runs XDP programs on live frames (BPF_PROG_TEST_RUN with
/// BPF_F_TEST_XDP_LIVE_FRAMES), which the built-in generator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveFrames {
    Available,
    /// Refused: the one-line reason (errno and what it means).
    Unavailable(String),
}

/// The kernel-internal ENOTSUPP (524) that some BPF paths return to userspace.
const KERNEL_ENOTSUPP: i32 = 524;

/// What an errno from a live-frames test run means.
pub fn live_frames_errno_meaning(errno: i32) -> String {
    let what = match errno {
        libc::EPERM => {
            "the kernel refuses live-frames test runs for any XDP program (before the program \
             runs); plain test runs work"
        }
        libc::EINVAL => "the kernel does not know BPF_F_TEST_XDP_LIVE_FRAMES (older than Linux 5.18)",
        libc::EOPNOTSUPP | KERNEL_ENOTSUPP => "the kernel cannot run XDP test runs on live frames",
        _ => "the live-frames test run failed",
    };
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    format!("{} ({text}): {what}", errno_name(errno))
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        KERNEL_ENOTSUPP => "ENOTSUPP".into(),
        n => format!("errno {n}"),
    }
}

/// Asks the kernel once, with one live frame on a veth of a fresh namespace pair.
pub fn probe_live_frames() -> LiveFrames {
    let pair = NetnsPair::new();
    let frame = frame(&pair, DENIED_PORT);
    match builtin(&pair, frame, Duration::ZERO, 1) {
        Ok(_) => LiveFrames::Available,
        Err(e) => {
            let errno = e
                .chain()
                .find_map(|c| c.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error);
            LiveFrames::Unavailable(match errno {
                Some(n) => format!(
                    "BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES failed: {}",
                    live_frames_errno_meaning(n)
                ),
                None => format!("live-frames test run failed: {e:#}"),
            })
        }
    }
}

/// The receiver's policy: UDP and TCP 5201 from the sender's subnet (AWS default egress).
pub fn policy(iface: &str) -> String {
    format!(
        "[groups.bench]\ningress = [\n  {{ proto = \"udp\", ports = \"{ALLOWED_PORT}\", from = \"192.0.2.0/24\" }},\n  \
         {{ proto = \"tcp\", ports = \"{ALLOWED_PORT}\", from = \"192.0.2.0/24\" }},\n]\n\n[interfaces.{iface}]\ngroups = [\"bench\"]\n"
    )
}

/// The two namespaces with fixed MACs (the frames' addresses) and GRO on the receiver (a veth
/// only takes XDP_TX'd frames when its peer has an XDP program or GRO).
pub fn fixture() -> Result<NetnsPair> {
    let pair = NetnsPair::with_queues(cpus());
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    tools::in_ns_ok(&pair.ns_a, 10, "ip", &["link", "set", "dev", &pair.if_a, "address", &mac(MAC_A)])?;
    tools::in_ns_ok(&pair.ns_b, 10, "ip", &["link", "set", "dev", &pair.if_b, "address", &mac(MAC_B)])?;
    tools::in_ns_ok(&pair.ns_a, 10, "ethtool", &["-K", &pair.if_a, "gro", "on"])?;
    // Neighbour entries, so that replies (ICMP, iperf3) need no ARP.
    tools::in_ns_ok(
        &pair.ns_a,
        10,
        "ip",
        &["neigh", "replace", &pair.v4_b.to_string(), "lladdr", &mac(MAC_B), "dev", &pair.if_a],
    )?;
    tools::in_ns_ok(
        &pair.ns_b,
        10,
        "ip",
        &["neigh", "replace", &pair.v4_a.to_string(), "lladdr", &mac(MAC_A), "dev", &pair.if_b],
    )?;
    Ok(pair)
}

fn frame(pair: &NetnsPair, dport: u16) -> Vec<u8> {
    Pkt::udp(pair.v4_b.into(), pair.v4_a.into(), SPORT_BASE, dport).payload(&[0x5a; 18]).build()
}

/// The frames of all [`FLOWS`] source ports to `dport`.
fn frames(pair: &NetnsPair, dport: u16) -> Vec<Vec<u8>> {
    (0..FLOWS as u16)
        .map(|i| {
            Pkt::udp(pair.v4_b.into(), pair.v4_a.into(), SPORT_BASE + i, dport).payload(&[0x5a; 18]).build()
        })
        .collect()
}

/// Runs the built-in generator in B: test runs of `chunk` live frames each, the first at once
/// and more until `dur` has passed; returns packets sent.
fn builtin(pair: &NetnsPair, frame: Vec<u8>, dur: Duration, chunk: u32) -> Result<u64> {
    let ifname = pair.if_b.clone();
    spawn_in_ns(&pair.ns_b, move || -> Result<u64> {
        let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).context("if_nametoindex")?;
        let mut ebpf = EbpfLoader::new()
            .override_global("FLOWS", &FLOWS, true)
            .override_global("SPORT_BASE", &SPORT_BASE, true)
            .load(BENCH_OBJECT)
            .context("load the bench object")?;
        let prog: &mut Xdp = ebpf.program_mut("sg_bench_tx").context("sg_bench_tx")?.try_into()?;
        prog.load()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = Vec::with_capacity(24);
        for v in [0, frame.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend(u32::to_ne_bytes(v));
        }
        let start = Instant::now();
        let mut sent = 0u64;
        loop {
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: chunk,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            })
            .context("live-frames test run")?;
            sent += u64::from(chunk);
            if start.elapsed() >= dur {
                return Ok(sent);
            }
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
}

/// Runs the AF_XDP transmitter in B (one thread per CPU) for `dur`; returns packets sent (B's
/// tx_packets).
fn afxdp(pair: &NetnsPair, dport: u16, dur: Duration) -> Result<u64> {
    let before = tools::link_stats(&pair.ns_b, &pair.if_b)?;
    super::afxdp::send(&pair.ns_b, &pair.if_b, cpus(), &frames(pair, dport), dur)?;
    let after = tools::link_stats(&pair.ns_b, &pair.if_b)?;
    Ok(after.tx_packets - before.tx_packets)
}

/// Runs trafgen in B (one process per CPU) for `dur`; returns packets sent (B's tx_packets).
fn trafgen(pair: &NetnsPair, dport: u16, dur: Duration) -> Result<u64> {
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let conf = format!(
        "{{\n  eth(da={}, sa={}),\n  ipv4(saddr={}, daddr={}, ttl=64),\n  udp(sp=dinc({}, {}), dp={dport}, csum=0),\n  \
         fill(0x5a, 18)\n}}\n",
        mac(MAC_A),
        mac(MAC_B),
        pair.v4_b,
        pair.v4_a,
        SPORT_BASE,
        u32::from(SPORT_BASE) + FLOWS - 1,
    );
    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("trafgen.cfg");
    std::fs::write(&file, conf)?;
    let before = tools::link_stats(&pair.ns_b, &pair.if_b)?;
    // Bounded twice: a packet count far above what one CPU sends in `dur`, and SIGINT at `dur`.
    let limit = format!("{:.1}", dur.as_secs_f64());
    let max = (dur.as_secs_f64() * 5e6) as u64 * cpus() as u64;
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", pair.ns_b))
        .args(["timeout", "-s", "INT", "-k", "5", &limit, "trafgen", "--dev", &pair.if_b, "--conf"])
        .arg(&file)
        .args(["--cpus", &cpus().to_string(), "--num", &max.to_string(), "-C"])
        .output()
        .context("spawn trafgen")?;
    // timeout exits 124 when it had to stop trafgen: that is the normal end here.
    if !out.status.success() && out.status.code() != Some(124) {
        bail!("trafgen: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let after = tools::link_stats(&pair.ns_b, &pair.if_b)?;
    Ok(after.tx_packets - before.tx_packets)
}

/// What a receiver holds while it is set up.
pub enum Guard {
    Nothing,
    Filter(XdpFilter),
    Sgctl,
    Drop(aya::Ebpf),
}

/// Sets receiver `r` up on A's veth.
pub fn setup(pair: &NetnsPair, r: Receiver) -> Result<Guard> {
    Ok(match r {
        Receiver::None => Guard::Nothing,
        Receiver::Nftables => {
            let file = sg_tests::write_temp("bench-policy.toml", &policy(&pair.if_a));
            let script = pair.sgctl_ok(Side::A, &["export", "nft", &file.display().to_string()]);
            tools::nft_load(&pair.ns_a, &script)?;
            Guard::Nothing
        }
        Receiver::XdpFilter => {
            let port = ALLOWED_PORT.to_string();
            Guard::Filter(XdpFilter::load(
                &pair.ns_a,
                &pair.if_a,
                "native",
                &[&["port", &port, "-m", "dst"]],
            )?)
        }
        Receiver::SgctlNative | Receiver::SgctlGeneric | Receiver::SgctlTcx => {
            let how: &[&str] = match r {
                Receiver::SgctlNative => &["--mode", "native"],
                Receiver::SgctlGeneric => &["--mode", "generic"],
                _ => &["--ingress-hook", "tcx"],
            };
            pair.sgctl_ok(Side::A, &[&["attach", pair.if_a.as_str()], how].concat());
            let file = sg_tests::write_temp("bench-policy.toml", &policy(&pair.if_a));
            pair.sgctl_ok(Side::A, &["apply", &file.display().to_string()]);
            Guard::Sgctl
        }
        Receiver::XdpDrop => {
            let ifname = pair.if_a.clone();
            let ebpf = spawn_in_ns(&pair.ns_a, move || -> Result<aya::Ebpf> {
                let mut ebpf = aya::Ebpf::load(BENCH_OBJECT)?;
                let p: &mut Xdp = ebpf.program_mut("sg_bench_count_drop").context("program")?.try_into()?;
                p.load()?;
                p.attach(&ifname, XdpMode::Driver).context("attach bare XDP_DROP (native)")?;
                Ok(ebpf)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("attach thread panicked"))??;
            Guard::Drop(ebpf)
        }
    })
}

/// Removes what [`setup`] put on A's veth.
pub fn teardown(pair: &NetnsPair, r: Receiver, guard: Guard) {
    match r {
        Receiver::Nftables => {
            let _ = tools::in_ns(&pair.ns_a, 10, "nft", &["delete", "table", "inet", "sgctl"]);
        }
        Receiver::SgctlNative | Receiver::SgctlGeneric | Receiver::SgctlTcx => {
            let _ = pair.sgctl(Side::A, &["detach", &pair.if_a]);
        }
        _ => {}
    }
    drop(guard);
}

/// The receiver's own count of packets it dropped.
fn dropped(pair: &NetnsPair, r: Receiver, guard: &Guard) -> Result<u64> {
    match (r, guard) {
        (Receiver::Nftables, _) => tools::nft_counter_packets(&pair.ns_a),
        (_, Guard::Filter(f)) => Ok(f.counts()?.0),
        (_, Guard::Sgctl) => {
            let dir = pair.pin_dir(Side::A).context("pin dir")?.join(&pair.if_a);
            let maps = InstanceMaps::from_pins(&dir)?;
            Ok(maps
                .counters()?
                .iter()
                .filter(|c| c.direction == "ingress" && c.action == "drop")
                .map(|c| c.packets)
                .sum())
        }
        (_, Guard::Drop(ebpf)) => {
            let m: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("SG_BENCH_COUNT").context("map")?)?;
            Ok(m.get(&0, 0)?.iter().sum())
        }
        _ => Ok(tools::link_stats(&pair.ns_a, &pair.if_a)?.rx_packets),
    }
}

/// One run: (sent pps, handled pps).
fn one(
    pair: &NetnsPair,
    r: Receiver,
    guard: &Guard,
    g: Generator,
    denied: bool,
    dur: Duration,
) -> Result<(f64, f64)> {
    let dport = if denied { DENIED_PORT } else { ALLOWED_PORT };
    let count = |pair: &NetnsPair| -> Result<u64> {
        if denied {
            dropped(pair, r, guard)
        } else {
            Ok(tools::link_stats(&pair.ns_a, &pair.if_a)?.rx_packets)
        }
    };
    let before = count(pair)?;
    let start = Instant::now();
    let sent = match g {
        Generator::Builtin => builtin(pair, frame(pair, dport), dur, 1 << 15)?,
        Generator::Afxdp => afxdp(pair, dport, dur)?,
        Generator::Trafgen => trafgen(pair, dport, dur)?,
    };
    let secs = start.elapsed().as_secs_f64();
    let handled = count(pair)? - before;
    if sent == 0 || handled == 0 {
        bail!("no traffic: sent {sent}, handled {handled}");
    }
    Ok((sent as f64 / secs, handled as f64 / secs))
}

pub fn run(b: &mut Bench) {
    let pair = match fixture() {
        Ok(p) => p,
        Err(e) => return b.fail(format!("traffic fixture: {e:#}")),
    };
    for r in Receiver::ALL {
        let guard = match setup(&pair, r) {
            Ok(g) => g,
            Err(e) => {
                b.fail(format!("traffic receiver {}: {e:#}", r.name()));
                continue;
            }
        };
        for g in Generator::ALL {
            // Where the kernel refuses live frames the built-in generator has no rows: the
            // report says "not available on this kernel" (not a failure of the run).
            if g == Generator::Builtin && b.live_frames != LiveFrames::Available {
                continue;
            }
            for denied in [true, false] {
                // A bare XDP_DROP receiver drops everything: it has no allowed traffic.
                if r == Receiver::XdpDrop && !denied {
                    continue;
                }
                let traffic = if denied { "denied" } else { "allowed" };
                for rep in 0..b.opts.reps {
                    b.progress("traffic", &format!("{} -> {} {traffic} #{}", g.name(), r.name(), rep + 1));
                    match one(&pair, r, &guard, g, denied, b.opts.run) {
                        Ok((sent, handled)) => {
                            let labels = |m: &str| {
                                vec![
                                    ("generator", g.name().to_string()),
                                    ("receiver", r.name().to_string()),
                                    ("traffic", traffic.to_string()),
                                    ("rep", rep.to_string()),
                                    ("metric", m.to_string()),
                                ]
                            };
                            b.record("traffic", labels("sent"), sent, "pps");
                            b.record("traffic", labels("handled"), handled, "pps");
                        }
                        Err(e) => b.fail(format!("traffic {} -> {} {traffic}: {e:#}", g.name(), r.name())),
                    }
                }
            }
        }
        teardown(&pair, r, guard);
    }
}
