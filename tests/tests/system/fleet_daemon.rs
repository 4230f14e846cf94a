//! Fleet daemons on a LAN of 10 hosts (2 db, 8 web), each its own namespace, interface and
//! daemon, two clients in no group, and a real 3-member etcd cluster in its own namespace on the
//! same subnet (so each daemon's connection to the store crosses the interface it enforces).
//! A rule change reaches every host; a group reference follows the hosts: a host that joins
//! group web is let in by the db hosts' `from_group = "web"` rule, and its address leaves the
//! group one lease after its daemon is killed. A policy whose egress allows nothing does not
//! cut a host from the store (the failsafe rule). The store's outages change nothing.
//!
//! `sgctl fleet learn` on three hosts: the db host observes, web hosts' registrations name the
//! peers, the proposal is a `from_group` rule; put, it keeps what was seen and refuses the rest.
//!
//! The tests run one at a time (20 daemons and 6 etcd members at once on two cores would
//! blur the lease timings).

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sg_tests::{
    daemon::Daemon,
    fleet::{DB_PORTS, Fleet, MEMBER_RANGES, WEB_PORTS, connects, connects_all, policy, store_revision},
    lan::LanHost,
    require_bpf, wait_until,
};

const DBS: usize = 2;
const WEBS: usize = 8;
const LEASE_TTL: u64 = 3;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_rule_change_reaches_ten_hosts_and_group_membership_follows_them() {
    if !require_bpf("a_rule_change_reaches_ten_hosts_and_group_membership_follows_them") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = Fleet::new("fleet-daemon.toml", DBS, WEBS, LEASE_TTL);
    let [db1, db2] = [&f.dbs[0], &f.dbs[1]];
    let (joiner, webs) = f.webs.split_last().unwrap();
    assert!(connects(&f.client, db1, DB_PORTS[0]), "before any daemon, nothing is enforced");

    // Nine daemons (the last web host joins later).
    let t = Instant::now();
    let mut daemons: Vec<(LanHost, Daemon)> =
        f.hosts().filter(|h| h.name != joiner.name).map(|h| (h.clone(), f.daemon(h, None))).collect();
    f.wait_enforcing(&daemons, f.rev, Duration::from_secs(20));
    eprintln!("9 daemons started and enforcing revision {} in {:?}", f.rev, t.elapsed());
    let log_of = |ds: &[(LanHost, Daemon)], name: &str| {
        ds.iter().find(|(h, _)| h.name == name).map(|(_, d)| d.log()).unwrap_or_default()
    };

    // Every web host registered itself: both db hosts let it in; the client and the joiner
    // (no daemon yet) stay out.
    let probes: Vec<_> = webs.iter().flat_map(|w| [(w, db1, DB_PORTS[0]), (w, db2, DB_PORTS[0])]).collect();
    let ok = wait_until(Duration::from_secs(10), || connects_all(&probes).iter().all(|&c| c));
    assert!(
        ok.is_some(),
        "web hosts not admitted by the db hosts: {:?}\n{}",
        connects_all(&probes),
        log_of(&daemons, "db1")
    );
    assert_eq!(
        connects_all(&[
            (&f.client, db1, DB_PORTS[0]),
            (&f.client2, db2, DB_PORTS[0]),
            (joiner, db1, DB_PORTS[0]),
            (joiner, db2, DB_PORTS[0])
        ]),
        [false; 4],
        "the clients are in no group and {} has not joined yet",
        joiner.name
    );

    // The joiner's daemon registers its address in group web: both db hosts let it in.
    let mut d_joiner = f.daemon(joiner, None);
    let t = Instant::now();
    let joined = wait_until(Duration::from_secs(10), || {
        connects_all(&[(joiner, db1, DB_PORTS[0]), (joiner, db2, DB_PORTS[0])]) == [true, true]
    });
    assert!(
        joined.is_some(),
        "{} never admitted\n{}\n{}",
        joiner.name,
        d_joiner.log(),
        log_of(&daemons, "db1")
    );
    eprintln!("{} joined: admitted by db1 and db2 {:?} after its daemon started", joiner.name, t.elapsed());

    // The joiner dies: one lease later its address leaves group web and both db hosts shut it out.
    d_joiner.kill9();
    let t = Instant::now();
    let left = wait_until(Duration::from_secs(LEASE_TTL * 4 + 5), || {
        connects_all(&[(joiner, db1, DB_PORTS[0]), (joiner, db2, DB_PORTS[0])]) == [false, false]
    });
    assert!(left.is_some(), "{} still admitted after its lease\n{}", joiner.name, log_of(&daemons, "db1"));
    eprintln!("{} killed: out of db1 and db2 after {:?} (lease TTL {LEASE_TTL} s)", joiner.name, t.elapsed());
    assert!(connects(&webs[0], db1, DB_PORTS[0]), "web1 stays admitted");

    // A rule change for every host: web moves to 8080, db to 5433, and db's egress allows
    // nothing. All nine enforce it; db1 and db2 still hear of it (their connections to the
    // store are tracked).
    let t = Instant::now();
    let rev2 = f.put("fleet-daemon-2.toml", &policy(DBS, WEBS, DB_PORTS[1], WEB_PORTS[1], Some("[]")));
    f.wait_enforcing(&daemons, rev2, Duration::from_secs(10));
    eprintln!("revision {rev2} enforced by all 9 hosts {:?} after the put started", t.elapsed());
    let mut probes: Vec<(&LanHost, &LanHost, u16)> = Vec::new();
    for (i, w) in webs.iter().enumerate() {
        let c = if i % 2 == 0 { &f.client } else { &f.client2 };
        probes.extend([(c, w, WEB_PORTS[1]), (c, w, WEB_PORTS[0])]);
    }
    for d in [db1, db2] {
        probes.extend([(&webs[0], d, DB_PORTS[1]), (&webs[0], d, DB_PORTS[0])]);
    }
    let want: Vec<bool> = probes.iter().map(|p| p.2 == WEB_PORTS[1] || p.2 == DB_PORTS[1]).collect();
    let ok = wait_until(Duration::from_secs(5), || connects_all(&probes) == want);
    assert!(ok.is_some(), "revision {rev2} not enforced: {:?} (want {want:?})", connects_all(&probes));

    // A new connection to the store needs the failsafe rule: restart db1's daemon (it adopts
    // the pinned rule set, whose egress allows nothing) and change the policy again.
    let i = daemons.iter().position(|(h, _)| h.name == "db1").unwrap();
    daemons[i].1.kill9();
    daemons[i].1 = f.daemon(db1, None);
    let rev3 = f.put("fleet-daemon-3.toml", &policy(DBS, WEBS, DB_PORTS[2], WEB_PORTS[1], Some("[]")));
    // (A host reports the revision of the last change to its own rule set: this one changes
    // the db hosts' only.)
    f.wait_enforcing(&daemons[..DBS], rev3, Duration::from_secs(10));
    assert!(
        connects(&webs[0], db1, DB_PORTS[2]),
        "db1 does not enforce revision {rev3}\n{}",
        daemons[i].1.log()
    );

    // A value written by hand that does not validate: rejected whole, the host says why in
    // its status and keeps enforcing; a good value again clears the error.
    let good = f.cluster.etcdctl(&["get", "/sgctl/v1/groups/db", "--print-value-only"]).trim().to_string();
    assert!(good.contains("\"5434\""), "{good}");
    f.cluster.etcdctl(&["put", "/sgctl/v1/groups/db", &good.replace("\"5434\"", "\"99999\"")]);
    let rejected = wait_until(Duration::from_secs(10), || {
        sg_tests::fleet::status(&f.cluster, "db1").is_some_and(|s| {
            s["error"].as_str().is_some_and(|e| e.contains("etcd:/sgctl/v1/@") && e.contains("99999"))
        })
    });
    assert!(
        rejected.is_some(),
        "db1 does not report the bad value: {:?}",
        sg_tests::fleet::status(&f.cluster, "db1")
    );
    assert!(connects(&webs[0], db1, DB_PORTS[2]), "db1 stopped enforcing revision {rev3}");
    f.cluster.etcdctl(&["put", "/sgctl/v1/groups/db", &good]);
    let cleared = wait_until(Duration::from_secs(10), || {
        sg_tests::fleet::status(&f.cluster, "db1").is_some_and(|s| s["error"].is_null())
    });
    assert!(cleared.is_some(), "the error stays: {:?}", sg_tests::fleet::status(&f.cluster, "db1"));

    // `fleet status`: the nine alive and enforcing, the joiner (killed) not alive.
    let out = f.store.sgctl(&["fleet", "status", "--json", "--etcd", &f.urls]);
    assert!(out.status.success(), "fleet status: {}", String::from_utf8_lossy(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = |n: &str| st["hosts"].as_array().unwrap().iter().find(|h| h["host"] == n).cloned().unwrap();
    for (h, _) in &daemons {
        assert_eq!(host(&h.name)["alive"], true, "{st}");
        let want = if h.name.starts_with("db") { rev3 } else { rev2 };
        assert!(host(&h.name)["status"]["revision"].as_i64() >= Some(want), "{st}");
        assert_eq!(host(&h.name)["interfaces"], serde_json::json!(["eth0"]), "{st}");
    }
    assert_eq!(host(&joiner.name)["alive"], false, "{st}");
    let table = f.store.sgctl(&["fleet", "status", "--etcd", &f.urls]);
    eprintln!("{}", String::from_utf8_lossy(&table.stdout));

    // Idle, the fleet writes nothing (no status echo between hosts): leases renew without
    // revisions.
    let before = store_revision(&f.cluster);
    std::thread::sleep(Duration::from_secs(2));
    let after = store_revision(&f.cluster);
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

#[test]
fn enforcement_holds_through_store_outages_and_a_tracked_flow_loses_nothing() {
    if !require_bpf("enforcement_holds_through_store_outages_and_a_tracked_flow_loses_nothing") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut f = Fleet::new("fleet-outage.toml", DBS, WEBS, LEASE_TTL);
    let db1 = &f.dbs[0].clone();
    let web1 = &f.webs[0].clone();
    let dead = f.webs.last().unwrap().clone();
    let client = f.client.clone();
    // Each host namespace has its own loopback: one metrics port for all.
    const METRICS: u16 = 9947;
    let mut daemons: Vec<(LanHost, Daemon)> =
        f.hosts().map(|h| (h.clone(), f.daemon(h, Some(METRICS)))).collect();
    f.wait_enforcing(&daemons, f.rev, Duration::from_secs(20));
    let log_db1 = |ds: &[(LanHost, Daemon)]| ds[0].1.log();
    let probes: Vec<_> = f.webs.iter().map(|w| (w, db1, DB_PORTS[0])).collect();
    assert!(
        wait_until(Duration::from_secs(10), || connects_all(&probes).iter().all(|&c| c)).is_some(),
        "web hosts not admitted: {:?}\n{}",
        connects_all(&probes),
        log_db1(&daemons)
    );
    let stream = Stream::start(web1, db1, 9000);
    std::thread::sleep(Duration::from_millis(200));

    // One member of three down: updates go on, to every host (both ports change).
    f.cluster.stop_member(0);
    let rev2 = f.put("fleet-outage-2.toml", &policy(DBS, WEBS, DB_PORTS[1], WEB_PORTS[1], None));
    f.wait_enforcing(&daemons, rev2, Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || connects(web1, db1, DB_PORTS[1])).is_some());

    // All down: enforcement stays as it is; a web host dies meanwhile.
    f.cluster.stop_member(1);
    f.cluster.stop_member(2);
    std::thread::sleep(Duration::from_secs(1));
    daemons.pop().unwrap().1.kill9();
    assert_eq!(
        connects_all(&[(web1, db1, DB_PORTS[1]), (&client, db1, DB_PORTS[1]), (web1, db1, DB_PORTS[0])]),
        [true, false, false],
        "enforcement changed while the store was down (web1 in at the new port, the client out, the old port closed)"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        log_db1(&daemons).contains("keeps enforcing"),
        "db1 does not say it lost the store\n{}",
        log_db1(&daemons)
    );
    let m = scrape(db1, METRICS);
    assert_eq!(metric(&m, "sgctl_fleet_connected"), Some(0.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_last_sync_seconds").is_some_and(|s| s >= 1.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_revision").is_some_and(|r| r >= rev2 as f64), "{m}");

    // The store returns: the dead host's lease runs out one TTL after a new leader, every
    // host reconciles.
    let back = Instant::now();
    for i in 0..3 {
        f.cluster.start_member(i);
    }
    f.cluster.wait_healthy(&[0, 1, 2]);
    let out = wait_until(Duration::from_secs(LEASE_TTL * 4 + 15), || !connects(&dead, db1, DB_PORTS[1]));
    assert!(out.is_some(), "{} (dead) still admitted after the outage\n{}", dead.name, log_db1(&daemons));
    eprintln!(
        "store back: dead {} out {:?} after the members restarted (lease TTL {LEASE_TTL} s)",
        dead.name,
        back.elapsed()
    );
    let rev3 = f.put("fleet-outage-3.toml", &policy(DBS, WEBS, DB_PORTS[2], WEB_PORTS[0], None));
    // Every host's rule set changed (both ports): every host reports it.
    f.wait_enforcing(&daemons, rev3, Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || connects(web1, db1, DB_PORTS[2])).is_some());
    let m = scrape(db1, METRICS);
    assert_eq!(metric(&m, "sgctl_fleet_connected"), Some(1.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_last_sync_seconds").is_some_and(|s| s <= 2.0), "{m}");
    assert!(metric(&m, "sgctl_fleet_revision").is_some_and(|r| r >= rev3 as f64), "{m}");

    let (sent, got) = stream.finish();
    let lost = sent as usize - got.len();
    eprintln!("tracked UDP flow web1 -> db1: {sent} datagrams sent, {} received", got.len());
    assert!(sent > 1000, "{sent} datagrams");
    assert_eq!(lost, 0, "the tracked flow lost {lost} of {sent} datagrams");
}

/// A LAN for the TLS tests: the store (a 3-member etcd cluster under TLS with client
/// certificates and roles, `admin` and one per host), db1 and web1, and one host `other` in
/// no group (number 240).
struct TlsLan {
    store: LanHost,
    db1: LanHost,
    web1: LanHost,
    other: LanHost,
    cluster: sg_tests::etcd::EtcdCluster,
    urls: String,
    /// The admin's TLS arguments.
    admin: Vec<String>,
    // Last: the namespaces go after everything in them.
    _lan: sg_tests::lan::Lan,
}

impl TlsLan {
    fn new(other: &str) -> TlsLan {
        let mut lan = sg_tests::lan::Lan::new();
        let store = lan.add_host("store", 250);
        let db1 = lan.add_host("db1", 1);
        let web1 = lan.add_host("web1", 2);
        let other = lan.add_host(other, 240);
        let cluster = sg_tests::etcd::EtcdCluster::start_tls_in(&store.ns, store.addr(false), "root");
        cluster.enable_roles(&["db1", "web1"]);
        let urls = cluster.urls();
        let admin = cluster.tls_args("admin");
        TlsLan { store, db1, web1, other, cluster, urls, admin, _lan: lan }
    }

    /// `fleet put` of `text` as the admin: the revision written, and what it said on stderr.
    fn put(&self, name: &str, text: &str) -> (i64, String) {
        let file = sg_tests::write_temp(name, text);
        let mut args = vec!["fleet", "put", file.to_str().unwrap(), "--etcd", &self.urls, "--json"];
        args.extend(self.admin.iter().map(String::as_str));
        let out = self.store.sgctl(&args);
        assert!(out.status.success(), "admin's fleet put: {}", String::from_utf8_lossy(&out.stderr));
        let rev =
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["revision"].as_i64().unwrap();
        (rev, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The daemon of `h` under TLS with its own certificate and role.
    fn daemon(&self, h: &LanHost) -> Daemon {
        let mut a: Vec<String> =
            ["--etcd", &self.urls, "--host", &h.name, "--metrics", "off", "--lease-ttl", "3"]
                .map(str::to_string)
                .into();
        a.extend(self.cluster.tls_args(&h.name));
        Daemon::start_in(&h.ns, &h.ns, &a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// The daemons over TLS with client certificates, each under its own etcd role (README: a
/// host reads the policy and writes only its member and status keys): they enforce, register
/// and report as without.
#[test]
fn daemons_under_tls_and_their_own_roles_enforce_and_register() {
    if !require_bpf("daemons_under_tls_and_their_own_roles_enforce_and_register") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = TlsLan::new("client");
    let (db1, web1, client, cluster) = (&t.db1, &t.web1, &t.other, &t.cluster);
    assert!(t.urls.starts_with("https://198.51.100.250:"), "{}", t.urls);
    let (rev, _) = t.put("fleet-tls.toml", &policy(1, 1, DB_PORTS[0], WEB_PORTS[0], None));
    let _servers = sg_tests::fleet::Servers::start(&[(db1, &DB_PORTS[..])]);
    let d_db1 = t.daemon(db1);
    let d_web1 = t.daemon(web1);
    for (h, d) in [(db1, &d_db1), (web1, &d_web1)] {
        let ok = wait_until(Duration::from_secs(15), || {
            sg_tests::fleet::status(cluster, &h.name)
                .is_some_and(|s| s["revision"].as_i64() >= Some(rev) && s["error"].is_null())
        });
        assert!(
            ok.is_some(),
            "{} does not report revision {rev} under TLS and its role\n{}",
            h.name,
            d.log()
        );
    }
    let admitted = wait_until(Duration::from_secs(10), || connects(web1, db1, DB_PORTS[0]));
    assert!(admitted.is_some(), "web1 not admitted (its member key under its role)\n{}", d_db1.log());
    assert!(!connects(client, db1, DB_PORTS[0]), "the client is in no group");
    let members = cluster.etcdctl(&["get", "--prefix", "/sgctl/v1/members/", "--keys-only"]);
    assert!(
        members.contains("/sgctl/v1/members/db1/eth0") && members.contains("/sgctl/v1/members/web1/eth0"),
        "{members}"
    );
    for d in [&d_db1, &d_web1] {
        assert!(!d.log().contains("permission denied"), "{}", d.log());
    }
}

/// A host's word about its addresses is bounded by the policy: a compromised web host writes
/// its member key (as its role allows) with its own address and an outside machine's; the
/// database host admits the first and refuses the second, and `fleet status` names the host,
/// the interface and the ignored address. Without `[fleet] member_ranges` (and `fleet put`
/// says so), the outside address is a member, as before.
#[test]
fn a_hosts_word_about_its_addresses_is_bounded_by_the_policy() {
    if !require_bpf("a_hosts_word_about_its_addresses_is_bounded_by_the_policy") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let t = TlsLan::new("outside");
    let (store, db1, web1, outside, cluster) = (&t.store, &t.db1, &t.web1, &t.other, &t.cluster);
    let put = |name: &str, text: &str| t.put(name, text);
    let lan = policy(1, 1, DB_PORTS[0], WEB_PORTS[0], None);
    let open = lan.replacen(MEMBER_RANGES, "", 1);
    let bounded = lan.replacen("198.51.100.0/24\"]", "198.51.100.0/28\"]", 1);
    assert!(
        bounded.starts_with("[fleet]\nmember_ranges = [\"198.51.100.0/28\"]") && !open.contains("[fleet]")
    );
    let (rev, said) = put("fleet-bounded.toml", &bounded);
    assert!(!said.contains("member_ranges"), "a bounded fleet gets no warning: {said}");
    let _servers = sg_tests::fleet::Servers::start(&[(db1, &DB_PORTS[..])]);
    let d_db1 = t.daemon(db1);
    let enforcing = |rev: i64| {
        wait_until(Duration::from_secs(15), || {
            sg_tests::fleet::status(cluster, "db1").is_some_and(|s| s["revision"].as_i64() >= Some(rev))
        })
        .is_some()
    };
    assert!(enforcing(rev), "db1 does not enforce revision {rev}\n{}", d_db1.log());
    // The compromised web1: no daemon, its member key written by hand under its own role.
    let key = "/sgctl/v1/members/web1/eth0";
    let value = r#"{"groups":["web"],"addresses":["198.51.100.2","198.51.100.240"]}"#;
    let out = cluster.etcdctl_as("web1", &["put", key, value]);
    assert!(out.status.success(), "web1 may write its member key: {}", String::from_utf8_lossy(&out.stderr));
    let refused = cluster.etcdctl_as("web1", &["put", "/sgctl/v1/members/db1/eth0", value]);
    assert!(!refused.status.success(), "web1 may not write db1's key");
    let admitted = wait_until(Duration::from_secs(10), || connects(web1, db1, DB_PORTS[0]));
    assert!(admitted.is_some(), "web1's own address is a member\n{}", d_db1.log());
    assert!(!connects(outside, db1, DB_PORTS[0]), "the outside address web1 registered is ignored");
    let mut status = vec!["fleet", "status", "--etcd", &t.urls];
    status.extend(t.admin.iter().map(String::as_str));
    let out = store.sgctl(&status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "host web1 interface eth0 registered 198.51.100.240, outside the fleet's member_ranges; ignored"
        ),
        "fleet status names the ignored address: {text}"
    );
    assert!(d_db1.log().contains("198.51.100.240"), "the db host says it too: {}", d_db1.log());
    // No ranges: as before, the host's word is taken (and put says the fleet is unbounded).
    let (rev, said) = put("fleet-open.toml", &open);
    assert!(said.contains("no [fleet] member_ranges"), "{said}");
    assert!(enforcing(rev), "db1 does not enforce revision {rev}\n{}", d_db1.log());
    let widened = wait_until(Duration::from_secs(10), || connects(outside, db1, DB_PORTS[0]));
    assert!(widened.is_some(), "without ranges the registered outside address is a member, as before");
}

/// `sgctl fleet learn --json --out OUT ARGS` from the store's namespace, which must succeed:
/// the proposal, and its changes as lines (`+ db ingress tcp 5432 from group web`).
fn fleet_learn(
    store: &LanHost,
    urls: &str,
    out: &std::path::Path,
    args: &[&str],
) -> (serde_json::Value, Vec<String>) {
    let mut a = vec!["fleet", "learn", "--etcd", urls, "--json", "--out", out.to_str().unwrap()];
    a.extend_from_slice(args);
    let run = store.sgctl(&a);
    assert!(
        run.status.success(),
        "fleet learn: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&run.stdout).expect("fleet learn --json");
    let changes = p["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let field =
                |k: &str| c[k].as_str().unwrap_or_else(|| panic!("change without {k}: {c}")).to_string();
            format!("{} {} {} {}", field("change"), field("group"), field("direction"), field("rule"))
        })
        .collect();
    (p, changes)
}

/// Issue 32, fleet: db1 learns (`--learn`, its summary published at `traffic/db1`) while its
/// group allows every TCP port from the LAN; web1 and web2 (their daemons register them in
/// group web) and a client outside every group connect to it. `sgctl fleet learn` proposes
/// `tcp 5432 from group web` (web's registered members, across both web hosts), the client's
/// port by address, and drops the broad rule; the candidate file goes through `fleet put
/// --dry-run`, and put, it keeps every observed exchange working and refuses what was not seen.
#[test]
fn fleet_learn_proposes_group_rules_from_what_the_hosts_saw() {
    if !require_bpf("fleet_learn_proposes_group_rules_from_what_the_hosts_saw") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = format!(
        "{MEMBER_RANGES}[groups.web]\ningress = [ {{ proto = \"tcp\", ports = \"80\", from = \"198.51.100.0/24\" }} ]\n\n\
         [groups.db]\ningress = [ {{ proto = \"tcp\", ports = \"0-65535\", from = \"198.51.100.0/24\" }} ]\n\n\
         [hosts.db1.interfaces.eth0]\ngroups = [\"db\"]\n\n[hosts.web1.interfaces.eth0]\ngroups = [\"web\"]\n\n\
         [hosts.web2.interfaces.eth0]\ngroups = [\"web\"]\n"
    );
    let f = Fleet::with_policy("fleet-learn.toml", 1, 2, LEASE_TTL, &text);
    let db1 = &f.dbs[0];
    let obs = sg_tests::write_temp("db1-observed.json", "");
    std::fs::remove_file(&obs).unwrap();
    let mut daemons: Vec<(LanHost, Daemon)> =
        vec![(db1.clone(), f.daemon_with(db1, None, &["--learn", obs.to_str().unwrap()]))];
    daemons.extend(f.webs.iter().map(|h| (h.clone(), f.daemon(h, None))));
    f.wait_enforcing(&daemons, f.rev, Duration::from_secs(20));

    // The workload: web1 and web2 to 5432, the client to 5433 (three times each).
    let (web1, web2) = (&f.webs[0], &f.webs[1]);
    let work = [(web1, db1, DB_PORTS[0]), (web2, db1, DB_PORTS[0]), (&f.client, db1, DB_PORTS[1])];
    for _ in 0..3 {
        assert_eq!(
            connects_all(&work),
            [true; 3],
            "the broad rule lets the workload in\n{}",
            daemons[0].1.log()
        );
    }
    // db1 saves and publishes its observations every 10 s.
    let key = "/sgctl/v1/traffic/db1";
    let published = wait_until(Duration::from_secs(30), || {
        let v = f.cluster.etcdctl(&["get", key, "--print-value-only"]);
        serde_json::from_str::<serde_json::Value>(v.trim())
            .is_ok_and(|o| o["entries"].as_array().is_some_and(|e| e.len() >= 3))
    });
    assert!(published.is_some(), "db1 did not publish 3 observations at {key}\n{}", daemons[0].1.log());

    let out_file = sg_tests::write_temp("fleet-learned.toml", "");
    let (p, changes) = fleet_learn(&f.store, &f.urls, &out_file, &[]);
    for want in [
        "+ db ingress tcp 5432 from group web".to_string(),
        format!("+ db ingress tcp {} from {}/32", DB_PORTS[1], f.client.addr(false)),
        "- db ingress tcp 0-65535 from 198.51.100.0/24".to_string(),
    ] {
        assert!(changes.contains(&want), "{want} not proposed: {changes:#?}");
    }
    assert!(changes.iter().all(|c| !c.contains(" web ingress")), "web observed nothing: {changes:#?}");
    let check = &p["check"];
    assert!(check["datapath_flows"].as_u64() >= Some(9), "{check}");
    assert_eq!(check["datapath_flows_allowed"], check["datapath_flows"], "{check}");
    assert_eq!(check["audit_errors"], 0, "{check}");
    assert_eq!(p["hosts"], serde_json::json!(["db1"]), "{p}");

    // The candidate: reviewed with a dry run, then put.
    let dry = f.store.sgctl(&["fleet", "put", out_file.to_str().unwrap(), "--etcd", &f.urls, "--dry-run"]);
    assert!(dry.status.success(), "fleet put --dry-run: {}", String::from_utf8_lossy(&dry.stderr));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("groups/db"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    let rev = f.put("fleet-learned-put.toml", &std::fs::read_to_string(&out_file).unwrap());
    // Only db's rules changed: web hosts, whose rule sets stay, report no new revision.
    f.wait_enforcing(&daemons[..1], rev, Duration::from_secs(20));
    assert_eq!(
        connects_all(&work),
        [true; 3],
        "the learned rules keep the workload working\n{}",
        daemons[0].1.log()
    );
    assert_eq!(
        connects_all(&[
            (&f.client, db1, DB_PORTS[0]),
            (web1, db1, DB_PORTS[2]),
            (&f.client2, db1, DB_PORTS[1])
        ]),
        [false; 3],
        "a peer or port never seen is refused"
    );
}

/// A UDP responder on `host`:`port` that answers every datagram with itself (the tier's DNS
/// resolver), until dropped.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(host: &LanHost, port: u16) -> UdpEcho {
        let s = host.run(move || std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind the resolver"));
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho { stop, thread: Some(thread) }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `from` gets an answer from the resolver on `to`:53 (three tries, 300 ms each).
fn resolves(from: &LanHost, to: &LanHost) -> bool {
    let to = SocketAddr::new(to.addr(false), 53);
    from.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 64];
        (0..3).any(|_| s.send_to(b"\x12\x34 query", to).is_ok() && s.recv(&mut buf).is_ok())
    })
}

/// Issue 32, the tier: clients, a web host, a database host, an admin host and a DNS resolver,
/// every group allowing everything in and out, every interface in monitor mode, each daemon
/// learning. A scripted workload (clients to web:80, web to db:5432, admin to web:22 and
/// db:22, web and db to the resolver's UDP 53) runs; `fleet learn --tighten-egress` proposes
/// rules in both directions, none naming an ephemeral port; the candidate put and enforced
/// (monitor off), every scripted exchange still succeeds, DNS included, and a port or a peer
/// never seen is refused.
#[test]
fn a_tier_learned_in_monitor_mode_keeps_its_workload_and_refuses_the_rest() {
    if !require_bpf("a_tier_learned_in_monitor_mode_keeps_its_workload_and_refuses_the_rest") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut lan = sg_tests::lan::Lan::new();
    let store = lan.add_host("store", 250);
    let web = lan.add_host("web1", 1);
    let db = lan.add_host("db1", 2);
    let admin = lan.add_host("admin1", 3);
    let dns = lan.add_host("dns1", 4);
    let client = lan.add_host("client", 240);
    let client2 = lan.add_host("client2", 241);
    let cluster = sg_tests::etcd::EtcdCluster::start_in(3, &store.ns, store.addr(false));
    let urls = cluster.urls();
    let open = "ingress = [\n  { proto = \"tcp\", ports = \"0-65535\", from = \"0.0.0.0/0\" },\n  \
                { proto = \"udp\", ports = \"0-65535\", from = \"0.0.0.0/0\" },\n]\n\
                egress = [\n  { proto = \"tcp\", ports = \"0-65535\", to = \"0.0.0.0/0\" },\n  \
                { proto = \"udp\", ports = \"0-65535\", to = \"0.0.0.0/0\" },\n]\n";
    let mut text = MEMBER_RANGES.to_string();
    for g in ["web", "db", "admin", "dns"] {
        let _ = write!(text, "[groups.{g}]\n{open}\n");
    }
    for (h, g) in [(&web, "web"), (&db, "db"), (&admin, "admin"), (&dns, "dns")] {
        let _ = write!(text, "[hosts.{}.interfaces.eth0]\ngroups = [\"{g}\"]\nmonitor = true\n\n", h.name);
    }
    let rev = sg_tests::fleet::put(&store, &urls, "tier.toml", &text);
    let _servers = sg_tests::fleet::Servers::start(&[(&web, &[80, 22, 8080][..]), (&db, &[5432, 22][..])]);
    let _resolver = UdpEcho::start(&dns, 53);
    let daemons: Vec<(LanHost, Daemon)> = [&web, &db, &admin, &dns]
        .into_iter()
        .map(|h| {
            let obs = sg_tests::write_temp(&format!("{}-observed.json", h.name), "");
            std::fs::remove_file(&obs).unwrap();
            let a = [
                "--etcd",
                &urls,
                "--host",
                &h.name,
                "--metrics",
                "off",
                "--lease-ttl",
                "3",
                "--learn",
                obs.to_str().unwrap(),
            ];
            (h.clone(), Daemon::start_in(&h.ns, &h.ns, &a))
        })
        .collect();
    let enforcing = |hosts: &[(LanHost, Daemon)], rev: i64| {
        wait_until(Duration::from_secs(20), || {
            hosts.iter().all(|(h, _)| {
                sg_tests::fleet::status(&cluster, &h.name)
                    .is_some_and(|s| s["revision"].as_i64() >= Some(rev))
            })
        })
        .is_some()
    };
    assert!(enforcing(&daemons, rev), "the tier does not enforce revision {rev}");

    // The scripted workload: every exchange must succeed, before and after.
    let workload = || -> Vec<(&'static str, bool)> {
        let mut r: Vec<(&'static str, bool)> = [
            ("client -> web:80", &client, &web, 80),
            ("client2 -> web:80", &client2, &web, 80),
            ("web -> db:5432", &web, &db, 5432),
            ("admin -> web:22", &admin, &web, 22),
            ("admin -> db:22", &admin, &db, 22),
        ]
        .into_iter()
        .map(|(what, f, t, p)| (what, connects(f, t, p)))
        .collect();
        r.push(("web -> dns:53 (udp)", resolves(&web, &dns)));
        r.push(("db -> dns:53 (udp)", resolves(&db, &dns)));
        r
    };
    for _ in 0..3 {
        let r = workload();
        assert!(r.iter().all(|(_, ok)| *ok), "the open tier refuses part of its workload: {r:?}");
    }
    let published = wait_until(Duration::from_secs(30), || {
        ["web1", "db1", "dns1", "admin1"].iter().all(|h| {
            let v = cluster.etcdctl(&["get", &format!("/sgctl/v1/traffic/{h}"), "--print-value-only"]);
            serde_json::from_str::<serde_json::Value>(v.trim())
                .is_ok_and(|o| o["entries"].as_array().is_some_and(|e| !e.is_empty()))
        })
    });
    assert!(published.is_some(), "not every host published its observations");

    let out_file = sg_tests::write_temp("tier-learned.toml", "");
    let (p, changes) = fleet_learn(&store, &urls, &out_file, &["--tighten-egress"]);
    let added: Vec<String> =
        changes.iter().filter_map(|c| c.strip_prefix("+ ")).map(str::to_string).collect();
    for want in [
        "web ingress tcp 80 from",
        "web ingress tcp 22 from group admin",
        "db ingress tcp 5432 from group web",
        "db ingress tcp 22 from group admin",
        "dns ingress udp 53 from group web",
        "dns ingress udp 53 from group db",
        "web egress udp 53 to group dns",
        "db egress udp 53 to group dns",
        "web egress tcp 5432 to group db",
    ] {
        assert!(added.iter().any(|a| a.starts_with(want)), "{want}... not proposed: {added:#?}");
    }
    eprintln!("the tier's proposal (+):\n{}", added.join("\n"));
    // No rule names an ephemeral port (the kernel's range starts at 32768).
    for a in &added {
        let ports = a.split_whitespace().nth(3).unwrap_or("");
        let high = ports.split(['-', ',']).filter_map(|p| p.parse::<u32>().ok()).any(|p| p >= 32_768);
        assert!(!high, "a rule names an ephemeral port: {a}");
    }
    assert_eq!(p["check"]["datapath_flows_allowed"], p["check"]["datapath_flows"], "{}", p["check"]);

    // Enforce it: the candidate with monitor mode off, put.
    let candidate = std::fs::read_to_string(&out_file).unwrap();
    assert!(candidate.contains("monitor = true"), "the candidate keeps the host tables: {candidate}");
    let enforced = candidate.replace("monitor = true", "monitor = false");
    let rev = sg_tests::fleet::put(&store, &urls, "tier-enforced.toml", &enforced);
    assert!(enforcing(&daemons, rev), "the tier does not enforce the learned rules (revision {rev})");
    let r = workload();
    assert!(r.iter().all(|(_, ok)| *ok), "the learned rules refuse part of the workload: {r:?}");
    assert_eq!(
        [connects(&client, &web, 8080), connects(&client, &db, 5432), connects(&web, &db, 22)],
        [false; 3],
        "a port or a peer never seen is refused"
    );
    drop(daemons);
}
