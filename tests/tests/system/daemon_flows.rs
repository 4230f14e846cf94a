//! The daemon's flow logs (accept / reject / end records with the right fields, a flood of
//! rejected packets held to the configured event rate, VPC Flow Logs v2 records) and its
//! Prometheus endpoint (counters move with traffic).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use sg_tests::{
    daemon::Daemon,
    group_rules,
    netns::{NetnsPair, Side},
    require_bpf, wait_until, write_temp,
};

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn find<'a>(
    recs: &'a [serde_json::Value],
    event: &str,
    proto: &str,
    dport: u16,
) -> Option<&'a serde_json::Value> {
    recs.iter().find(|r| r["event"] == event && r["proto"] == proto && r["dport"] == dport)
}

/// One TCP connection B -> A:port that sends `hello` and closes (both sides).
fn tcp_exchange(pair: &NetnsPair, port: u16) {
    let a = SocketAddr::new(pair.addr(Side::A, false), port);
    let l = pair.run(Side::A, move || TcpListener::bind(a).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("read");
        buf
    });
    pair.run(Side::B, move || {
        let mut c = TcpStream::connect_timeout(&a, Duration::from_secs(2)).expect("connect");
        c.write_all(b"hello").unwrap();
    });
    assert_eq!(server.join().unwrap(), b"hello");
}

fn udp_send(pair: &NetnsPair, port: u16, n: u32) -> Duration {
    let a = SocketAddr::new(pair.addr(Side::A, false), port);
    pair.run(Side::B, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let t = Instant::now();
        for _ in 0..n {
            s.send_to(b"probe", a).expect("send");
            if t.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        t.elapsed()
    })
}

/// `GET path` from the daemon's metrics address (read from its daemon.json), inside A.
fn http_get(pair: &NetnsPair, path: &str) -> String {
    let info = sg_userspace::state::state_dir_for(pair.cookie(Side::A).unwrap()).join("daemon.json");
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(info).unwrap()).unwrap();
    let addr: SocketAddr = info["metrics"].as_str().expect("metrics address").parse().unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    pair.run(Side::A, move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect metrics");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    })
}

