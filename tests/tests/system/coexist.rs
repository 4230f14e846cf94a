//! sgctl beside another XDP program: Debian's xdp-filter (xdp-tools, libxdp) owns the XDP hook,
//! sgctl decides ingress at TCX (`--ingress-hook tcx`), in either order of loading. Both
//! enforce; detaching one leaves the other. With sgctl at XDP, the busy hook is refused with
//! the way out named.
//!
//! Why not libxdp's dispatcher: docs/operations.md, "Sharing the hooks" (this kernel refuses
//! the extension programs it is built on; libxdp itself falls back to a single program here).

use sg_tests::{
    netns::{NetnsPair, Side},
    require_bpf,
    tcx::{ConstantProgram, TC_ACT_SHOT},
};

/// UDP ports B sends to: sgctl allows `ALLOWED` and `FILTERED`, denies `DENIED`; xdp-filter
/// drops `FILTERED`.
const ALLOWED: u16 = 9301;
const DENIED: u16 = 9302;
const FILTERED: u16 = 9303;

/// xdp-filter on A's interface (generic mode, its default policy: allow), dropping UDP to
/// `FILTERED`; unloaded when dropped, also on panic.
struct XdpFilter<'a> {
    pair: &'a NetnsPair,
    loaded: bool,
}

impl<'a> XdpFilter<'a> {
    fn load(pair: &'a NetnsPair) -> Self {
        run_ok(pair, &["load", &pair.if_a, "--mode", "skb"]);
        run_ok(pair, &["port", &FILTERED.to_string(), "--proto", "udp"]);
        XdpFilter { pair, loaded: true }
    }

    fn unload(&mut self) {
        run_ok(self.pair, &["unload", &self.pair.if_a]);
        self.loaded = false;
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        if self.loaded {
            let _ = self.pair.cmd(Side::A, "xdp-filter", &["unload", &self.pair.if_a]);
        }
    }
}

