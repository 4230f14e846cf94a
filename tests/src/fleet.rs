//! A fleet on a LAN, for the fleet daemon tests, the fleet benchmark and the demo: a real
//! 3-member etcd cluster in the `store` namespace (198.51.100.250) and hosts on the same
//! subnet, each its own namespace, interface and `sgctl daemon --etcd`. Every daemon's
//! connection to the store crosses the interface it enforces.
//!
//! The policy is [`policy`]: group `web` (TCP `web_port` from the subnet), group `db` (UDP
//! 9000 and TCP `db_port` from group `web`), db hosts `db1..`, web hosts `web1..`.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    daemon::Daemon,
    etcd::EtcdCluster,
    lan::{Lan, LanHost},
    wait_until, write_temp,
};

/// Ports the db hosts listen on (TCP), and the web hosts.
pub const DB_PORTS: [u16; 3] = [5432, 5433, 5434];
pub const WEB_PORTS: [u16; 2] = [80, 8080];

/// The bounds of every fleet here: the LAN's range (`[fleet] member_ranges`).
pub const MEMBER_RANGES: &str = "[fleet]\nmember_ranges = [\"198.51.100.0/24\"]\n\n";

/// The policy text: `dbs` db hosts and `webs` web hosts, registrations bounded to the LAN's
/// range; `db_egress = Some("[]")` replaces the db group's default egress.
pub fn policy(dbs: usize, webs: usize, db_port: u16, web_port: u16, db_egress: Option<&str>) -> String {
    let mut s = format!(
        "{MEMBER_RANGES}[groups.web]\ningress = [ {{ proto = \"tcp\", ports = \"{web_port}\", from = \"198.51.100.0/24\" }} ]\n\n\
         [groups.db]\ningress = [\n  {{ proto = \"udp\", ports = \"9000\", from_group = \"web\" }},\n  \
         {{ proto = \"tcp\", ports = \"{db_port}\", from_group = \"web\" }},\n]\n"
    );
    if let Some(e) = db_egress {
        let _ = writeln!(s, "egress = {e}");
    }
    for i in 1..=dbs {
        let _ = write!(s, "\n[hosts.db{i}.interfaces.eth0]\ngroups = [\"db\"]\n");
    }
    for i in 1..=webs {
        let _ = write!(s, "\n[hosts.web{i}.interfaces.eth0]\ngroups = [\"web\"]\n");
    }
    s
}

/// Listeners on ports in hosts' namespaces that accept and close every connection (so the
/// backlog never fills), until dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    pub fn start(on: &[(&LanHost, &[u16])]) -> Servers {
        let mut ls: Vec<TcpListener> = Vec::new();
        for (host, ports) in on {
            for &p in *ports {
                ls.push(host.run(move || {
                    let l = TcpListener::bind(("0.0.0.0", p)).expect("listen");
                    l.set_nonblocking(true).expect("nonblocking");
                    l
                }));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
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
pub fn connects(from: &LanHost, to: &LanHost, port: u16) -> bool {
    let addr = SocketAddr::new(to.addr(false), port);
    from.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(400)).is_ok())
}

/// [`connects`] for every (from, to, port), in parallel.
pub fn connects_all(probes: &[(&LanHost, &LanHost, u16)]) -> Vec<bool> {
    std::thread::scope(|s| {
        let hs: Vec<_> = probes.iter().map(|&(f, t, p)| s.spawn(move || connects(f, t, p))).collect();
        hs.into_iter().map(|h| h.join().expect("probe thread")).collect()
    })
}

/// `status/<host>` as JSON, if there is one.
pub fn status(cluster: &EtcdCluster, host: &str) -> Option<serde_json::Value> {
    let v = cluster.etcdctl(&["get", &format!("/sgctl/v1/status/{host}"), "--print-value-only"]);
    serde_json::from_str(v.trim()).ok()
}

/// The revision of the store now.
pub fn store_revision(cluster: &EtcdCluster) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&cluster.etcdctl(&["endpoint", "status", "-w", "json"]))
        .expect("endpoint status");
    v[0]["Status"]["header"]["revision"].as_i64().expect("revision")
}