/// The value of the first sample of `name` whose labels include every `k="v"` of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn flow_logs_record_accept_reject_end_and_hold_floods_to_the_rate() {
    if !require_bpf("flow_logs_record_accept_reject_end_and_hold_floods_to_the_rate") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("flows.toml", &pair.if_a, &["tcp 7000"], "timeouts = { tcp_closing = 1 }\n");
    let jl = write_temp("flows.jsonl", "");
    let vpc = write_temp("flows.vpc", "");
    let d = Daemon::start(
        &pair,
        "flows",
        &[
            "--config",
            file.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--flow-log",
            jl.to_str().unwrap(),
            "--vpc-flow-log",
            vpc.to_str().unwrap(),
            "--flow-window",
            "1",
            "--gc-interval",
            "0.5",
            "--reject-rate",
            "5",
            "--reject-burst",
            "5",
            "--account-id",
            "123456789012",
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || d.log().contains("metrics on")).is_some(), "{}", d.log());
    let (a, b) = (pair.addr(Side::A, false).to_string(), pair.addr(Side::B, false).to_string());

    tcp_exchange(&pair, 7000);
    udp_send(&pair, 7001, 1);
    let ok = wait_until(Duration::from_secs(10), || {
        let r = records(&jl);
        find(&r, "accept", "tcp", 7000).is_some()
            && find(&r, "reject", "udp", 7001).is_some()
            && find(&r, "end", "tcp", 7000).is_some()
    })
    .is_some();
    assert!(
        ok,
        "records missing: {:?}\nconntrack: {}\n{}",
        records(&jl),
        pair.sgctl_ok(Side::A, &["conntrack", "list", "--json"]),
        d.log()
    );
    let r = records(&jl);
    let acc = find(&r, "accept", "tcp", 7000).unwrap();
    assert_eq!(acc["iface"], pair.if_a.as_str());
    assert_eq!(acc["direction"], "ingress");
    assert_eq!((acc["src"].as_str(), acc["dst"].as_str()), (Some(b.as_str()), Some(a.as_str())));
    assert_eq!(acc["reason"], "rule_allow");
    assert!(acc["rule"].as_str().unwrap().contains("tcp 7000"), "{acc}");
    assert!(acc["time"].as_str().unwrap().starts_with("20"), "{acc}");
    let rej = find(&r, "reject", "udp", 7001).unwrap();
    assert_eq!((rej["src"].as_str(), rej["reason"].as_str()), (Some(b.as_str()), Some("no_rule")), "{rej}");
    assert_eq!(rej["bytes"], 47, "a 5-byte UDP payload in a 47-byte frame: {rej}");
    let end = find(&r, "end", "tcp", 7000).unwrap();
    assert_eq!(
        (end["src"].as_str(), end["dst"].as_str()),
        (Some(b.as_str()), Some(a.as_str())),
        "initiator first"
    );
    let pk = end["flow_packets"].as_array().unwrap();
    assert!(
        pk[0].as_u64().unwrap() >= 4 && pk[1].as_u64().unwrap() >= 3,
        "SYN, ACK, data, FIN each way: {end}"
    );
    assert!(end["rule"].as_str().unwrap().contains("tcp 7000"), "{end}");
    assert!(end["start"].is_string(), "{end}");

    // `sgctl flows --json` reads the same file through daemon.json.
    let before = records(&jl).len();
    let out = pair.sgctl_ok(Side::A, &["flows", "--json"]);
    let printed = out.lines().count();
    assert!(before <= printed && printed <= records(&jl).len(), "{out}");
    let table = pair.sgctl_ok(Side::A, &["flows"]);
    assert!(table.contains("reject") && table.contains("no_rule"), "{table}");

    // `sgctl flows --follow --json` prints what is written after it started.
    let follow_out = write_temp("follow.out", "");
    let mut follower = {
        let (bin, out) = (sg_tests::sgctl_path(), std::fs::File::create(&follow_out).unwrap());
        pair.run(Side::A, move || {
            std::process::Command::new(bin)
                .args(["flows", "--follow", "--json", "--last", "0"])
                .stdout(out)
                .spawn()
        })
        .expect("spawn sgctl flows --follow")
    };
    std::thread::sleep(Duration::from_millis(300));

    // A flood of 20,000 rejected datagrams from one source: at most burst + rate x time events.
    const FLOOD: u32 = 20_000;
    let took = udp_send(&pair, 7002, FLOOD);
    std::thread::sleep(Duration::from_millis(500));
    let n = records(&jl).iter().filter(|r| r["event"] == "reject" && r["dport"] == 7002).count();
    let followed = wait_until(Duration::from_secs(3), || {
        records(&follow_out).iter().filter(|r| r["dport"] == 7002).count() == n
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let got = records(&follow_out);
    assert!(followed.is_some(), "--follow printed {} of {n} flood records", got.len());
    // (The kernel's own IPv6 multicast reports may be rejected meanwhile: not checked.)
    assert!(
        !got.iter().any(|r| r["dport"] == 7001 || r["event"] == "accept" || r["event"] == "end"),
        "--last 0: only records written after it started: {got:?}"
    );
    let limit = 5.0 + 5.0 * (took.as_secs_f64() + 0.7) + 1.0;
    assert!(n >= 5 && (n as f64) <= limit, "{n} reject records in {took:?} (limit {limit})");
    println!("flood of {FLOOD} rejected datagrams in {took:?}: {n} reject records (limit {limit:.1})");
    let m = http_get(&pair, "/metrics");
    let limited = metric(
        &m,
        "sgctl_flow_log_events_dropped_total",
        &[("iface", &pair.if_a), ("cause", "rate_limited")],
    );
    assert!(limited.unwrap_or(0.0) >= 15_000.0, "rate-limited events counted: {limited:?}");

    // VPC Flow Logs v2: the accepted flow's two directions and the rejects, per 1 s window.
    // Records: version account iface src dst sport dport proto packets bytes start end action
    // status. Wait for the windows of the flow (port 7000) and of the flood (port 7002).
    let fields = |l: &str| l.split(' ').map(str::to_string).collect::<Vec<_>>();
    let has = |text: &str, action: &str, dport: &str| {
        text.lines().map(fields).any(|f| f.len() == 14 && f[12] == action && f[6] == dport)
    };
    let ok = wait_until(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&vpc).unwrap_or_default();
        has(&t, "ACCEPT", "7000") && has(&t, "REJECT", "7002")
    })
    .is_some();
    let text = std::fs::read_to_string(&vpc).unwrap();
    assert!(ok, "{text}");
    // The flow may straddle a window boundary: its records are counted over all windows.
    let accepts: Vec<Vec<String>> =
        text.lines().map(fields).filter(|f| f[12] == "ACCEPT" && f[6] == "7000").collect();
    assert!(!accepts.is_empty(), "no ACCEPT record to port 7000: {text}");
    for accept in &accepts {
        assert_eq!(accept.len(), 14, "{accept:?}");
        assert_eq!(&accept[..5], ["2", "123456789012", pair.if_a.as_str(), b.as_str(), a.as_str()]);
        assert_eq!(accept[7], "6");
        assert!(accept[10].parse::<u64>().unwrap() <= accept[11].parse::<u64>().unwrap());
    }
    let packets: u64 = accepts.iter().map(|f| f[8].parse::<u64>().unwrap()).sum();
    assert!(packets >= 4, "SYN, ACK, data, FIN from the initiator: {accepts:?}");
    let rejects: Vec<Vec<String>> =
        text.lines().map(fields).filter(|f| f[12] == "REJECT" && f[6] == "7002").collect();
    assert!(!rejects.is_empty(), "no REJECT record to port 7002: {text}");
    for reject in &rejects {
        assert_eq!((reject[3].as_str(), reject[7].as_str()), (b.as_str(), "17"), "{reject:?}");
    }
    assert!(
        rejects.iter().any(|r| r[13] == "SKIPDATA"),
        "rejects were rate-limited in the flood's window: {rejects:?}"
    );
}

