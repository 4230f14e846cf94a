//! Per-packet cost through BPF_PROG_TEST_RUN (JIT on, as the kernel runs it).
//!
//! Cases, each for IPv4 and IPv6 UDP packets:
//! - `deny`: a packet no rule allows (from [`DENIED_V4`]/[`DENIED_V6`]), XDP_DROP.
//! - `established`: a packet of a flow that saw both directions (one ingress packet, one egress
//!   reply, then the measured ingress packet `repeat` times: every run is a conntrack hit).
//! - `new`: a packet of a flow never seen. A repeated test run would only measure the first
//!   packet as new, so this case makes `fresh` distinct frames (source ports counting up,
//!   conntrack emptied first) and runs each once; the number is the mean of the kernel's
//!   per-run times. A single run also pays for starting the kernel's timer, so the same method
//!   is applied to bare XDP_PASS (`pass_single`) as this case's baseline.
//!
//! Subjects: sgctl's ingress program with generated rule sets ([`rulegen`]), the bare XDP_PASS
//! and XDP_DROP programs of the bench object, and xdp-filter's program (loaded by xdp-filter
//! with policy deny and the allowed sources as its rules, run with `bpftool prog run` on the
//! same frames).

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use sg_common::{Direction, IfaceConfig, Posture};
use sg_userspace::{
    loader::{BENCH_OBJECT, PrivateInstance},
    rules::compile,
};

use super::{
    Bench,
    rulegen::{self, ALLOWED_PORT, ALLOWED_V4, ALLOWED_V6, DENIED_V4, DENIED_V6, HOST_V4, HOST_V6},
    tools,
};
use crate::{netns::NetnsPair, packet::Pkt};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SPORT: u16 = 40_000;

fn frame(v6: bool, allowed: bool, sport: u16) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = match (v6, allowed) {
        (false, true) => (ALLOWED_V4.into(), HOST_V4.into()),
        (false, false) => (DENIED_V4.into(), HOST_V4.into()),
        (true, true) => (ALLOWED_V6.into(), HOST_V6.into()),
        (true, false) => (DENIED_V6.into(), HOST_V6.into()),
    };
    Pkt::udp(src, dst, sport, ALLOWED_PORT).payload(&[0x5a; 18]).build()
}

fn reply(v6: bool, sport: u16) -> Vec<u8> {
    let (host, peer): (IpAddr, IpAddr) =
        if v6 { (HOST_V6.into(), ALLOWED_V6.into()) } else { (HOST_V4.into(), ALLOWED_V4.into()) };
    Pkt::udp(host, peer, ALLOWED_PORT, sport).payload(&[0x5a; 18]).build()
}

fn fam(v6: bool) -> &'static str {
    if v6 { "v6" } else { "v4" }
}

/// The bench object's bare programs, loaded.
pub struct Bare {
    ebpf: Ebpf,
}

impl Bare {
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).context("load the bench object")?;
        for name in ["sg_bench_pass", "sg_bench_drop"] {
            let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
            p.load().with_context(|| format!("load {name}"))?;
        }
        Ok(Bare { ebpf })
    }

    /// (return value, average ns per run).
    pub fn run(&mut self, prog: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let p: &mut Xdp = self.ebpf.program_mut(prog).context(prog.to_string())?.try_into()?;
        let r = p.test_run(TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() })?;
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }
}

fn record(b: &mut Bench, rules: &str, case: &str, v6: bool, subject: &str, ns: f64) {
    b.record(
        "testrun",
        vec![
            ("subject", subject.to_string()),
            ("rules", rules.to_string()),
            ("case", case.to_string()),
            ("family", fam(v6).to_string()),
        ],
        ns,
        "ns/packet",
    );
}

fn baselines(b: &mut Bench) -> Result<()> {
    let mut bare = Bare::load()?;
    let repeat = b.opts.repeat;
    for v6 in [false, true] {
        let (ret, ns) = bare.run("sg_bench_pass", &frame(v6, true, SPORT), repeat)?;
        check(ret, XDP_PASS, "bare pass")?;
        record(b, "-", "pass", v6, "xdp_pass", ns);
        let (ret, ns) = bare.run("sg_bench_drop", &frame(v6, false, SPORT), repeat)?;
        check(ret, XDP_DROP, "bare drop")?;
        record(b, "-", "drop", v6, "xdp_drop", ns);
        let mut total = 0.0;
        for i in 0..b.opts.fresh {
            total += bare.run("sg_bench_pass", &frame(v6, true, SPORT.wrapping_add(i as u16)), 1)?.1;
        }
        record(b, "-", "pass_single", v6, "xdp_pass", total / f64::from(b.opts.fresh));
    }
    Ok(())
}

