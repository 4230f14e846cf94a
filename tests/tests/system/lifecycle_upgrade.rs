//! Upgrading the datapath of an attached interface (issue 30): no unfiltered instant, no lost
//! flow, and a crash at any step completed by the next run.
//!
//! Under traffic throughout: numbered UDP datagrams B -> A echoed back (every one must come
//! back), a TCP connection B -> A exchanging a message every 20 ms (must not fail), and a
//! flood of datagrams to a port the policy denies (none may arrive). Two paths:
//! - same layout: `sgctl upgrade --force` replaces the programs of this build's instance;
//!   every map is reused (the same map ids), links stay (the same link ids);
//! - changed layout: the instance is attached by the sgctl of commit 47437fc (the field's
//!   build, before map layouts were numbered; built by the test from this repository's
//!   history), then taken over by this build, whose conntrack entry grew: the conntrack tables
//!   are converted, the rest reused.
//!
//! In generic and native XDP.

use std::{
    net::SocketAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use sg_common::layout::LAYOUT;
use sg_tests::{
    netns::{NetnsPair, Side},
    old_build,
    probes::{Flood, TcpPing, UdpEcho},
    require_bpf, write_temp,
};
use sg_userspace::loader::bpf;

const ALLOWED_UDP: u16 = 9100;
const ALLOWED_TCP: u16 = 7000;
const DENIED_UDP: u16 = 9200;

pub(crate) fn rules(iface: &str) -> String {
    format!(
        "[groups.svc]\ningress = [\n  {{ proto = \"udp\", ports = \"{ALLOWED_UDP}\", from = \"192.0.2.0/24\" }},\n  \
         {{ proto = \"tcp\", ports = \"{ALLOWED_TCP}\", from = \"192.0.2.0/24\" }},\n]\n\n[interfaces.{iface}]\ngroups = [\"svc\"]\n"
    )
}

/// The three probes, running B -> A.
pub(crate) struct Traffic {
    udp: UdpEcho,
    tcp: TcpPing,
    flood: Flood,
}

impl Traffic {
    pub(crate) fn start(pair: &NetnsPair) -> Self {
        let a = |port| SocketAddr::new(pair.v4_a.into(), port);
        Traffic {
            udp: UdpEcho::start(&pair.ns_a, a(ALLOWED_UDP), &pair.ns_b, 2),
            tcp: TcpPing::start(&pair.ns_a, a(ALLOWED_TCP), &pair.ns_b, None, Duration::from_millis(20)),
            flood: Flood::start(&pair.ns_a, a(DENIED_UDP), &pair.ns_b, 2),
        }
    }

    /// Stops the probes and checks that nothing was lost and nothing denied passed.
    pub(crate) fn check(self, what: &str) {
        let Traffic { udp, tcp, flood } = self;
        let (u, t, f) = (udp.finish(), tcp.finish(), flood.finish());
        eprintln!("{what}: UDP {u:?}, TCP {t:?}, denied flood {f:?}");
        assert!(u.sent > 100 && t.ok > 10 && f.0 > 100, "{what}: too little traffic to mean anything");
        assert_eq!(u.lost(), 0, "{what}: numbered UDP datagrams lost: {u:?}");
        assert_eq!(t.error, None, "{what}: the TCP connection failed: {t:?}");
        assert_eq!(f.1, 0, "{what}: {} datagrams to a denied port arrived (of {})", f.1, f.0);
    }
}

/// Ids of the maps pinned in `dir` (name -> id), of the links and programs.
fn ids(dir: &Path) -> (Vec<(String, u32)>, [u32; 2], [u32; 2]) {
    let mut maps = Vec::new();
    for e in std::fs::read_dir(dir).expect("pin dir") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if name.starts_with("SG_") {
            let fd = bpf::obj_get(&dir.join(&name)).expect("map pin");
            maps.push((name, bpf::map_info(fd.as_fd()).expect("map info").id));
        }
    }
    maps.sort();
    let link =
        |n: &str| bpf::link_info(bpf::obj_get(&dir.join(n)).expect("link").as_fd()).expect("link info");
    let (x, t) = (link("link_xdp"), link("link_tc"));
    (maps, [x.id, t.id], [x.prog_id, t.prog_id])
}