#[test]
fn metrics_endpoint_counters_move() {
    if !require_bpf("metrics_endpoint_counters_move") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("metrics.toml", &pair.if_a, &["tcp 7000"], "");
    let d =
        Daemon::start(&pair, "metrics", &["--config", file.to_str().unwrap(), "--metrics", "127.0.0.1:0"]);
    assert!(wait_until(Duration::from_secs(10), || d.log().contains("metrics on")).is_some(), "{}", d.log());
    let ifa = pair.if_a.clone();
    let drop_labels = [("iface", ifa.as_str()), ("direction", "ingress"), ("reason", "no_rule")];
    let hit_labels = [("iface", ifa.as_str()), ("direction", "ingress"), ("index", "0")];

    let m0 = http_get(&pair, "/metrics");
    assert!(m0.starts_with("HTTP/1.1 200 OK"), "{m0}");
    assert!(m0.contains("application/openmetrics-text"), "{m0}");
    assert!(m0.trim_end().ends_with("# EOF"), "{m0}");
    assert_eq!(metric(&m0, "sgctl_applies_total", &[]), Some(1.0), "{m0}");
    assert_eq!(metric(&m0, "sgctl_apply_failures_total", &[]), Some(0.0));
    assert_eq!(metric(&m0, "sgctl_rule_set_seq", &[]), Some(1.0));
    assert_eq!(
        metric(&m0, "sgctl_conntrack_capacity", &[("iface", &ifa), ("table", "established")]),
        Some(262_144.0)
    );
    // Every sample is a metric of the documented list, with exactly its labels.
    for line in
        m0.lines().skip_while(|l| !l.starts_with('#')).filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = line.split_once(['{', ' ']).expect("a sample line");
        let doc = sg_userspace::metrics::METRICS
            .iter()
            .find(|m| m.exposed() == name)
            .unwrap_or_else(|| panic!("{name} is served but not in metrics::METRICS"));
        let keys: Vec<&str> = if line.contains('{') {
            rest.split('}').next().unwrap().split("\",").map(|kv| kv.split('=').next().unwrap()).collect()
        } else {
            Vec::new()
        };
        assert_eq!(keys, doc.labels, "{name}: labels of `{line}`");
    }
    let drops0 = metric(&m0, "sgctl_packets_total", &drop_labels).expect("no_rule counter");
    let hits0 = metric(&m0, "sgctl_rule_hits_total", &hit_labels).expect("rule hits");

    udp_send(&pair, 7001, 10);
    tcp_exchange(&pair, 7000);
    let m1 = http_get(&pair, "/metrics");
    assert!(metric(&m1, "sgctl_packets_total", &drop_labels).unwrap() >= drops0 + 10.0, "{m1}");
    assert!(metric(&m1, "sgctl_rule_hits_total", &hit_labels).unwrap() >= hits0 + 1.0, "{m1}");
    assert!(
        metric(&m1, "sgctl_conntrack_entries", &[("iface", &ifa), ("table", "established")]).unwrap() >= 1.0,
        "{m1}"
    );

    // A rejected edit counts as a failure.
    std::fs::write(&file, "[groups.g]\ningress = [ { proto = \"tcp\", ports = \"99999\" } ]\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || d.log().contains("rejected")).is_some(), "{}", d.log());
    let m2 = http_get(&pair, "/metrics");
    assert_eq!(metric(&m2, "sgctl_apply_failures_total", &[]), Some(1.0), "{m2}");
    assert!(http_get(&pair, "/nope").starts_with("HTTP/1.1 404"));
}