fn check(got: u32, want: u32, what: &str) -> Result<()> {
    if got != want {
        bail!("{what}: program returned {got}, expected {want}");
    }
    Ok(())
}

fn xdp_filter(b: &mut Bench) -> Result<()> {
    let pair = NetnsPair::new();
    let a4 = ALLOWED_V4.to_string();
    let a6 = ALLOWED_V6.to_string();
    let filter = tools::XdpFilter::load(
        &pair.ns_a,
        &pair.if_a,
        "skb",
        &[&["ip", &a4, "-m", "src"], &["ip", &a6, "-m", "src"]],
    )?;
    let id = filter.prog_id()?;
    for v6 in [false, true] {
        let (ret, ns) = tools::bpftool_prog_run(id, &frame(v6, false, SPORT), b.opts.repeat)?;
        check(ret, XDP_DROP, "xdp-filter, denied packet")?;
        record(b, "-", "deny", v6, "xdp-filter", ns);
        let (ret, ns) = tools::bpftool_prog_run(id, &frame(v6, true, SPORT), b.opts.repeat)?;
        check(ret, XDP_PASS, "xdp-filter, allowed packet")?;
        record(b, "-", "established", v6, "xdp-filter", ns);
    }
    drop(filter);
    Ok(())
}

fn sgctl(b: &mut Bench, n: usize) -> Result<()> {
    let rs = crate::policy::ruleset(&rulegen::rules_toml(n, 42 + n as u64));
    let plan = compile::compile_iface(&rs, rulegen::IFACE).with_context(|| format!("compile {n} rules"))?;
    let mut inst = PrivateInstance::load(&IfaceConfig {
        ingress_posture: Posture::Deny as u8,
        egress_posture: Posture::Allow as u8,
        ..IfaceConfig::default()
    })?;
    inst.apply_plan(&plan, 1)?;
    let repeat = b.opts.repeat;
    let rules = n.to_string();
    for v6 in [false, true] {
        let (ret, d) = inst.run_timed(Direction::Ingress, &frame(v6, false, SPORT), repeat)?;
        check(ret, XDP_DROP, "sgctl, denied packet")?;
        record(b, &rules, "deny", v6, "sgctl", d.as_nanos() as f64);

        inst.maps_mut().ct_flush()?;
        check(inst.run(Direction::Ingress, &frame(v6, true, SPORT))?, XDP_PASS, "sgctl, first packet")?;
        inst.run(Direction::Egress, &reply(v6, SPORT))?;
        let (ret, d) = inst.run_timed(Direction::Ingress, &frame(v6, true, SPORT), repeat)?;
        check(ret, XDP_PASS, "sgctl, established packet")?;
        record(b, &rules, "established", v6, "sgctl", d.as_nanos() as f64);

        inst.maps_mut().ct_flush()?;
        let frames: Vec<Vec<u8>> =
            (0..b.opts.fresh).map(|i| frame(v6, true, 1024u16.wrapping_add(i as u16))).collect();
        let mut total = 0.0;
        for f in &frames {
            let (ret, d) = inst.run_timed(Direction::Ingress, f, 1)?;
            check(ret, XDP_PASS, "sgctl, new flow")?;
            total += d.as_nanos() as f64;
        }
        let tracked = inst.maps().ct_entries()?.len();
        if tracked < frames.len() {
            bail!("new-flow case: {tracked} flows tracked after {} fresh tuples", frames.len());
        }
        record(b, &rules, "new", v6, "sgctl", total / f64::from(b.opts.fresh));
    }
    Ok(())
}

/// Runs the section; failures are recorded and the others go on.
pub fn run(b: &mut Bench) {
    b.progress("testrun", "bare XDP_PASS / XDP_DROP");
    if let Err(e) = baselines(b) {
        b.fail(format!("testrun baselines: {e:#}"));
    }
    b.progress("testrun", "xdp-filter via bpftool prog run");
    if let Err(e) = xdp_filter(b) {
        b.fail(format!("testrun xdp-filter: {e:#}"));
    }
    for n in b.opts.rule_counts.clone() {
        b.progress("testrun", &format!("sgctl, {n} rules"));
        if let Err(e) = sgctl(b, n) {
            b.fail(format!("testrun sgctl {n} rules: {e:#}"));
        }
    }
}