fn iface_status(pair: &NetnsPair) -> serde_json::Value {
    pair.status_json()["interfaces"][0].clone()
}

/// `how`: the attach's placement (`--mode generic`, `--ingress-hook tcx`).
fn same_layout(how: &[&str]) {
    let pair = NetnsPair::new();
    let f = write_temp(&format!("{}-up.toml", pair.if_a), &rules(&pair.if_a));
    pair.sgctl_ok(Side::A, &[&["attach", pair.if_a.as_str()], how].concat());
    pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
    let dir = pair.pin_dir(Side::A).expect("pin dir").join(&pair.if_a);
    let traffic = Traffic::start(&pair);
    std::thread::sleep(Duration::from_millis(300));
    let (maps0, links0, progs0) = ids(&dir);
    let before = iface_status(&pair);
    for i in 0..3 {
        let out = pair.sgctl_ok(Side::A, &["upgrade", &pair.if_a, "--force"]);
        assert!(out.contains("same layout"), "upgrade #{i}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    traffic.check(&format!("same-layout upgrades ({})", how.join(" ")));
    let (maps1, links1, progs1) = ids(&dir);
    // Every map but SG_META (it names the programs) is the same map; the links are the same
    // links; the programs are new.
    let keep = |m: &[(String, u32)]| m.iter().filter(|(n, _)| n != "SG_META").cloned().collect::<Vec<_>>();
    assert_eq!(keep(&maps0), keep(&maps1), "a map was replaced by a same-layout upgrade");
    assert_eq!(links0, links1, "the links were replaced");
    assert_ne!(progs0[0], progs1[0], "the ingress program was not replaced");
    assert_ne!(progs0[1], progs1[1], "the egress program was not replaced");
    // Counters went on (not reset), the flows are the same flows.
    let after = iface_status(&pair);
    let est = |s: &serde_json::Value| sg_tests::reason_count(s, "ingress", "ct_established", "packets");
    assert!(est(&after) > est(&before), "counters restarted: {} then {}", est(&before), est(&after));
    assert_eq!(after["datapath"]["state"], "current");
    assert_eq!(after["datapath"]["upgrades"], 3);
}

#[test]
fn same_layout_upgrade_under_traffic_generic() {
    if !require_bpf("same_layout_upgrade_under_traffic_generic") {
        return;
    }
    same_layout(&["--mode", "generic"]);
}

#[test]
fn same_layout_upgrade_under_traffic_native() {
    if !require_bpf("same_layout_upgrade_under_traffic_native") {
        return;
    }
    same_layout(&["--mode", "native"]);
}

/// Ingress at TCX (`--ingress-hook tcx`, beside another XDP program): its TCX link is swapped
/// as the XDP link is.
#[test]
fn same_layout_upgrade_under_traffic_tcx_ingress() {
    if !require_bpf("same_layout_upgrade_under_traffic_tcx_ingress") {
        return;
    }
    same_layout(&["--ingress-hook", "tcx"]);
}

/// The field's build attaches; this one takes over, through `how`: `upgrade` or `apply`.
fn from_the_field(mode: &str, how: &str) {
    let old = old_build::sgctl_of(old_build::FIELD);
    let pair = NetnsPair::new();
    let f = write_temp(&format!("{}-field.toml", pair.if_a), &rules(&pair.if_a));
    let f = f.display().to_string();
    run_old(&pair, &old, &["attach", &pair.if_a, "--mode", mode]);
    run_old(&pair, &old, &["apply", &f]);
    let traffic = Traffic::start(&pair);
    std::thread::sleep(Duration::from_millis(300));
    let st = iface_status(&pair);
    assert_eq!(st["datapath"]["state"], "older", "{st}");
    let out = match how {
        "upgrade" => pair.sgctl_ok(Side::A, &["upgrade", &pair.if_a]),
        _ => pair.sgctl_ok(Side::A, &["apply", &f]),
    };
    std::thread::sleep(Duration::from_millis(500));
    traffic.check(&format!("upgrade from {} by `sgctl {how}` ({mode})", old_build::FIELD));
    if how == "upgrade" {
        assert!(out.contains("changed layout"), "{out}");
    }
    let st = iface_status(&pair);
    assert_eq!(st["datapath"]["state"], "current", "{st}");
    assert_eq!(st["datapath"]["layout"], LAYOUT);
    assert!(st["conntrack"]["migrated"].as_u64().expect("migrated") >= 2, "{st}");
    // The policy is the one the old build applied.
    assert_eq!(st["policy"], "groups");
    assert!(!pair.pin_dir(Side::A).expect("dir").join(&pair.if_a).join("next").exists());
}

fn run_old(pair: &NetnsPair, old: &Path, args: &[&str]) {
    let (bin, args): (PathBuf, Vec<String>) =
        (old.to_path_buf(), args.iter().map(|s| (*s).to_string()).collect());
    let out = pair.run(Side::A, move || Command::new(bin).args(&args).output().expect("spawn old sgctl"));
    assert!(out.status.success(), "old sgctl: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn upgrade_from_the_field_under_traffic_generic() {
    if !require_bpf("upgrade_from_the_field_under_traffic_generic") {
        return;
    }
    from_the_field("generic", "apply");
}

#[test]
fn upgrade_from_the_field_under_traffic_native() {
    if !require_bpf("upgrade_from_the_field_under_traffic_native") {
        return;
    }
    from_the_field("native", "upgrade");
}

/// `sgctl upgrade` with `SGCTL_FAILPOINT=SITE=pause:..` killed (-9) at SITE.
fn kill_at(pair: &NetnsPair, site: &str, args: &[&str]) {
    let bin = sg_tests::sgctl_path();
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    let spec = format!("{site}=pause:20000");
    let mut child = pair.run(Side::A, move || {
        Command::new(bin)
            .args(&args)
            .env("SGCTL_FAILPOINT", spec)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sgctl")
    });
    // Wait for the pause (the failpoint says so on stderr), then kill.
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
            if n == 0 {
                break;
            }
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            if s.contains("pausing") {
                tx.send(()).ok();
            }
        }
    });
    rx.recv_timeout(Duration::from_mins(1))
        .unwrap_or_else(|_| panic!("sgctl never reached failpoint {site}"));
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// A crash (kill -9) at every step of an upgrade leaves an interface that enforces and loses
/// nothing, and the next run completes (or rolls back) what was left.
#[test]
fn a_crash_at_every_step_is_completed_by_the_next_run() {
    if !require_bpf("a_crash_at_every_step_is_completed_by_the_next_run") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(&format!("{}-crash.toml", pair.if_a), &rules(&pair.if_a));
    pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
    let dir = pair.pin_dir(Side::A).expect("pin dir").join(&pair.if_a);
    for site in ["upgrade_staged", "upgrade_switch_xdp", "upgrade_switch_tc", "upgrade_finish"] {
        let traffic = Traffic::start(&pair);
        kill_at(&pair, site, &["upgrade", &pair.if_a, "--force"]);
        // Killed mid-upgrade: still enforcing, still carrying the flows.
        std::thread::sleep(Duration::from_millis(300));
        assert!(dir.join("next").exists(), "{site}: the staging is gone before the crash was handled");
        let out = pair.sgctl_ok(Side::A, &["upgrade", &pair.if_a]);
        assert!(
            out.contains("completed an interrupted upgrade") || out.contains("removed the staging"),
            "{site}: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
        traffic.check(&format!("crash at {site}"));
        assert!(!dir.join("next").exists(), "{site}: staging left behind");
        let st = iface_status(&pair);
        assert_eq!(st["datapath"]["state"], "current", "{site}: {st}");
        // The links run the pinned programs again.
        let (_, _, progs) = ids(&dir);
        let pinned = |n: &str| bpf::prog_id(bpf::obj_get(&dir.join(n)).expect("prog").as_fd()).expect("id");
        assert_eq!(progs, [pinned("sg_ingress"), pinned("sg_egress")], "{site}: links and pins disagree");
    }
}

/// The changed-layout path killed between its two switches (XDP on the new programs and
/// tables, egress still on the old), then completed by `sgctl apply`.
#[test]
fn a_crash_between_the_switches_of_a_layout_change_is_completed() {
    if !require_bpf("a_crash_between_the_switches_of_a_layout_change_is_completed") {
        return;
    }
    let old = old_build::sgctl_of(old_build::FIELD);
    let pair = NetnsPair::new();
    let f = write_temp(&format!("{}-mixed.toml", pair.if_a), &rules(&pair.if_a));
    let f = f.display().to_string();
    run_old(&pair, &old, &["apply", &f]);
    let traffic = Traffic::start(&pair);
    std::thread::sleep(Duration::from_millis(300));
    kill_at(&pair, "upgrade_switch_xdp", &["upgrade", &pair.if_a]);
    // Half-switched: each program must still find every flow.
    std::thread::sleep(Duration::from_millis(500));
    let out = pair.sgctl_ok(Side::A, &["apply", &f]);
    assert!(out.contains("applied") || out.contains("no changes"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    traffic.check("crash between the switches of a layout change");
    assert_eq!(iface_status(&pair)["datapath"]["state"], "current");
}

/// A build that cannot read the maps refuses with one line and changes nothing: here an
/// instance that claims a layout newer than this build's.
#[test]
fn a_newer_layout_is_refused_not_replaced() {
    if !require_bpf("a_newer_layout_is_refused_not_replaced") {
        return;
    }
    let pair = NetnsPair::new();
    let f = write_temp(&format!("{}-newer.toml", pair.if_a), &rules(&pair.if_a));
    let f = f.display().to_string();
    pair.sgctl_ok(Side::A, &["apply", &f]);
    let dir = pair.pin_dir(Side::A).expect("pin dir").join(&pair.if_a);
    // What a newer build would have written.
    {
        use aya::maps::{Array, Map, MapData};
        let data = MapData::from_pin(dir.join("SG_META")).expect("meta pin");
        let mut meta: Array<MapData, sg_common::layout::InstanceMeta> =
            Array::try_from(Map::Array(data)).expect("meta");
        let mut m = meta.get(&0, 0).expect("meta entry");
        m.layout = LAYOUT + 1;
        m.build = sg_common::layout::InstanceMeta::new(0, "9.9.9 (git future)").build;
        meta.set(0, m, 0).expect("write meta");
    }
    let (_, links0, progs0) = ids(&dir);
    let flood = Flood::start(&pair.ns_a, SocketAddr::new(pair.v4_a.into(), DENIED_UDP), &pair.ns_b, 1);
    for args in
        [vec!["upgrade", pair.if_a.as_str()], vec!["apply", f.as_str()], vec!["attach", pair.if_a.as_str()]]
    {
        let out = pair.sgctl(Side::A, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "sgctl {args:?} accepted a newer layout");
        assert!(err.contains("attached by a newer sgctl (9.9.9 (git future)"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = iface_status(&pair);
    assert_eq!(st["datapath"]["state"], "newer", "{st}");
    assert_eq!(ids(&dir).1, links0, "links replaced");
    assert_eq!(ids(&dir).2, progs0, "programs replaced");
    let (sent, arrived) = flood.finish();
    assert!(sent > 100);
    assert_eq!(arrived, 0, "the interface stopped enforcing");
}