/// The datapath's aya-log warning (conntrack table full) reaches the daemon's log.
#[test]
fn datapath_warnings_reach_the_daemon_log() {
    if !require_bpf("datapath_warnings_reach_the_daemon_log") {
        return;
    }
    let pair = NetnsPair::new();
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--ct-size", "1"]);
    let file = group_rules("ctfull.toml", &pair.if_a, &["tcp 7000-7001"], "");
    let d = Daemon::start(&pair, "ctfull", &["--config", file.to_str().unwrap(), "--metrics", "off"]);
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains("applied rule set")).is_some(),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("conntrack table full"));
    // The first connection fills the one-entry table; the second one's reply cannot be
    // promoted to it.
    tcp_exchange(&pair, 7000);
    let a = SocketAddr::new(pair.addr(Side::A, false), 7001);
    let _l = pair.run(Side::A, move || TcpListener::bind(a).expect("bind"));
    // connect() returns at the SYN-ACK; the handshake's last ACK is refused (ct_full).
    pair.run(Side::B, move || {
        if let Ok(mut c) = TcpStream::connect_timeout(&a, Duration::from_millis(500)) {
            let _ = c.write_all(b"x");
        }
    });
    assert!(
        wait_until(Duration::from_secs(5), || d.log().contains("conntrack table full")).is_some(),
        "no datapath warning in the daemon's log: {}",
        d.log()
    );
    let st = pair.sgctl_ok(Side::A, &["status"]);
    assert!(!st.contains(" 0 drops for a full table"), "{st}");
}

/// A TCP connection B:`local` -> `to`, from a fixed local port.
fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
    };
    let (SocketAddr::V4(local), SocketAddr::V4(to)) = (local, to) else { panic!("IPv4 only") };
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(local)).expect("bind");
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).expect("connect");
    TcpStream::from(fd)
}

