//! `sgctl daemon`: applies file changes within a second while a TCP stream flows, rejects a
//! bad edit and keeps enforcing the old rules, survives `kill -9` and a restart without
//! losing a packet (it adopts the pins), holds a per-namespace lock, leaves enforcement on
//! SIGTERM unless `--detach-on-exit`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sg_tests::{
    daemon::Daemon,
    group_rules,
    netns::{NetnsPair, Side},
    require_bpf, wait_until, write_temp,
};

/// Ingress drops of the first interface, per reason (the reasons that counted any).
fn datapath_drops(pair: &NetnsPair) -> std::collections::BTreeMap<String, u64> {
    let st = pair.status_json();
    st["interfaces"][0]["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .filter(|c| c["direction"] == "ingress" && c["action"] == "drop")
        .filter_map(|c| Some((c["reason"].as_str()?.to_string(), c["packets"].as_u64()?)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn seq(pair: &NetnsPair) -> Option<u64> {
    let st = pair.status_json();
    st["interfaces"].as_array()?.first()?["policy_seq"].as_u64()
}

/// Under systemd (`Type=notify`), the daemon says READY=1 once its rule set is enforced, not
/// before: units ordered after sgctl never start on an unfiltered interface.
#[test]
fn the_daemon_tells_systemd_it_is_ready_once_it_enforces() {
    if !require_bpf("the_daemon_tells_systemd_it_is_ready_once_it_enforces") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("daemon-ready.toml", &pair.if_a, &["tcp 7000"], "");
    let sock_path = write_temp("notify.sock", "");
    std::fs::remove_file(&sock_path).unwrap();
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let d = Daemon::start_with_env(
        pair.ns(Side::A),
        "ready",
        &["--config", file.to_str().unwrap(), "--metrics", "off"],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no notification ({e}): {}", d.log()));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert_eq!(seq(&pair), Some(1), "READY=1 before the rule set was enforced: {}", d.log());
}

#[test]
fn daemon_applies_changes_live_and_rejects_bad_edits() {
    if !require_bpf("daemon_applies_changes_live_and_rejects_bad_edits") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("daemon-live.toml", &pair.if_a, &["tcp 7000"], "");
    let d = Daemon::start(
        &pair,
        "live",
        &["--config", file.to_str().unwrap(), "--poll", "0.1", "--metrics", "off"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || seq(&pair).is_some()).is_some(),
        "never applied: {}",
        d.log()
    );
    let seq0 = seq(&pair).unwrap();

    // A TCP stream B -> A:7000 that runs through every change below.
    let a = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let listener = pair.run(Side::A, move || TcpListener::bind(a).expect("bind"));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            match c.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let stop2 = stop.clone();
    let sender = pair.run_spawn(Side::B, move || {
        let mut c = TcpStream::connect_timeout(&a, Duration::from_secs(2)).expect("connect");
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let chunk = vec![7u8; 16384];
        let mut sent = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
            c.write_all(&chunk).map_err(|e| format!("stream broke after {sent} bytes: {e}"))?;
            sent += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok::<u64, String>(sent)
    });

    // A good edit: applied within a second.
    assert_eq!(pair.udp_delivered(7001, 10), 0, "udp 7001 is not allowed yet");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap().replace(
            "ingress = [\n",
            "ingress = [\n  { proto = \"udp\", ports = \"7001\", from = \"192.0.2.0/24\" },\n",
        ),
    )
    .unwrap();
    let took = wait_until(Duration::from_secs(5), || seq(&pair) == Some(seq0 + 1));
    let took = took.unwrap_or_else(|| panic!("the change was not applied: {}", d.log()));
    assert!(took < Duration::from_secs(1), "applied after {took:?}");
    println!("file edit applied by the daemon after {took:?} (poll 0.1 s)");
    assert_eq!(pair.udp_delivered(7001, 10), 10, "the new rule enforces");

    // A bad edit: rejected with file:line, the last good rule set keeps enforcing.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("\"7001\"", "\"70001\"")).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        wait_until(Duration::from_secs(5), || d.log().contains("rejected")).is_some(),
        "no rejection logged: {}",
        d.log()
    );
    let log = d.log();
    let line = log.lines().find(|l| l.contains("rejected")).unwrap();
    assert!(line.contains(&format!("{name}:3")), "file:line in {line}");
    assert!(line.contains("keeps enforcing"), "{line}");
    assert_eq!(seq(&pair), Some(seq0 + 1), "nothing applied");
    assert_eq!(pair.udp_delivered(7001, 10), 10, "the old policy still enforces");
    assert_eq!(pair.udp_delivered(7002, 10), 0, "and still denies");

    // Fixed again: applied.
    std::fs::write(&file, good.replace("\"7001\"", "\"7002\"")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || seq(&pair) == Some(seq0 + 2)).is_some(), "{}", d.log());
    assert_eq!(pair.udp_delivered(7002, 10), 10);

    // An edit of an interface setting only (no rule changes): applied too.
    let fixed = good.replace("\"7001\"", "\"7002\"");
    let monitor = || pair.status_json()["interfaces"][0]["monitor"].as_bool();
    std::fs::write(&file, format!("{fixed}monitor = true\n")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || monitor() == Some(true)).is_some(), "{}", d.log());
    std::fs::write(&file, format!("{fixed}monitor = false\n")).unwrap();
    assert!(wait_until(Duration::from_secs(5), || monitor() == Some(false)).is_some(), "{}", d.log());
    assert_eq!(seq(&pair), Some(seq0 + 4));

    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender").expect("the TCP stream kept flowing");
    let got = receiver.join().expect("receiver").expect("receiver");
    assert!(sent > 0);
    assert_eq!(got, sent, "every byte of the stream arrived");
    println!("TCP stream through 4 applies and a rejected edit: {sent} bytes sent, {got} received");

    // A daemon started on a bad file keeps what the pins enforce (and says so).
    let mut d = d;
    assert!(d.term().success(), "{}", d.log());
    std::fs::write(&file, good.replace("\"7001\"", "\"70001\"")).unwrap();
    let mut d2 =
        Daemon::start(&pair, "live-bad-start", &["--config", file.to_str().unwrap(), "--metrics", "off"]);
    assert!(
        wait_until(Duration::from_secs(10), || d2.log().contains(&format!("keeping rule set #{}", seq0 + 4)))
            .is_some(),
        "{}",
        d2.log()
    );
    assert!(d2.running(), "it keeps running: {}", d2.log());
    assert_eq!(pair.udp_delivered(7002, 10), 10, "the pins still enforce");
}

#[test]
fn daemon_restart_after_kill_loses_no_packet() {
    if !require_bpf("daemon_restart_after_kill_loses_no_packet") {
        return;
    }
    let pair = NetnsPair::new();
    // ICMPv6 from anywhere too: the kernel's own MLD reports (B joining its solicited-node
    // groups, at random times after the link comes up) are then no drop, so the drop counters
    // below count only what the restart could cost.
    let rules = r#"[groups.g]
ingress = [
  { proto = "udp", ports = "7000", from = "192.0.2.0/24" },
  { proto = "icmpv6", icmp_type = -1, from = "::/0" },
]
"#;
    let file =
        write_temp("daemon-kill.toml", &format!("{rules}\n[interfaces.{}]\ngroups = [\"g\"]\n", pair.if_a));
    let args = ["--config", file.to_str().unwrap(), "--metrics", "off"];
    let mut d = Daemon::start(&pair, "kill-1", &args);
    assert!(wait_until(Duration::from_secs(10), || seq(&pair).is_some()).is_some(), "{}", d.log());

    // One daemon per namespace.
    let other = pair.sgctl(Side::A, &["daemon", "--config", file.to_str().unwrap(), "--metrics", "off"]);
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("another sgctl daemon"), "{other:?}");

    // Numbered datagrams B -> A:7000 at ~4k/s for 3 s; the daemon dies and restarts meanwhile.
    let a = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let rx = pair.run(Side::A, move || {
        let s = UdpSocket::bind(a).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        // 16 MiB of receive buffer (SO_RCVBUFFORCE, root): a receiver thread held up by a
        // busy machine must not lose datagrams in its socket, only the datapath could.
        let size: libc::c_int = 16 << 20;
        // SAFETY: a valid socket and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        s
    });
    let dropped_before = datapath_drops(&pair);
    let counter = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = [0u8; 16];
        while let Ok(n) = rx.recv(&mut buf) {
            if n == 8 {
                seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
            }
        }
        seen
    });
    let sender = pair.run_spawn(Side::B, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(3) && n < 20_000 {
            s.send_to(&n.to_be_bytes(), a).expect("send");
            n += 1;
            if n.is_multiple_of(4) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        n
    });
    std::thread::sleep(Duration::from_millis(700));
    d.kill9();
    let adopted_at = Instant::now();
    let d2 = Daemon::start(&pair, "kill-2", &args);
    assert!(
        wait_until(Duration::from_secs(5), || d2.log().contains("adopted")).is_some(),
        "the restarted daemon adopts the pins: {}",
        d2.log()
    );
    let adopt_took = adopted_at.elapsed();
    assert!(adopt_took < Duration::from_secs(2), "restart took {adopt_took:?}");
    let sent = sender.join().expect("sender");
    let seen = counter.join().expect("counter");
    assert!(sent > 1000, "sent {sent}");
    let lost: Vec<u64> = (0..sent).filter(|n| !seen.contains(n)).take(10).collect();
    assert!(lost.is_empty(), "{} of {sent} datagrams lost, first {lost:?}", sent - seen.len() as u64);
    assert_eq!(datapath_drops(&pair), dropped_before, "the datapath dropped nothing meanwhile");
    println!(
        "kill -9 and restart: {sent} datagrams sent, {} received, restart adopted after {adopt_took:?}",
        seen.len()
    );

    // SIGTERM: enforcement stays.
    let mut d2 = d2;
    assert!(d2.term().success(), "{}", d2.log());
    assert_eq!(seq(&pair), Some(1), "still enforcing after the daemon exited");
    assert_eq!(pair.udp_delivered(7001, 5), 0, "still denying");

    // --detach-on-exit: SIGTERM detaches.
    let mut d3 = Daemon::start(&pair, "detach", &[&args[..], &["--detach-on-exit"]].concat());
    assert!(wait_until(Duration::from_secs(5), || d3.log().contains("adopted")).is_some(), "{}", d3.log());
    assert!(d3.term().success(), "{}", d3.log());
    assert!(pair.status_json()["interfaces"].as_array().unwrap().is_empty(), "detached");
}
