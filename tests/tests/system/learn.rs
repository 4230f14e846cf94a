//! `sgctl learn` (issue 32) with real traffic: a daemon with --learn on A records the flows
//! B opens (TCP to two ports, UDP to a third) while A's group allows every TCP and UDP port
//! from the peers;
//! the observations survive a daemon restart; the proposal narrows the group to what was
//! seen (no ephemeral port anywhere), and applied, it keeps the observed traffic working and
//! refuses a port never seen.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use sg_tests::{
    daemon::Daemon,
    netns::{NetnsPair, Side},
    require_bpf, wait_until, write_temp,
};

const PORTS: [u16; 2] = [7000, 7005];
const NEVER: u16 = 7001;
const DNS: u16 = 5300;

/// From B: a TCP connection to A:port (connected or not within 1 s).
fn connects(pair: &NetnsPair, port: u16) -> bool {
    let a = SocketAddr::new(pair.addr(Side::A, false), port);
    pair.run(Side::B, move || TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

fn listen(pair: &NetnsPair, port: u16) -> TcpListener {
    let a = SocketAddr::new(pair.addr(Side::A, false), port);
    pair.run(Side::A, move || TcpListener::bind(a).expect("bind"))
}

#[test]
fn learned_rules_keep_what_was_seen_and_refuse_the_rest() {
    if !require_bpf("learned_rules_keep_what_was_seen_and_refuse_the_rest") {
        return;
    }
    let pair = NetnsPair::new();
    let rules = write_temp(
        &format!("{}-learn.toml", pair.if_a),
        &format!(
            "[groups.app]\ningress = [\n  {{ proto = \"tcp\", ports = \"0-65535\", from = \"192.0.2.0/24\" }},\n  \
             {{ proto = \"udp\", from = \"192.0.2.0/24\" }},\n]\n\n[interfaces.{}]\ngroups = [\"app\"]\n",
            pair.if_a
        ),
    );
    let obs = write_temp(&format!("{}-observed.json", pair.if_a), "");
    std::fs::remove_file(&obs).unwrap();
    let args = ["--config", rules.to_str().unwrap(), "--learn", obs.to_str().unwrap(), "--metrics", "off"];
    let mut d = Daemon::start(&pair, "learn", &args);
    assert!(
        wait_until(Duration::from_secs(10), || pair.status_json()["interfaces"][0]["policy_seq"]
            .as_u64()
            .is_some())
        .is_some(),
        "never applied: {}",
        d.log()
    );
    // Flow events are on once the daemon enabled them after its apply.
    std::thread::sleep(Duration::from_millis(500));
    let listeners: Vec<TcpListener> =
        PORTS.iter().map(|p| listen(&pair, *p)).chain([listen(&pair, NEVER)]).collect();
    for _ in 0..3 {
        for p in PORTS {
            assert!(connects(&pair, p), "tcp {p} refused before learning");
        }
    }
    // Two UDP flows (two sockets) to a service port.
    let (b, dns) = (pair.addr(Side::B, false), SocketAddr::new(pair.addr(Side::A, false), DNS));
    pair.run(Side::B, move || {
        for _ in 0..2 {
            let s = UdpSocket::bind(SocketAddr::new(b, 0)).expect("bind");
            s.send_to(b"q", dns).expect("send");
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.term().success(), "daemon exit: {}", d.log());
    let saved = std::fs::read_to_string(&obs).expect("observations saved at exit");

    // A restarted daemon reads them back.
    let mut d = Daemon::start(&pair, "learn-again", &args);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = d.log();
            // "running" comes once the signal handlers are in (a SIGTERM before would kill it).
            log.contains("learning: 3 observations from") && log.contains("running, pid")
        })
        .is_some(),
        "the restarted daemon did not read the observations back: {}\n{saved}",
        d.log()
    );
    assert!(d.term().success());

    let cand_path = write_temp("cand.toml", "");
    let out = pair.sgctl_ok(
        Side::A,
        &["learn", obs.to_str().unwrap(), rules.to_str().unwrap(), "--out", cand_path.to_str().unwrap()],
    );
    assert!(out.contains("- app ingress tcp 0-65535 from 192.0.2.0/24"), "{out}");
    for p in PORTS {
        assert!(out.contains(&format!("+ app ingress tcp {p} from 192.0.2.2/32")), "{out}");
    }
    assert!(out.contains("+ app ingress udp 5300 from 192.0.2.2/32"), "{out}");
    assert!(out.contains("- app ingress udp 0-65535 from 192.0.2.0/24"), "{out}");
    assert!(out.contains("3 flows from 1 peer (192.0.2.2)"), "evidence: {out}");
    let check =
        out.lines().find(|l| l.starts_with("check: ")).unwrap_or_else(|| panic!("no check line: {out}"));
    assert!(
        check.starts_with("check: 8 of 8 observed flows allowed by the candidate in the datapath")
            && check.contains("8 of 8 by the reference model"),
        "{check}"
    );
    assert!(check.ends_with("audit: 0 errors"), "{check}");
    let cand = std::fs::read_to_string(&cand_path).expect("candidate");
    // No ephemeral port: every port in the candidate is one B connected to.
    for line in cand.lines().filter(|l| l.contains("ports")) {
        assert!(
            PORTS.iter().chain(&[DNS]).any(|p| line.contains(&format!("ports = \"{p}\""))),
            "unexpected rule: {line}\n{cand}"
        );
    }

    // Applied: what was seen works, the port never seen is refused.
    pair.sgctl_ok(Side::A, &["apply", cand_path.to_str().unwrap()]);
    for p in PORTS {
        assert!(connects(&pair, p), "tcp {p} refused by the learned rules");
    }
    assert!(!connects(&pair, NEVER), "tcp {NEVER} (never seen) allowed by the learned rules");
    drop(listeners);
}

/// Flow events the datapath suppresses while learning (here its per-CPU limit, set to one
/// event a second) are counted, and `sgctl learn` says flows may be missing.
#[test]
fn suppressed_flow_events_are_counted_and_said() {
    if !require_bpf("suppressed_flow_events_are_counted_and_said") {
        return;
    }
    let pair = NetnsPair::new();
    let rules = write_temp(
        &format!("{}-learn-limited.toml", pair.if_a),
        &format!(
            "[groups.app]\ningress = [ {{ proto = \"tcp\", ports = \"7000\", from = \"192.0.2.0/24\" }} ]\n\n\
             [interfaces.{}]\ngroups = [\"app\"]\n",
            pair.if_a
        ),
    );
    let obs = write_temp(&format!("{}-limited.json", pair.if_a), "");
    std::fs::remove_file(&obs).unwrap();
    let mut d = Daemon::start(
        &pair,
        "learn-limited",
        &[
            "--config",
            rules.to_str().unwrap(),
            "--learn",
            obs.to_str().unwrap(),
            "--metrics",
            "off",
            "--cpu-rate",
            "1",
            "--cpu-burst",
            "1",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || pair.status_json()["interfaces"][0]["policy_seq"]
            .as_u64()
            .is_some())
        .is_some(),
        "never applied: {}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let _listener = listen(&pair, PORTS[0]);
    for _ in 0..10 {
        assert!(connects(&pair, PORTS[0]));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.term().success(), "daemon exit: {}", d.log());
    let out = pair.sgctl_ok(Side::A, &["learn", obs.to_str().unwrap(), rules.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let missed = v["missed_events"].as_u64().expect("missed_events");
    // sgctl's one JSON vocabulary: `direction`, never `dir`.
    assert_eq!(v["changes"][0]["direction"], "ingress", "{out}");
    assert!(!out.contains("\"dir\""), "{out}");
    assert!(missed >= 5, "10 flows at one event a second, {missed} counted as suppressed: {out}");
    let text = pair.sgctl_ok(Side::A, &["learn", obs.to_str().unwrap(), rules.to_str().unwrap()]);
    assert!(text.contains(&format!("the datapath suppressed {missed} flow events while learning")), "{text}");
}