/// A flow the datapath itself ends (a SYN reusing the ports of a reset connection) gets its
/// end record from the datapath's event: the gc never runs in this daemon's lifetime.
#[test]
fn flows_the_datapath_ends_get_end_records() {
    if !require_bpf("flows_the_datapath_ends_get_end_records") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("dp-end.toml", &pair.if_a, &["tcp 7000"], "");
    let jl = write_temp("dp-end.jsonl", "");
    let args = ["--config", file.to_str().unwrap(), "--metrics", "off", "--flow-log", jl.to_str().unwrap()];
    let d = Daemon::start(&pair, "dp-end", &[&args[..], &["--gc-interval", "3600"]].concat());
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains("applied rule set")).is_some(),
        "{}",
        d.log()
    );

    let a = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let local = SocketAddr::new(pair.addr(Side::B, false), 47_000);
    let l = pair.run(Side::A, move || TcpListener::bind(a).expect("bind"));
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, _) = l.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.read_to_end(&mut Vec::new());
        }
    });
    pair.run(Side::B, move || {
        // Reset at once (linger 0): the flow is `closed`; the next SYN from the same port
        // starts a new connection and ends the old flow in the datapath.
        let c = connect_from(local, a);
        let off = libc::linger { l_onoff: 1, l_linger: 0 };
        nix::sys::socket::setsockopt(&c, nix::sys::socket::sockopt::Linger, &off).unwrap();
        drop(c);
        let mut c = connect_from(local, a);
        c.write_all(b"again").unwrap();
    });
    server.join().unwrap();
    let ended = wait_until(Duration::from_secs(5), || {
        records(&jl).iter().any(|r| r["event"] == "end" && r["sport"] == 47_000 && r["dport"] == 7000)
    });
    let recs = records(&jl);
    assert!(ended.is_some(), "no end record for the reset flow: {recs:?}\n{}", d.log());
    let end = recs.iter().find(|r| r["event"] == "end" && r["sport"] == 47_000).unwrap();
    assert_eq!(end["reason"], "closed", "{end}");
    assert!(end["rule"].as_str().unwrap().contains("tcp 7000"), "{end}");
    let pk = end["flow_packets"].as_array().unwrap();
    assert!(pk[0].as_u64().unwrap() >= 3 && pk[1].as_u64().unwrap() >= 1, "SYN, ACK, RST / SYN-ACK: {end}");
    assert_eq!(
        recs.iter().filter(|r| r["event"] == "accept" && r["sport"] == 47_000).count(),
        2,
        "both connections were accepted: {recs:?}"
    );
}

/// A network ACL's drops reach every view: the verdict counters and the per-entry hits on the
/// metrics endpoint, and the flow log's reject records (reason `acl_deny`).
#[test]
fn acl_drops_reach_metrics_and_flow_logs() {
    if !require_bpf("acl_drops_reach_metrics_and_flow_logs") {
        return;
    }
    let pair = NetnsPair::new();
    // The group allows udp 7001 from B; the ACL's rule 10 denies it, rule 100 allows the rest.
    let acl = "acl = \"edge\"\n[acls.edge]\ningress = [\n  { rule = 10, action = \"deny\", proto = \"udp\", ports = \"7001\", cidr = \"192.0.2.0/24\" },\n  { rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" },\n]\negress = [{ rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }]\n";
    let file = group_rules("acl-metrics.toml", &pair.if_a, &["udp 7001"], acl);
    let jl = write_temp("acl-flows.jsonl", "");
    let d = Daemon::start(
        &pair,
        "acl-metrics",
        &["--config", file.to_str().unwrap(), "--metrics", "127.0.0.1:0", "--flow-log", jl.to_str().unwrap()],
    );
    assert!(wait_until(Duration::from_secs(10), || d.log().contains("metrics on")).is_some(), "{}", d.log());
    udp_send(&pair, 7001, 10);
    let ifa = pair.if_a.clone();
    let m = http_get(&pair, "/metrics");
    let drops = metric(
        &m,
        "sgctl_packets_total",
        &[("iface", &ifa), ("direction", "ingress"), ("reason", "acl_deny")],
    );
    assert_eq!(drops, Some(10.0), "{m}");
    let entry =
        metric(&m, "sgctl_acl_entry_hits_total", &[("iface", &ifa), ("acl", "edge"), ("rule_number", "10")]);
    assert_eq!(entry, Some(10.0), "{m}");
    assert!(
        wait_until(Duration::from_secs(10), || find(&records(&jl), "reject", "udp", 7001).is_some())
            .is_some()
    );
    let r = records(&jl);
    let rej = find(&r, "reject", "udp", 7001).unwrap();
    assert_eq!(rej["reason"], "acl_deny", "{rej}");
    // The record names the entry that denied it.
    assert_eq!(rej["acl"], "edge", "{rej}");
    assert!(rej["rule"].as_str().is_some_and(|r| r.starts_with("10 deny udp 7001")), "{rej}");
}
