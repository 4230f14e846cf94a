//! Fleet daemons on a LAN of namespaces, with a real 3-member etcd cluster in its own
//! namespace on the same subnet (so each daemon's connection to the store crosses the
//! interface it enforces). A group reference follows the hosts: a host that joins group web
//! is let in by the database's `from_group = "web"` rule, and its address leaves the group
//! one lease after its daemon is killed. A policy whose egress allows nothing does not cut a
//! host from the store (the failsafe rule).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sg_tests::{
    daemon::Daemon,
    etcd::EtcdCluster,
    lan::{Lan, LanHost},
    require_bpf, wait_until, write_temp,
};

const POLICY: &str = r#"
[groups.web]
ingress = [ { proto = "tcp", ports = "80", from = "198.51.100.0/24" } ]

[groups.db]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]

[hosts.db1.interfaces.eth0]
groups = ["db"]

[hosts.web1.interfaces.eth0]
groups = ["web"]

[hosts.web2.interfaces.eth0]
groups = ["web"]
"#;

const LEASE_TTL: u64 = 3;

/// Listeners on `ports` in `host`'s namespace that accept and close every connection (so the
/// backlog never fills), until dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(host: &LanHost, ports: &[u16]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let ls: Vec<TcpListener> = ports
            .iter()
            .map(|&p| {
                host.run(move || {
                    let l = TcpListener::bind(("0.0.0.0", p)).expect("listen");
                    l.set_nonblocking(true).expect("nonblocking");
                    l
                })
            })
            .collect();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for l in &ls {
                    while l.accept().is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Servers { stop, thread: Some(thread) }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connection from `from` to `to:port` is established within 400 ms.
fn connects(from: &LanHost, to: &LanHost, port: u16) -> bool {
    let addr = SocketAddr::new(to.addr(false), port);
    from.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(400)).is_ok())
}

fn status(cluster: &EtcdCluster, host: &str) -> Option<serde_json::Value> {
    let v = cluster.etcdctl(&["get", &format!("/sgctl/v1/status/{host}"), "--print-value-only"]);
    serde_json::from_str(v.trim()).ok()
}

/// The revision of the store now.
fn store_revision(cluster: &EtcdCluster) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&cluster.etcdctl(&["endpoint", "status", "-w", "json"]))
        .expect("endpoint status");
    v[0]["Status"]["header"]["revision"].as_i64().expect("revision")
}

/// Waits (10 s at most) until `host` reports enforcing revision `rev` or later, without error.
fn wait_enforcing(cluster: &EtcdCluster, host: &str, rev: i64, daemon: &Daemon) {
    let ok = wait_until(Duration::from_secs(10), || {
        status(cluster, host).is_some_and(|s| s["revision"].as_i64() >= Some(rev) && s["error"].is_null())
    });
    assert!(
        ok.is_some(),
        "{host} does not enforce revision {rev}: {:?}\n{}",
        status(cluster, host),
        daemon.log()
    );
}