/// `sgctl fleet put` of `text` from the store's namespace: the revision written.
pub fn put(store: &LanHost, urls: &str, name: &str, text: &str) -> i64 {
    let file = write_temp(name, text);
    let out = store.sgctl(&["fleet", "put", file.to_str().unwrap(), "--etcd", urls, "--json"]);
    assert!(out.status.success(), "fleet put: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["revision"].as_i64().expect("a revision was written")
}

/// The LAN: the store, db hosts `db1..`, web hosts `web1..`, two clients in no group, the policy
/// put, and TCP servers on [`DB_PORTS`] (db hosts) and [`WEB_PORTS`] (web hosts).
pub struct Fleet {
    pub store: LanHost,
    pub dbs: Vec<LanHost>,
    pub webs: Vec<LanHost>,
    pub client: LanHost,
    pub client2: LanHost,
    pub cluster: EtcdCluster,
    pub urls: String,
    /// The revision of the first put.
    pub rev: i64,
    pub lease_ttl: u64,
    _servers: Servers,
    // Last: the namespaces go after everything in them.
    _lan: Lan,
}

impl Fleet {
    /// `name` names the policy file; `lease_ttl` is the daemons' `--lease-ttl`.
    pub fn new(name: &str, dbs: usize, webs: usize, lease_ttl: u64) -> Fleet {
        Fleet::with_policy(name, dbs, webs, lease_ttl, &policy(dbs, webs, DB_PORTS[0], WEB_PORTS[0], None))
    }

    /// [`Fleet::new`] with another first policy.
    pub fn with_policy(name: &str, dbs: usize, webs: usize, lease_ttl: u64, text: &str) -> Fleet {
        assert!(dbs + webs < 200, "host numbers");
        let mut lan = Lan::new();
        let store = lan.add_host("store", 250);
        let dbs: Vec<LanHost> = (1..=dbs).map(|i| lan.add_host(&format!("db{i}"), i as u8)).collect();
        let webs: Vec<LanHost> =
            (1..=webs).map(|i| lan.add_host(&format!("web{i}"), (dbs.len() + i) as u8)).collect();
        let client = lan.add_host("client", 240);
        let client2 = lan.add_host("client2", 241);
        let cluster = EtcdCluster::start_in(3, &store.ns, store.addr(false));
        let urls = cluster.urls();
        let rev = put(&store, &urls, name, text);
        let mut on: Vec<(&LanHost, &[u16])> = dbs.iter().map(|h| (h, &DB_PORTS[..])).collect();
        on.extend(webs.iter().map(|h| (h, &WEB_PORTS[..])));
        let servers = Servers::start(&on);
        Fleet {
            store,
            dbs,
            webs,
            client,
            client2,
            cluster,
            urls,
            rev,
            lease_ttl,
            _servers: servers,
            _lan: lan,
        }
    }

    /// Every host with a daemon role: db hosts, then web hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &LanHost> {
        self.dbs.iter().chain(&self.webs)
    }

    /// `sgctl daemon --etcd URLS --host NAME --lease-ttl T` in `host`'s namespace, with
    /// metrics on 127.0.0.1:`metrics` there (each namespace has its own loopback) or off.
    pub fn daemon(&self, host: &LanHost, metrics: Option<u16>) -> Daemon {
        self.daemon_with(host, metrics, &[])
    }

    /// [`Fleet::daemon`] with more arguments (`--learn FILE`, ...).
    pub fn daemon_with(&self, host: &LanHost, metrics: Option<u16>, extra: &[&str]) -> Daemon {
        let ttl = self.lease_ttl.to_string();
        let m = metrics.map_or_else(|| "off".to_string(), |p| format!("127.0.0.1:{p}"));
        let mut a = vec!["--etcd", &self.urls, "--host", &host.name, "--metrics", &m, "--lease-ttl", &ttl];
        a.extend_from_slice(extra);
        Daemon::start_in(&host.ns, &host.ns, &a)
    }

    /// `sgctl fleet put` of `text`: the revision written.
    pub fn put(&self, name: &str, text: &str) -> i64 {
        put(&self.store, &self.urls, name, text)
    }

    /// Whether `host` reports enforcing revision `rev` or later, without error.
    pub fn enforces(&self, host: &str, rev: i64) -> bool {
        status(&self.cluster, host)
            .is_some_and(|s| s["revision"].as_i64() >= Some(rev) && s["error"].is_null())
    }

    /// Waits (`limit` at most) until every one of `hosts` enforces `rev`; panics with the
    /// statuses and the logs of the hosts that do not.
    pub fn wait_enforcing(&self, hosts: &[(LanHost, Daemon)], rev: i64, limit: Duration) {
        let ok = wait_until(limit, || hosts.iter().all(|(h, _)| self.enforces(&h.name, rev)));
        if ok.is_none() {
            let mut msg = String::new();
            for (h, d) in hosts.iter().filter(|(h, _)| !self.enforces(&h.name, rev)) {
                let _ = write!(
                    msg,
                    "\n{} does not enforce revision {rev}: {:?}\n{}",
                    h.name,
                    status(&self.cluster, &h.name),
                    d.log()
                );
            }
            panic!("{msg}");
        }
    }
}
