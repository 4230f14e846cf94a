//! Per-packet cost through BPF_PROG_TEST_RUN (JIT on, as the kernel runs it).
//!
//! Cases, each for IPv4 and IPv6 UDP packets:
//! - `deny`: a packet no rule allows (from [`DENIED_V4`]/[`DENIED_V6`]), XDP_DROP.
//! - `established`: a packet of a flow that saw both directions (one ingress packet, one egress
//!   reply, then the measured ingress packet `repeat` times: every run is a conntrack hit).
//! - `new`: a packet of a flow never seen. The bench object's `sg_bench_new_flow` counts the
//!   frame's source port up and tail-calls sgctl's ingress program; the test run keeps the
//!   frame between repetitions, so each repetition is a new flow (conntrack emptied and its
//!   presence filter cleared first; at most `NEW_PER_CALL` per call). Its baseline is the same
//!   wrapper in front of bare XDP_PASS (`pass_chain`).
//! - `new_single`: new flows measured cold, as the first run of a test-run call: `fresh`
//!   distinct frames run once each, the mean of the kernel's per-run times. A single run also
//!   pays for starting the kernel's timer, so the same method is applied to bare XDP_PASS
//!   (`pass_single`) as this case's baseline.
//!
//! Subjects: sgctl's ingress program with generated rule sets ([`rulegen`]: `rule_counts`
//! rules, rule sets naming `prefix_counts` distinct prefixes, label `<n>p`, and the 1-rule set
//! with a network ACL of `acl_counts` ingress entries, label `acl<n>`), the bare XDP_PASS
//! and XDP_DROP programs of the bench object, and xdp-filter's program (loaded by xdp-filter
//! with policy deny and the allowed sources as its rules, run with `bpftool prog run` on the
//! same frames). Plus sgctl stage by stage, to show where a denied packet's time goes.
//!
//! The machines are shared and their speed wanders by tens of percent over seconds (on some,
//! between two speeds nearly 2x apart), so the measurements are interleaved: every subject is
//! set up first, then `rounds` rounds each run every measurement once (`repeat / rounds` runs
//! per call). Every round is recorded (label `rep`): the report gives each number as the
//! median of its rounds with their spread, and a ratio per round from the two measurements of
//! that round. A round visits the measurements family by family and case by case, each case
//! beside its baseline ([`visit_order`]), every other round backwards, so that the two sides of
//! a ratio are measured milliseconds apart and a slow phase of the machine touches both alike.
//! A round makes [`SLICES`] such passes, each with a share of the runs, and keeps each
//! measurement's fastest: this machine's slow phases (up to 1.8x, lasting milliseconds, on
//! about one measurement in ten) then rarely touch all of a measurement's passes.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::ProgramArray,
    programs::{ProgramFd, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use sg_common::{
    Direction, IfaceConfig, Posture,
    flowlog::FlowLogConfig,
    policy::PREFIX_CAPACITY,
    stage::{STAGE_CT_FOUND, STAGE_CT_KEYED, STAGE_FULL, STAGE_NEW_KEYED, STAGE_PARSED, STAGE_POLICY},
};
use sg_userspace::{
    loader::{IngressHook, PrivateInstance, Sizes},
    rules::compile,
};

use super::{
    Bench,
    rulegen::{self, ALLOWED_PORT, ALLOWED_V4, ALLOWED_V6, DENIED_V4, DENIED_V6, HOST_V4, HOST_V6},
    tools,
};
use sg_tests::{netns::NetnsPair, packet::Pkt};

use crate::BENCH_OBJECT;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC verdicts as a test run returns them: TCX_NEXT (pass on) and TC_ACT_SHOT.
const TC_NEXT: u32 = u32::MAX;
const TC_SHOT: u32 = 2;

/// What `inst`'s ingress program returns for a packet it passes.
fn pass_of(inst: &PrivateInstance) -> u32 {
    match inst.ingress_hook() {
        IngressHook::Xdp => XDP_PASS,
        IngressHook::Tcx => TC_NEXT,
    }
}
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
        for name in ["sg_bench_pass", "sg_bench_drop", "sg_bench_new_flow"] {
            let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
            p.load().with_context(|| format!("load {name}"))?;
        }
        let p: &mut SchedClassifier = ebpf.program_mut(TC_PASS).context(TC_PASS)?.try_into()?;
        p.load().with_context(|| format!("load {TC_PASS}"))?;
        Ok(Bare { ebpf })
    }

    /// Makes `sg_bench_new_flow` tail-call `fd` (sgctl's ingress program, or `None`: the bare
    /// XDP_PASS).
    fn chain(&mut self, fd: Option<&ProgramFd>) -> Result<()> {
        let own;
        let fd = match fd {
            Some(fd) => fd,
            None => {
                let p: &Xdp = self.ebpf.program("sg_bench_pass").context("sg_bench_pass")?.try_into()?;
                own = p.fd()?.try_clone()?;
                &own
            }
        };
        let mut next = ProgramArray::try_from(self.ebpf.map_mut("SG_BENCH_NEXT").context("SG_BENCH_NEXT")?)?;
        next.set(0, fd, 0).context("SG_BENCH_NEXT[0]")?;
        Ok(())
    }

    /// (return value, average ns per run).
    pub fn run(&mut self, prog: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() };
        let p = self.ebpf.program_mut(prog).context(prog.to_string())?;
        let r = if prog == TC_PASS {
            <&mut SchedClassifier>::try_from(p)?.test_run(opts)?
        } else {
            <&mut Xdp>::try_from(p)?.test_run(opts)?
        };
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }
}