fn run_ok(pair: &NetnsPair, args: &[&str]) {
    let out = pair.cmd(Side::A, "xdp-filter", args);
    assert!(
        out.status.success(),
        "xdp-filter {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// sgctl on A at TCX ingress with a rule set allowing `ALLOWED` and `FILTERED` (from B's subnet).
fn attach_sgctl(pair: &NetnsPair) {
    let out = pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--ingress-hook", "tcx", "--egress", "allow"]);
    assert!(out.contains("TCX ingress (1 of 1 in the chain)"), "{out}");
    let (allowed, filtered) = (format!("udp {ALLOWED}"), format!("udp {FILTERED}"));
    let rules = sg_tests::group_rules("rules.toml", &pair.if_a, &[&allowed, &filtered], "");
    pair.sgctl_ok(Side::A, &["apply", rules.to_str().unwrap()]);
    let st = &pair.status_json()["interfaces"][0];
    assert_eq!(st["ingress_hook"], "tcx", "{st}");
}

/// (allowed, denied, filtered): datagrams that arrived of 10 each.
fn probe(pair: &NetnsPair) -> (u32, u32, u32) {
    pair.udp_delivered(ALLOWED, 10); // neighbour resolution
    (pair.udp_delivered(ALLOWED, 10), pair.udp_delivered(DENIED, 10), pair.udp_delivered(FILTERED, 10))
}

fn no_rule_drops(pair: &NetnsPair) -> u64 {
    sg_tests::reason_count(&pair.status_json()["interfaces"][0], "ingress", "no_rule", "packets")
}

#[test]
fn sgctl_at_tcx_and_xdp_filter_enforce_together_in_either_order() {
    if !require_bpf("sgctl_at_tcx_and_xdp_filter_enforce_together_in_either_order") {
        return;
    }
    // xdp-filter first; sgctl at XDP is refused with the way out, at TCX it joins.
    let pair = NetnsPair::new();
    let mut filter = XdpFilter::load(&pair);
    assert_eq!(probe(&pair), (10, 10, 0), "xdp-filter alone");
    let refused = pair.sgctl(Side::A, &["attach", &pair.if_a]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("xdpfilt_") && err.contains("--ingress-hook tcx"),
        "{err}"
    );
    attach_sgctl(&pair);
    let before = no_rule_drops(&pair);
    assert_eq!(
        probe(&pair),
        (10, 0, 0),
        "both enforcing: sgctl denies {DENIED}, xdp-filter drops {FILTERED}"
    );
    assert!(no_rule_drops(&pair) >= before + 10, "sgctl did not deny {DENIED} itself");
    // sgctl goes: xdp-filter stays and still drops.
    pair.sgctl_ok(Side::A, &["detach", &pair.if_a]);
    assert_eq!(probe(&pair), (10, 10, 0), "after sgctl's detach, xdp-filter alone");
    filter.unload();
    drop(filter);
    drop(pair);

    // sgctl first; xdp-filter loads beside it (the XDP hook is free).
    let pair = NetnsPair::new();
    attach_sgctl(&pair);
    assert_eq!(probe(&pair), (10, 0, 10), "sgctl alone");
    let mut filter = XdpFilter::load(&pair);
    assert_eq!(probe(&pair), (10, 0, 0), "both enforcing, xdp-filter loaded second");
    // xdp-filter goes: sgctl stays and still denies.
    filter.unload();
    let before = no_rule_drops(&pair);
    assert_eq!(probe(&pair), (10, 0, 10), "after xdp-filter's unload, sgctl alone");
    assert!(no_rule_drops(&pair) >= before + 10, "sgctl no longer denies {DENIED}");
    let st = &pair.status_json()["interfaces"][0];
    assert_eq!(st["ingress_chain"], "1 of 1 in the chain", "{st}");
}

/// `TCX_NEXT`: a TCX program that passes the packet on to the next one.
const TCX_NEXT: i32 = -1;

/// sgctl's TCX ingress passes with TCX_NEXT, not TC_ACT_OK: a program after it still runs
/// (here one that drops everything: datagrams sgctl passes stop arriving, and arrive again once
/// it is gone). `--ingress-order last` puts sgctl after a program already there, and status
/// says where it is.
#[test]
fn sgctls_tcx_ingress_passes_to_the_next_program_and_takes_the_place_asked() {
    if !require_bpf("sgctls_tcx_ingress_passes_to_the_next_program_and_takes_the_place_asked") {
        return;
    }
    let pair = NetnsPair::new();
    let ifindex = pair.run(Side::A, {
        let name = pair.if_a.clone();
        move || sg_userspace::iface::ifindex(&name).expect("ifindex")
    });
    let earlier =
        pair.run(Side::A, move || ConstantProgram::attach(ifindex, false, TCX_NEXT)).expect("first program");
    let out = pair.sgctl_ok(
        Side::A,
        &["attach", &pair.if_a, "--ingress-hook", "tcx", "--ingress-order", "last", "--ingress", "allow"],
    );
    assert!(out.contains("TCX ingress (2 of 2 in the chain)"), "{out}");
    let st = pair.status_json()["interfaces"][0].clone();
    assert_eq!(st["ingress_chain"], "2 of 2 in the chain", "{st}");
    assert!(pair.sgctl_ok(Side::A, &["status"]).contains("ingress TCX (2 of 2 in the chain)"));
    drop(earlier);

    pair.udp_delivered(ALLOWED, 10); // neighbour resolution
    assert_eq!(pair.udp_delivered(ALLOWED, 10), 10, "sgctl alone does not pass B's datagrams");
    let later = pair
        .run(Side::A, move || ConstantProgram::attach(ifindex, false, TC_ACT_SHOT))
        .expect("later program");
    // Every ingress packet sgctl passed, whatever the reason (the first of a flow, or later).
    let passed = || -> u64 {
        let st = pair.status_json();
        st["interfaces"][0]["counters"]
            .as_array()
            .expect("counters")
            .iter()
            .filter(|c| c["direction"] == "ingress" && c["action"] == "pass")
            .map(|c| c["packets"].as_u64().unwrap_or(0))
            .sum()
    };
    let before = passed();
    assert_eq!(pair.udp_delivered(ALLOWED, 10), 0, "the TCX program after sgctl's did not run");
    assert!(passed() >= before + 10, "sgctl did not pass the datagrams itself");
    drop(later);
    assert_eq!(pair.udp_delivered(ALLOWED, 10), 10, "datagrams do not arrive once the later program is gone");
}