fn put(store: &LanHost, urls: &str, name: &str, text: &str) -> i64 {
    let file = write_temp(name, text);
    let out = store.sgctl(&["fleet", "put", file.to_str().unwrap(), "--etcd", urls, "--json"]);
    assert!(out.status.success(), "fleet put: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["revision"].as_i64().expect("a revision was written")
}

/// The LAN both tests use: the store (3-member etcd), db1, web1, web2 and a client; `policy`
/// written; TCP servers on db1's ports 5432-5434.
struct Fleet {
    lan: Lan,
    store: LanHost,
    db1: LanHost,
    web1: LanHost,
    web2: LanHost,
    client: LanHost,
    cluster: EtcdCluster,
    urls: String,
    /// The revision of the policy's put.
    rev: i64,
    servers: Servers,
}

impl Fleet {
    fn new(name: &str, policy: &str) -> Fleet {
        let mut lan = Lan::new();
        let store = lan.add_host("store", 250);
        let db1 = lan.add_host("db1", 1);
        let web1 = lan.add_host("web1", 2);
        let web2 = lan.add_host("web2", 3);
        let client = lan.add_host("client", 9);
        let cluster = EtcdCluster::start_in(3, &store.ns, store.addr(false));
        let urls = cluster.urls();
        let rev = put(&store, &urls, name, policy);
        let servers = Servers::start(&db1, &[5432, 5433, 5434]);
        Fleet { lan, store, db1, web1, web2, client, cluster, urls, rev, servers }
    }
}

#[test]
fn group_membership_follows_hosts_and_the_store_stays_reachable() {
    if !require_bpf("group_membership_follows_hosts_and_the_store_stays_reachable") {
        return;
    }
    let Fleet { lan: _lan, store, db1, web1, web2, client, cluster, urls, rev, servers: _servers } =
        Fleet::new("fleet-daemon.toml", POLICY);
    assert!(connects(&client, &db1, 5432), "before any daemon, nothing is enforced");

    let args = |host: &str| -> Vec<String> {
        ["--etcd", &urls, "--host", host, "--metrics", "off", "--lease-ttl", &LEASE_TTL.to_string()]
            .iter()
            .map(|s| (*s).to_string())
            .collect()
    };
    let start = |h: &LanHost| {
        let a = args(&h.name);
        Daemon::start_in(&h.ns, &h.ns, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let d_db1 = start(&db1);
    let d_web1 = start(&web1);
    wait_enforcing(&cluster, "db1", rev, &d_db1);
    wait_enforcing(&cluster, "web1", rev, &d_web1);
    // web1 registered itself: db1 lets it in; the client and web2 (no daemon yet) stay out.
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || connects(&web1, &db1, 5432)).is_some(),
        "web1 -> db1:5432 never connected\n{}",
        d_db1.log()
    );
    eprintln!("web1 admitted {:?} after db1 enforced the put", t.elapsed());
    assert!(!connects(&client, &db1, 5432), "the client is in no group");
    assert!(!connects(&web2, &db1, 5432), "web2 has not joined yet");

    // web2 joins: its daemon registers its address in group web.
    let mut d_web2 = start(&web2);
    let t = Instant::now();
    let joined = wait_until(Duration::from_secs(10), || connects(&web2, &db1, 5432));
    assert!(joined.is_some(), "web2 never admitted\n{}\n{}", d_web2.log(), d_db1.log());
    eprintln!("web2 joined: admitted by db1 {:?} after its daemon started", t.elapsed());

    // web2 dies: one lease later its address leaves group web and db1 shuts it out.
    d_web2.kill9();
    let t = Instant::now();
    let left = wait_until(Duration::from_secs(LEASE_TTL * 4 + 5), || !connects(&web2, &db1, 5432));
    assert!(left.is_some(), "web2 still admitted after its lease\n{}", d_db1.log());
    eprintln!("web2 killed: out after {:?} (lease TTL {LEASE_TTL} s)", t.elapsed());
    assert!(connects(&web1, &db1, 5432), "web1 stays admitted");

    // A policy that lets nothing out of db1 and moves the port: db1 still hears of it.
    let locked = POLICY.replace(
        "ingress = [ { proto = \"tcp\", ports = \"5432\", from_group = \"web\" } ]",
        "ingress = [ { proto = \"tcp\", ports = \"5433\", from_group = \"web\" } ]\negress = []",
    );
    let rev2 = put(&store, &urls, "fleet-daemon-2.toml", &locked);
    wait_enforcing(&cluster, "db1", rev2, &d_db1);
    assert!(
        wait_until(Duration::from_secs(5), || connects(&web1, &db1, 5433) && !connects(&web1, &db1, 5432))
            .is_some(),
        "db1 does not enforce the new port\n{}",
        d_db1.log()
    );
    // Its tracked connection to the store lives on; a new one needs the failsafe rule:
    // restart db1's daemon (it adopts the pinned rule set) and change the policy again.
    let mut d_db1 = d_db1;
    d_db1.kill9();
    let d_db1 = start(&db1);
    let rev3 = put(&store, &urls, "fleet-daemon-3.toml", &locked.replace("5433", "5434"));
    wait_enforcing(&cluster, "db1", rev3, &d_db1);
    assert!(connects(&web1, &db1, 5434), "db1 does not enforce revision {rev3}\n{}", d_db1.log());
    // `fleet status`: db1 and web1 alive and enforcing, web2 (killed) not alive.
    let out = store.sgctl(&["fleet", "status", "--json", "--etcd", &urls]);
    assert!(out.status.success(), "fleet status: {}", String::from_utf8_lossy(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = |n: &str| st["hosts"].as_array().unwrap().iter().find(|h| h["host"] == n).cloned().unwrap();
    assert_eq!(host("db1")["alive"], true, "{st}");
    assert!(host("db1")["status"]["revision"].as_i64() >= Some(rev3), "{st}");
    assert_eq!(host("web1")["alive"], true, "{st}");
    assert_eq!(host("web2")["alive"], false, "{st}");
    assert_eq!(host("db1")["interfaces"], serde_json::json!(["eth0"]), "{st}");
    let table = store.sgctl(&["fleet", "status", "--etcd", &urls]);
    eprintln!("{}", String::from_utf8_lossy(&table.stdout));

    // Idle, the fleet writes nothing (no status echo between hosts): leases renew without
    // revisions.
    let before = store_revision(&cluster);
    std::thread::sleep(Duration::from_secs(2));
    let after = store_revision(&cluster);
    assert!(after - before <= 2, "the store went from revision {before} to {after} in 2 idle seconds");
}

/// Numbered UDP datagrams from `from` to `to:port` every 2 ms until stopped (at most 60 s):
/// how many were sent and which arrived.
struct Stream {
    stop: Arc<AtomicBool>,
    sender: Option<std::thread::JoinHandle<u32>>,
    receiver: Option<std::thread::JoinHandle<Vec<u32>>>,
}

impl Stream {
    fn start(from: &LanHost, to: &LanHost, port: u16) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sock = to.run(move || {
            let s = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            s
        });
        let s2 = stop.clone();
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            let mut idle_after_stop = 0;
            while idle_after_stop < 5 {
                match sock.recv(&mut buf) {
                    Ok(4) => got.push(u32::from_be_bytes(buf[..4].try_into().unwrap())),
                    Ok(_) => {}
                    Err(_) if s2.load(Ordering::Relaxed) => idle_after_stop += 1,
                    Err(_) => {}
                }
            }
            got
        });
        let dst = SocketAddr::new(to.addr(false), port);
        let s3 = stop.clone();
        let sender = sg_tests::netns::spawn_in_ns(&from.ns, move || {
            let s = std::net::UdpSocket::bind(("0.0.0.0", 40900)).expect("bind sender");
            let t = Instant::now();
            let mut n = 0u32;
            while !s3.load(Ordering::Relaxed) && t.elapsed() < Duration::from_mins(1) {
                let _ = s.send_to(&n.to_be_bytes(), dst);
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        Stream { stop, sender: Some(sender), receiver: Some(receiver) }
    }

    /// Stops; (sent, received numbers).
    fn finish(mut self) -> (u32, Vec<u32>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.take().unwrap().join().unwrap();
        let got = self.receiver.take().unwrap().join().unwrap();
        (sent, got)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The metrics text of the daemon serving on 127.0.0.1:`port` in `host`'s namespace.
fn scrape(host: &LanHost, port: u16) -> String {
    use std::io::{Read as _, Write as _};
    host.run(move || {
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2))
                .expect("connect metrics");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    })
}

/// The value of unlabelled sample `name`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(&format!("{name} "))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const OUTAGE_POLICY: &str = r#"
[groups.web]
ingress = [ { proto = "tcp", ports = "80", from = "198.51.100.0/24" } ]

[groups.db]
ingress = [
  { proto = "udp", ports = "9000", from_group = "web" },
  { proto = "tcp", ports = "5432", from_group = "web" },
]

[hosts.db1.interfaces.eth0]
groups = ["db"]

[hosts.web1.interfaces.eth0]
groups = ["web"]

[hosts.web2.interfaces.eth0]
groups = ["web"]
"#;

#[test]
fn enforcement_holds_through_store_outages_and_a_tracked_flow_loses_nothing() {
    if !require_bpf("enforcement_holds_through_store_outages_and_a_tracked_flow_loses_nothing") {
        return;
    }
    let Fleet { lan: _lan, store, db1, web1, web2, client, mut cluster, urls, rev, servers: _servers } =
        Fleet::new("fleet-outage.toml", OUTAGE_POLICY);
    // Each host namespace has its own loopback: one metrics port for all.
    const METRICS: u16 = 9947;
    let start = |h: &LanHost| {
        let ttl = LEASE_TTL.to_string();
        let m = format!("127.0.0.1:{METRICS}");
        let a = ["--etcd", &urls, "--host", &h.name, "--metrics", &m, "--lease-ttl", &ttl];
        Daemon::start_in(&h.ns, &h.ns, &a)
    };
    let d_db1 = start(&db1);
    let _d_web1 = start(&web1);
    let mut d_web2 = start(&web2);
    wait_enforcing(&cluster, "db1", rev, &d_db1);
    for w in [&web1, &web2] {
        assert!(
            wait_until(Duration::from_secs(10), || connects(w, &db1, 5432)).is_some(),
            "{} never admitted\n{}",
            w.name,
            d_db1.log()
        );
    }
    let stream = Stream::start(&web1, &db1, 9000);
    std::thread::sleep(Duration::from_millis(200));

    // One member of three down: updates go on.
    cluster.stop_member(0);
    let rev2 = put(&store, &urls, "fleet-outage-2.toml", &OUTAGE_POLICY.replace("\"5432\"", "\"5433\""));
    wait_enforcing(&cluster, "db1", rev2, &d_db1);
    assert!(wait_until(Duration::from_secs(5), || connects(&web1, &db1, 5433)).is_some());

    // All down: enforcement stays as it is; web2 dies meanwhile.
    cluster.stop_member(1);
    cluster.stop_member(2);
    std::thread::sleep(Duration::from_secs(1));
    d_web2.kill9();
    assert!(connects(&web1, &db1, 5433), "enforcement changed while the store was down");
    assert!(!connects(&client, &db1, 5433), "the client got in while the store was down");
    assert!(!connects(&web1, &db1, 5432), "the old rule came back while the store was down");
    std::thread::sleep(Duration::from_secs(2));
    assert!(d_db1.log().contains("keeps enforcing"), "db1 does not say it lost the store\n{}", d_db1.log());
    let m = scrape(&db1, METRICS);
    assert_eq!(metric(&m, "sgctl_fleet_connected"), Some(0.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_last_sync_seconds").is_some_and(|s| s >= 1.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_revision").is_some_and(|r| r >= rev2 as f64), "{m}");

    // The store returns: web2's lease runs out one TTL after a new leader, db1 reconciles.
    let back = Instant::now();
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_healthy(&[0, 1, 2]);
    let out = wait_until(Duration::from_secs(LEASE_TTL * 4 + 15), || !connects(&web2, &db1, 5433));
    assert!(out.is_some(), "web2 (dead) still admitted after the outage\n{}", d_db1.log());
    eprintln!(
        "store back: dead web2 out {:?} after the members restarted (lease TTL {LEASE_TTL} s)",
        back.elapsed()
    );
    let rev3 = put(&store, &urls, "fleet-outage-3.toml", &OUTAGE_POLICY.replace("\"5432\"", "\"5434\""));
    wait_enforcing(&cluster, "db1", rev3, &d_db1);
    assert!(wait_until(Duration::from_secs(5), || connects(&web1, &db1, 5434)).is_some());
    let m = scrape(&db1, METRICS);
    assert_eq!(metric(&m, "sgctl_fleet_connected"), Some(1.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_last_sync_seconds").is_some_and(|s| s <= 2.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_revision").is_some_and(|r| r >= rev3 as f64), "{m}");

    let (sent, got) = stream.finish();
    let lost = sent as usize - got.len();
    eprintln!("tracked UDP flow web1 -> db1: {sent} datagrams sent, {} received", got.len());
    assert!(sent > 1000, "{sent} datagrams");
    assert_eq!(lost, 0, "the tracked flow lost {lost} of {sent} datagrams");
}