/// The bench object's bare TC program (baseline of sgctl's ingress at TCX).
const TC_PASS: &str = "sg_bench_tc_pass";

/// One measurement: what it runs, and its labels.
struct Measure {
    subject: &'static str,
    rules: String,
    case: &'static str,
    v6: bool,
    kind: Kind,
    samples: Vec<f64>,
}

enum Kind {
    /// A bare program of the bench object on a frame, expecting a return value.
    Bare { prog: &'static str, frame: Vec<u8>, want: u32 },
    /// The bare XDP_PASS once per call on fresh frames (baseline of `new`).
    BareSingle { frame_v6: bool },
    /// xdp-filter's program through bpftool.
    Filter { id: u32, frame: Vec<u8>, want: u32 },
    /// sgctl instance `inst` (index into the instance list) on a frame.
    Sgctl { inst: usize, frame: Vec<u8>, want: u32 },
    /// sgctl established: as `Sgctl`, after one packet and a reply made the flow established.
    Established { inst: usize, v6: bool },
    /// sgctl new flows, warm: `sg_bench_new_flow` in front of the instance, repeated (every
    /// repetition a new source port).
    /// `staged`: the instance stops before the insert (a stage measurement: nothing tracked).
    New { inst: usize, v6: bool, staged: bool },
    /// `sg_bench_new_flow` in front of the bare XDP_PASS (baseline of `New`).
    BareChain { v6: bool },
    /// sgctl new flows, each the first run of a BPF_PROG_TEST_RUN call: fresh tuples, one run
    /// each.
    NewSingle { inst: usize, v6: bool },
    /// As `New`, at most [`EVENTS_PER_CALL`] new flows per call, the flow-event ring drained
    /// first: with flow events on (`daemon --learn`), every new flow's accept event is written.
    /// `events`: check that each new flow wrote one.
    NewCapped { inst: usize, v6: bool, events: bool },
}

/// New flows per `NewCapped` call: what the flow-event ring (`SG_FLOW_EVENTS`, about 3,600
/// events) takes without filling, so that every flow's event is written, none refused.
pub const EVENTS_PER_CALL: u32 = 2_000;

/// New flows per `New` call: fewer than `SG_CT_NEW` holds, and source ports from 1024 up do
/// not wrap.
const NEW_PER_CALL: u32 = 30_000;

fn check(got: u32, want: u32, what: &str) -> Result<()> {
    if got != want {
        bail!("{what}: program returned {got}, expected {want}");
    }
    Ok(())
}

fn timed(inst: &mut PrivateInstance, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let (ret, d) = inst.run_timed(Direction::Ingress, frame, repeat)?;
    Ok((ret, d.as_nanos() as f64))
}

fn instance() -> Result<PrivateInstance> {
    Ok(PrivateInstance::load(&IfaceConfig {
        ingress_posture: Posture::Deny as u8,
        egress_posture: Posture::Allow as u8,
        ..IfaceConfig::default()
    })?)
}

fn with_rules(n: usize) -> Result<PrivateInstance> {
    with_rules_staged(n, STAGE_FULL)
}

/// As [`with_rules`], with the ingress program of `hook`.
fn with_rules_at(n: usize, hook: IngressHook) -> Result<PrivateInstance> {
    with_rules_staged_at(n, STAGE_FULL, hook)
}

/// As [`with_rules`], stopping at a stage (`sg_common::stage`).
fn with_rules_staged(n: usize, stop: u32) -> Result<PrivateInstance> {
    with_rules_staged_at(n, stop, IngressHook::Xdp)
}

fn with_rules_staged_at(n: usize, stop: u32, hook: IngressHook) -> Result<PrivateInstance> {
    let rs = sg_tests::policy::ruleset(&rulegen::rules_toml(n, 42 + n as u64));
    let plan = compile::compile_iface(&rs, rulegen::IFACE).with_context(|| format!("compile {n} rules"))?;
    let mut inst = PrivateInstance::load_staged_at(
        crate::STAGED_OBJECT,
        &IfaceConfig {
            ingress_posture: Posture::Deny as u8,
            egress_posture: Posture::Allow as u8,
            ..IfaceConfig::default()
        },
        Sizes::default(),
        stop,
        hook,
    )?;
    inst.apply_plan(&plan, 1)?;
    Ok(inst)
}

/// The stages of the established and new paths (1 rule, IPv4): (case, stop, new flows?).
pub const PATH_STAGES: [(&str, u32, bool); 6] = [
    ("est_parsed", STAGE_PARSED, false),
    ("est_keyed", STAGE_CT_KEYED, false),
    ("est_found", STAGE_CT_FOUND, false),
    ("new_parsed", STAGE_PARSED, true),
    ("new_policy", STAGE_POLICY, true),
    ("new_keyed", STAGE_NEW_KEYED, true),
];

/// An instance whose rules name `n` distinct prefixes (`rulegen::prefixes_toml`), attached
/// with a prefix capacity that holds them.
fn with_prefixes(n: usize) -> Result<PrivateInstance> {
    let rs = sg_tests::policy::ruleset(&rulegen::prefixes_toml(n, 7 + n as u64));
    let plan =
        compile::compile_iface(&rs, rulegen::IFACE).with_context(|| format!("compile {n} prefixes"))?;
    let sizes =
        Sizes { prefixes: (n as u32 * 2).next_power_of_two().max(PREFIX_CAPACITY), ..Sizes::default() };
    let mut inst = PrivateInstance::load_sized(
        &IfaceConfig {
            ingress_posture: Posture::Deny as u8,
            egress_posture: Posture::Allow as u8,
            ..IfaceConfig::default()
        },
        sizes,
    )?;
    inst.apply_plan(&plan, 1)?;
    Ok(inst)
}

/// The 1-rule set with a network ACL of `n` ingress entries (`rulegen::acl_toml`).
fn with_acl(n: usize) -> Result<PrivateInstance> {
    let rs = sg_tests::policy::ruleset(&rulegen::acl_toml(1, n, 11 + n as u64));
    let plan =
        compile::compile_iface(&rs, rulegen::IFACE).with_context(|| format!("compile an ACL of {n}"))?;
    let mut inst = instance()?;
    inst.apply_plan(&plan, 1)?;
    Ok(inst)
}

/// The rules label of a [`with_acl`] instance.
pub fn acl_label(n: usize) -> String {
    format!("acl{n}")
}

/// The rules label of a [`with_prefixes`] instance.
pub fn prefixes_label(n: usize) -> String {
    format!("{n}p")
}

/// Everything measured, and what it needs alive.
struct Subjects {
    bare: Bare,
    /// Keeps xdp-filter loaded; the filter is unloaded before its namespace goes (field order).
    _filter: Option<(tools::XdpFilter, NetnsPair)>,
    insts: Vec<PrivateInstance>,
    list: Vec<Measure>,
    /// Source port counter of the fresh tuples.
    next_sport: u16,
}

fn measure(
    subject: &'static str,
    rules: impl Into<String>,
    case: &'static str,
    v6: bool,
    kind: Kind,
) -> Measure {
    Measure { subject, rules: rules.into(), case, v6, kind, samples: Vec::new() }
}

fn setup(b: &mut Bench) -> Result<Subjects> {
    let mut list = Vec::new();
    for v6 in [false, true] {
        list.push(measure(
            "xdp_pass",
            "-",
            "pass",
            v6,
            Kind::Bare { prog: "sg_bench_pass", frame: frame(v6, true, SPORT), want: XDP_PASS },
        ));
        list.push(measure(
            "xdp_drop",
            "-",
            "drop",
            v6,
            Kind::Bare { prog: "sg_bench_drop", frame: frame(v6, false, SPORT), want: XDP_DROP },
        ));
        list.push(measure("xdp_pass", "-", "pass_single", v6, Kind::BareSingle { frame_v6: v6 }));
        list.push(measure("xdp_pass", "-", "pass_chain", v6, Kind::BareChain { v6 }));
    }
    b.progress("testrun", "loading xdp-filter");
    let filter = match xdp_filter() {
        Ok((f, pair, id)) => {
            for v6 in [false, true] {
                list.push(measure(
                    "xdp-filter",
                    "-",
                    "deny",
                    v6,
                    Kind::Filter { id, frame: frame(v6, false, SPORT), want: XDP_DROP },
                ));
                list.push(measure(
                    "xdp-filter",
                    "-",
                    "established",
                    v6,
                    Kind::Filter { id, frame: frame(v6, true, SPORT), want: XDP_PASS },
                ));
            }
            Some((f, pair))
        }
        Err(e) => {
            b.fail(format!("testrun xdp-filter: {e:#}"));
            None
        }
    };
    let mut insts = Vec::new();
    // Stages: no config, non-IP, posture deny, groups deny (1 rule).
    let udp = frame(false, false, SPORT);
    let mut no_cfg = with_rules(1)?;
    let mut cfg = no_cfg.maps().config()?;
    cfg.flags &= !sg_common::config::CONFIG_VALID;
    no_cfg.maps_mut().set_config(&cfg)?;
    insts.push(no_cfg);
    list.push(measure(
        "sgctl",
        "-",
        "stage_no_config",
        false,
        Kind::Sgctl { inst: 0, frame: udp.clone(), want: XDP_DROP },
    ));
    insts.push(instance()?);
    list.push(measure(
        "sgctl",
        "-",
        "stage_non_ip",
        false,
        Kind::Sgctl { inst: 1, frame: sg_tests::packet::arp_frame(), want: XDP_PASS },
    ));
    list.push(measure(
        "sgctl",
        "-",
        "stage_posture_deny",
        false,
        Kind::Sgctl { inst: 1, frame: udp.clone(), want: XDP_DROP },
    ));
    b.progress("testrun", "loading the stage-stop instances");
    for (case, stop, new) in PATH_STAGES {
        insts.push(with_rules_staged(1, stop)?);
        let inst = insts.len() - 1;
        let kind = if new {
            Kind::New { inst, v6: false, staged: true }
        } else {
            Kind::Established { inst, v6: false }
        };
        list.push(measure("sgctl", "-", case, false, kind));
    }
    for n in b.opts.rule_counts.clone() {
        b.progress("testrun", &format!("compiling and applying {n} rules"));
        insts.push(with_rules(n)?);
        let i = insts.len() - 1;
        if n == 1 {
            list.push(measure(
                "sgctl",
                "-",
                "stage_groups_deny",
                false,
                Kind::Sgctl { inst: i, frame: udp.clone(), want: XDP_DROP },
            ));
            // The same with flow logs on and the daemon's default limits: after the burst,
            // every reject event is rate-limited (one LRU lookup and a GCRA step).
            let mut logged = with_rules(1)?;
            logged.set_flow_log(&FlowLogConfig::new(10, 20, 5000, 1000))?;
            insts.push(logged);
            list.push(measure(
                "sgctl",
                "-",
                "stage_groups_deny_flow_log",
                false,
                Kind::Sgctl { inst: insts.len() - 1, frame: udp.clone(), want: XDP_DROP },
            ));
        }
        for v6 in [false, true] {
            list.push(measure(
                "sgctl",
                n.to_string(),
                "deny",
                v6,
                Kind::Sgctl { inst: i, frame: frame(v6, false, SPORT), want: XDP_DROP },
            ));
            list.push(measure("sgctl", n.to_string(), "established", v6, Kind::Established { inst: i, v6 }));
            list.push(measure("sgctl", n.to_string(), "new", v6, Kind::New { inst: i, v6, staged: false }));
            list.push(measure("sgctl", n.to_string(), "new_single", v6, Kind::NewSingle { inst: i, v6 }));
        }
    }
    // Learning's cost in the datapath (`daemon --learn` turns flow events on): a new flow
    // writes its accept event (no rate limit here, the ring drained before each call); an
    // established packet writes nothing. Beside the same cases with events off (1 rule).
    b.progress("testrun", "loading the learning instance (flow events on)");
    insts.push(with_rules(1)?);
    let quiet = insts.len() - 1;
    let mut learning = with_rules(1)?;
    learning.set_flow_log(&FlowLogConfig::new(0, 0, 0, 0))?;
    insts.push(learning);
    let learning = insts.len() - 1;
    for v6 in [false, true] {
        for (subject, inst, events) in [("sgctl", quiet, false), ("sgctl_learning", learning, true)] {
            list.push(measure(subject, "1", "new_capped", v6, Kind::NewCapped { inst, v6, events }));
        }
        list.push(measure(
            "sgctl_learning",
            "1",
            "established",
            v6,
            Kind::Established { inst: learning, v6 },
        ));
    }
    // Ingress at TCX (`--ingress-hook tcx`): the TC ingress program, 1 rule, beside the bare TC
    // program (its floor).
    b.progress("testrun", "loading the TCX ingress instance");
    insts.push(with_rules_at(1, IngressHook::Tcx)?);
    let i = insts.len() - 1;
    for v6 in [false, true] {
        list.push(measure(
            "tc_pass",
            "-",
            "pass",
            v6,
            Kind::Bare { prog: TC_PASS, frame: frame(v6, true, SPORT), want: TC_NEXT },
        ));
        list.push(measure(
            "sgctl_tcx",
            "1",
            "deny",
            v6,
            Kind::Sgctl { inst: i, frame: frame(v6, false, SPORT), want: TC_SHOT },
        ));
        list.push(measure("sgctl_tcx", "1", "established", v6, Kind::Established { inst: i, v6 }));
    }
    // Large prefix sets and network ACLs: denied, established and new packets each.
    let prefix_sets =
        b.opts.prefix_counts.iter().map(|&n| (format!("{n} prefixes"), prefixes_label(n), n, false));
    let acls =
        b.opts.acl_counts.iter().map(|&n| (format!("a network ACL of {n} entries"), acl_label(n), n, true));
    let more: Vec<_> = prefix_sets.chain(acls).collect();
    for (what, label, n, acl) in more {
        b.progress("testrun", &format!("compiling and applying {what}"));
        insts.push(if acl { with_acl(n)? } else { with_prefixes(n)? });
        let i = insts.len() - 1;
        for v6 in [false, true] {
            list.push(measure(
                "sgctl",
                label.clone(),
                "deny",
                v6,
                Kind::Sgctl { inst: i, frame: frame(v6, false, SPORT), want: XDP_DROP },
            ));
            list.push(measure("sgctl", label.clone(), "established", v6, Kind::Established { inst: i, v6 }));
            list.push(measure("sgctl", label.clone(), "new", v6, Kind::New { inst: i, v6, staged: false }));
        }
    }
    Ok(Subjects { bare: Bare::load()?, _filter: filter, insts, list, next_sport: 1024 })
}

fn xdp_filter() -> Result<(tools::XdpFilter, NetnsPair, u32)> {
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
    Ok((filter, pair, id))
}

/// Passes a round makes over the measurements: each measurement of a round is the fastest of
/// this many calls sharing its runs, one per pass. The passes are a whole list apart (a second
/// or two), so a slow phase of the machine lasting milliseconds slows one of them, not the
/// measurement; every subject is measured alike.
pub const SLICES: u32 = 3;

/// One call of measurement `m`: ns per packet.
fn call(subj: &mut Subjects, m: usize, repeat: u32, fresh: u32) -> Result<f64> {
    let what = format!(
        "{} {} {} {}",
        subj.list[m].subject,
        subj.list[m].rules,
        subj.list[m].case,
        fam(subj.list[m].v6)
    );
    let (ret, want, ns) = match &subj.list[m].kind {
        Kind::Bare { prog, frame, want } => {
            let (ret, ns) = subj.bare.run(prog, frame, repeat)?;
            (ret, *want, ns)
        }
        Kind::BareSingle { frame_v6 } => {
            let mut total = 0.0;
            for i in 0..fresh {
                let (ret, ns) = subj.bare.run(
                    "sg_bench_pass",
                    &frame(*frame_v6, true, SPORT.wrapping_add(i as u16)),
                    1,
                )?;
                check(ret, XDP_PASS, &what)?;
                total += ns;
            }
            (XDP_PASS, XDP_PASS, total / f64::from(fresh))
        }
        Kind::Filter { id, frame, want } => {
            let (ret, ns) = tools::bpftool_prog_run(*id, frame, repeat)?;
            (ret, *want, ns)
        }
        Kind::Sgctl { inst, frame, want } => {
            let (ret, ns) = timed(&mut subj.insts[*inst], frame, repeat)?;
            (ret, *want, ns)
        }
        Kind::Established { inst, v6 } => {
            let (i, v6) = (*inst, *v6);
            let inst = &mut subj.insts[i];
            let pass = pass_of(inst);
            inst.maps_mut().ct_flush()?;
            check(inst.run(Direction::Ingress, &frame(v6, true, SPORT))?, pass, &what)?;
            inst.run(Direction::Egress, &reply(v6, SPORT))?;
            let (ret, ns) = timed(inst, &frame(v6, true, SPORT), repeat)?;
            (ret, pass, ns)
        }
        Kind::New { inst, v6, staged } => {
            let (i, v6, staged) = (*inst, *v6, *staged);
            let n = repeat.min(NEW_PER_CALL);
            let inst = &mut subj.insts[i];
            inst.maps_mut().ct_flush()?;
            inst.maps_mut().seen_rebuild()?;
            subj.bare.chain(Some(inst.ingress_fd()?))?;
            let (ret, ns) = subj.bare.run("sg_bench_new_flow", &frame(v6, true, 1024), n)?;
            check(ret, XDP_PASS, &what)?;
            let tracked = subj.insts[i].maps().ct_entries()?.len();
            if !staged && tracked < n as usize {
                bail!("{what}: {tracked} flows tracked after {n} runs with new source ports");
            }
            (ret, XDP_PASS, ns)
        }
        Kind::NewCapped { inst, v6, events } => {
            let (i, v6, events) = (*inst, *v6, *events);
            let n = repeat.min(EVENTS_PER_CALL);
            let inst = &mut subj.insts[i];
            inst.flow_items();
            inst.maps_mut().ct_flush()?;
            inst.maps_mut().seen_rebuild()?;
            subj.bare.chain(Some(inst.ingress_fd()?))?;
            let (ret, ns) = subj.bare.run("sg_bench_new_flow", &frame(v6, true, 1024), n)?;
            check(ret, XDP_PASS, &what)?;
            let written = subj.insts[i].flow_items().len();
            if events && written < n as usize {
                bail!("{what}: {written} flow events for {n} new flows");
            }
            (ret, XDP_PASS, ns)
        }
        Kind::BareChain { v6 } => {
            subj.bare.chain(None)?;
            let (ret, ns) =
                subj.bare.run("sg_bench_new_flow", &frame(*v6, true, 1024), repeat.min(NEW_PER_CALL))?;
            (ret, XDP_PASS, ns)
        }
        Kind::NewSingle { inst, v6 } => {
            let (i, v6) = (*inst, *v6);
            let frames: Vec<Vec<u8>> = (0..fresh)
                .map(|_| {
                    subj.next_sport = subj.next_sport.wrapping_add(1).max(1024);
                    frame(v6, true, subj.next_sport)
                })
                .collect();
            let inst = &mut subj.insts[i];
            inst.maps_mut().ct_flush()?;
            let mut total = 0.0;
            for f in &frames {
                let (ret, ns) = timed(inst, f, 1)?;
                check(ret, XDP_PASS, &what)?;
                total += ns;
            }
            let tracked = inst.maps().ct_entries()?.len();
            if tracked < frames.len() {
                bail!("{what}: {tracked} flows tracked after {} fresh tuples", frames.len());
            }
            (XDP_PASS, XDP_PASS, total / f64::from(fresh))
        }
    };
    check(ret, want, &what)?;
    Ok(ns)
}

/// The order in which a round visits the measurements: by family, then by case, each case
/// beside the baseline its goals divide it by (`pass` and `new`'s `pass_chain` beside
/// `established` and `new`, `drop` beside `deny`), then the stages; within a case, in setup
/// order. The two sides of every ratio the report computes are then a few calls apart.
fn visit_order(list: &[Measure]) -> Vec<usize> {
    let rank = |case: &str| match case {
        "pass" => 0,
        "established" => 1,
        "new" | "new_capped" | "pass_chain" => 2,
        "drop" => 3,
        "deny" => 4,
        _ => 5,
    };
    let mut order: Vec<usize> = (0..list.len()).collect();
    order.sort_by_key(|&m| (list[m].v6, rank(list[m].case)));
    order
}

/// Runs the section; failures are recorded and the others go on.
pub fn run(b: &mut Bench) {
    let mut subj = match setup(b) {
        Ok(s) => s,
        Err(e) => return b.fail(format!("testrun setup: {e:#}")),
    };
    let rounds = b.opts.rounds.max(1);
    let repeat = (b.opts.repeat / rounds as u32).max(1);
    let fresh = (b.opts.fresh / rounds as u32).max(1);
    let mut failed = vec![false; subj.list.len()];
    let order = visit_order(&subj.list);
    let (repeat, fresh) = ((repeat / SLICES).max(1), (fresh / SLICES).max(1));
    for round in 0..rounds {
        b.progress("testrun", &format!("round {}/{rounds}: {} measurements", round + 1, subj.list.len()));
        let mut best = vec![f64::INFINITY; subj.list.len()];
        for pass in 0..SLICES as usize {
            let forward = (round * SLICES as usize + pass).is_multiple_of(2);
            let visit: Vec<usize> =
                if forward { order.clone() } else { order.iter().rev().copied().collect() };
            for m in visit {
                if failed[m] {
                    continue;
                }
                match call(&mut subj, m, repeat, fresh) {
                    Ok(ns) => best[m] = best[m].min(ns),
                    Err(e) => {
                        failed[m] = true;
                        b.fail(format!("testrun: {e:#}"));
                    }
                }
            }
        }
        for (m, ns) in best.into_iter().enumerate() {
            if !failed[m] {
                subj.list[m].samples.push(ns);
            }
        }
    }
    for m in &subj.list {
        if m.samples.is_empty() {
            continue;
        }
        let labels = |rep: usize| {
            vec![
                ("subject", m.subject.to_string()),
                ("rules", m.rules.clone()),
                ("case", m.case.to_string()),
                ("family", fam(m.v6).to_string()),
                ("rep", rep.to_string()),
            ]
        };
        for (rep, &ns) in m.samples.iter().enumerate() {
            b.samples.push(super::Sample {
                section: "testrun",
                labels: labels(rep),
                value: ns,
                unit: "ns/packet",
            });
        }
        let (lo, hi) = super::spread(&m.samples);
        b.progress(
            "testrun",
            &format!(
                "{} {} {} {} = {:.1} ns/packet ({lo:.1}-{hi:.1} over {} rounds)",
                m.subject,
                m.rules,
                m.case,
                fam(m.v6),
                super::median(&m.samples),
                m.samples.len()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_visits_each_case_beside_its_baseline_family_by_family() {
        let m = |subject, rules: &str, case, v6| measure(subject, rules, case, v6, Kind::BareChain { v6 });
        let list = vec![
            m("xdp_pass", "-", "pass", false),
            m("xdp_drop", "-", "drop", false),
            m("xdp_pass", "-", "pass_chain", false),
            m("sgctl", "-", "stage_posture_deny", false),
            m("sgctl", "1", "deny", false),
            m("sgctl", "1", "established", false),
            m("sgctl", "1", "new", false),
            m("sgctl", "1", "deny", true),
            m("sgctl", "1", "established", true),
            m("sgctl", "acl20", "deny", false),
            m("sgctl", "acl20", "established", false),
            m("sgctl", "acl20", "new", false),
        ];
        let order: Vec<String> = visit_order(&list)
            .into_iter()
            .map(|i| format!("{} {} {}{}", list[i].subject, list[i].rules, list[i].case, fam(list[i].v6)))
            .collect();
        assert_eq!(
            order,
            [
                "xdp_pass - passv4",
                "sgctl 1 establishedv4",
                "sgctl acl20 establishedv4",
                "xdp_pass - pass_chainv4",
                "sgctl 1 newv4",
                "sgctl acl20 newv4",
                "xdp_drop - dropv4",
                "sgctl 1 denyv4",
                "sgctl acl20 denyv4",
                "sgctl - stage_posture_denyv4",
                "sgctl 1 establishedv6",
                "sgctl 1 denyv6",
            ]
        );
    }
}
