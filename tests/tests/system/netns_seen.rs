//! The conntrack presence filter under live traffic: `sgctl conntrack gc` rebuilds it over and
//! over while a TCP echo stream runs and new UDP flows keep being created; the stream never
//! stalls, and afterwards every tracked flow is marked.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sg_tests::{
    group_rules,
    netns::{NetnsPair, Side},
    require_bpf,
};
use sg_userspace::maps::InstanceMaps;

#[test]
fn gc_rebuilds_the_filter_without_losing_live_flows() {
    if !require_bpf("gc_rebuilds_the_filter_without_losing_live_flows") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("seen.toml", &pair.if_a, &["tcp 7000", "udp 7001"], "");
    pair.sgctl_ok(Side::A, &["apply", file.to_str().unwrap()]);

    let addr = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let udp_addr = SocketAddr::new(pair.addr(Side::A, false), 7001);
    let listener = pair.run(Side::A, move || TcpListener::bind(addr).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    // Client: a round trip every 2 ms for 3 s, plus a new UDP flow each time; the worst round
    // trip is recorded.
    let client = pair.run_spawn(Side::B, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let start = Instant::now();
        let (mut worst, mut trips) = (Duration::ZERO, 0u32);
        let mut buf = [0u8; 8];
        while start.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            s.write_all(b"ping1234").expect("write");
            s.read_exact(&mut buf).expect("echo within 3 s");
            worst = worst.max(t.elapsed());
            trips += 1;
            let u = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            let _ = u.send_to(b"new flow", udp_addr);
            std::thread::sleep(Duration::from_millis(2));
        }
        (trips, worst)
    });
    let mut gcs = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let out = pair.sgctl_ok(Side::A, &["conntrack", "gc"]);
        assert!(out.contains("presence filter rebuilt"), "{out}");
        gcs += 1;
    }
    let (trips, worst) = client.join().expect("client");
    drop(server);
    assert!(gcs >= 5, "only {gcs} rebuilds ran");
    assert!(trips > 200, "only {trips} round trips");
    assert!(worst < Duration::from_millis(500), "a round trip stalled for {worst:?} during rebuilds");

    let dir = pair.pin_dir(Side::A).expect("pins").join(&pair.if_a);
    let maps = pair.run(Side::A, move || InstanceMaps::from_pins(&dir).expect("open maps"));
    let entries = maps.ct_entries().expect("entries");
    assert!(entries.len() > 100, "the UDP flows are tracked: {}", entries.len());
    let unmarked = entries.iter().filter(|(_, k, _)| !maps.seen_marked(k)).count();
    assert_eq!(unmarked, 0, "every tracked flow is marked after {gcs} rebuilds under traffic");
}
