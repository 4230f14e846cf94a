//! Fleet convergence (issue 16), in two parts; nothing here asserts a speed.
//!
//! - `lan`: 10 hosts on a LAN of namespaces, each its own `sgctl daemon --etcd` with its
//!   datapath, and a 3-member etcd cluster in its own namespace (the test fixture
//!   [`sg_tests::fleet::Fleet`]). Every host is in group `web`, whose rule admits `from_group =
//!   "web"`, so a policy change and a membership change both change every host's rule set. A
//!   watcher in the store's namespace times, from just before the write, each host's status
//!   write for that revision: a daemon writes it after the apply (the generation flip), so
//!   this is enforcement plus one etcd write and one watch delivery. Three changes, each
//!   `reps` times: `put` (the port of group web, one transaction), `join` (a member key of a
//!   host in group web written under a lease) and `leave` (that lease revoked: the part of a
//!   host's death after its lease expires).
//! - `sim`: N simulated hosts (N = 10, 100, 1,000) in this process: each is the daemon's own
//!   fleet agent (`sg_userspace::fleet::agent::run`: read, lease, register, watch, status)
//!   with a stand-in for the datapath that records when it would apply. They all start at
//!   once (the join), then a policy change and a membership change are timed; the etcd
//!   cluster's load is read from its members' CPU time and their gRPC byte counters.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use sg_userspace::{
    fleet::{
        Endpoints, PolicyKeys, Schema, Store,
        agent::{self, Addresses, AgentConfig, HostStatus, Update},
        schema,
    },
    rules::{self, AwsContext, Format},
};
use tokio::sync::{Notify, mpsc, watch};

use super::{
    Bench, Sample,
    figures::{fmt, line, matching, med},
    median,
};
use sg_tests::{
    etcd::EtcdCluster,
    fleet::{Fleet, WEB_PORTS, connects},
    lan::LanHost,
};

const SECTION: &str = "fleet";

pub fn run(b: &mut Bench) {
    lan(b);
    sim(b);
}

/// The mesh policy: `hosts` in group web (TCP `port` from group web), plus host `ghost`
/// (never started: the benchmark writes its member key).
fn mesh(hosts: &[String], iface: &str, port: u16) -> String {
    let mut s = format!(
        "[groups.web]\ningress = [ {{ proto = \"tcp\", ports = \"{port}\", from_group = \"web\" }} ]\n"
    );
    for h in hosts.iter().map(String::as_str).chain(["ghost"]) {
        let _ = write!(s, "\n[hosts.{h}.interfaces.{iface}]\ngroups = [\"web\"]\n");
    }
    s
}

fn policy_keys(text: &str) -> PolicyKeys {
    let rs =
        rules::parse_str("bench.toml", text, Format::Toml, &AwsContext::default()).expect("bench policy");
    schema::policy_of_file("bench.toml", text, &rs).expect("bench policy keys")
}

fn p(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits on a watch of the status keys until every host in `hosts` reported a revision >=
/// `rev`; the time of each report after `t0`, or `None` after `limit`.
async fn until_reported(
    stream: &mut etcd_client::WatchStream,
    schema: &Schema,
    seen: &mut BTreeMap<String, i64>,
    hosts: &BTreeSet<String>,
    rev: i64,
    t0: Instant,
    limit: Duration,
) -> Option<Vec<f64>> {
    let mut at: BTreeMap<String, f64> = BTreeMap::new();
    for (h, r) in seen.iter() {
        if *r >= rev && hosts.contains(h) {
            at.insert(h.clone(), 0.0);
        }
    }
    while at.len() < hosts.len() {
        let left = limit.checked_sub(t0.elapsed())?;
        let msg = tokio::time::timeout(left, stream.message()).await.ok()?.ok()??;
        for ev in msg.events() {
            let (Some(kv), EventType::Put) = (ev.kv(), ev.event_type()) else { continue };
            let Some(host) =
                kv.key_str().ok().and_then(|k| schema.rel(k)).and_then(|r| r.strip_prefix("status/"))
            else {
                continue;
            };
            let Ok(st) = serde_json::from_slice::<HostStatus>(kv.value()) else { continue };
            seen.insert(host.to_string(), st.revision);
            if st.revision >= rev && st.error.is_none() && hosts.contains(host) {
                at.entry(host.to_string()).or_insert_with(|| ms(t0.elapsed()));
            }
        }
    }
    Some(at.into_values().collect())
}

fn lan(b: &mut Bench) {
    const HOSTS: usize = 10;
    let reps = if b.opts.quick { 3 } else { 40 };
    b.progress(
        SECTION,
        &format!("lan: {HOSTS} hosts with daemons, 3-member etcd, {reps} changes of each kind"),
    );
    let names: Vec<String> = (1..=HOSTS).map(|i| format!("web{i}")).collect();
    let f = Fleet::with_policy("bench-fleet.toml", 0, HOSTS, 10, &mesh(&names, "eth0", WEB_PORTS[0]));
    let daemons: Vec<(LanHost, sg_tests::daemon::Daemon)> =
        f.hosts().map(|h| (h.clone(), f.daemon(h, None))).collect();
    if sg_tests::wait_until(Duration::from_secs(30), || {
        daemons.iter().all(|(h, _)| f.enforces(&h.name, f.rev))
    })
    .is_none()
    {
        b.fail("fleet lan: the daemons never enforced the first policy");
        return;
    }
    let urls: Vec<String> = f.urls.split(',').map(str::to_string).collect();
    let hosts: BTreeSet<String> = names.iter().cloned().collect();
    let names2 = names.clone();
    // The watcher and the writes run in the store's namespace (the cluster listens there).
    let res = sg_tests::netns::spawn_in_ns(&f.store.ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(lan_changes(urls, names2, hosts, reps))
    })
    .join()
    .expect("watcher thread");
    let times = match res {
        Ok(t) => t,
        Err(e) => {
            b.fail(format!("fleet lan: {e}"));
            return;
        }
    };
    // The last put left WEB_PORTS[reps % 2]: web2 reaches web1 there, not on the other.
    let last = WEB_PORTS[reps % 2];
    let other = WEB_PORTS[(reps + 1) % 2];
    let (w1, w2) = (&f.webs[0], &f.webs[1]);
    if !connects(w2, w1, last) || connects(w2, w1, other) {
        b.fail(format!("fleet lan: web1 does not enforce the last put (port {last})"));
    }
    for (case, runs) in times {
        for (rep, per_host) in runs.iter().enumerate() {
            let all = per_host.iter().copied().fold(0.0, f64::max);
            let labels = |m: &str| {
                vec![
                    ("config", "lan".to_string()),
                    ("hosts", HOSTS.to_string()),
                    ("case", case.to_string()),
                    ("measure", m.to_string()),
                    ("rep", rep.to_string()),
                ]
            };
            b.samples.push(Sample { section: SECTION, labels: labels("all"), value: all, unit: "ms" });
            for &v in per_host {
                b.samples.push(Sample { section: SECTION, labels: labels("host"), value: v, unit: "ms" });
            }
        }
        let alls: Vec<f64> = runs.iter().map(|h| h.iter().copied().fold(0.0, f64::max)).collect();
        b.progress(
            SECTION,
            &format!(
                "lan {case}: all {HOSTS} hosts p50 {:.1} ms, p99 {:.1} ms (max {:.1})",
                median(&alls),
                p(&alls, 0.99),
                p(&alls, 1.0)
            ),
        );
    }
    drop(daemons);
}

/// Per change kind, per repetition, each host's time to report.
type Times = Vec<(&'static str, Vec<Vec<f64>>)>;

async fn lan_changes(
    urls: Vec<String>,
    names: Vec<String>,
    hosts: BTreeSet<String>,
    reps: usize,
) -> Result<Times, String> {
    let schema = Schema::new(sg_userspace::fleet::DEFAULT_PREFIX).map_err(|e| e.to_string())?;
    let ep = Endpoints { urls, timeout: Duration::from_secs(5), tls: None };
    let mut store = Store::connect(&ep, schema.clone()).await.map_err(|e| e.to_string())?;
    let mut client = store.client();
    let (rev0, _) = store.read_all().await.map_err(|e| e.to_string())?;
    let opts = WatchOptions::new().with_prefix().with_start_revision(rev0 + 1);
    let mut stream = client.watch(schema.key("status/"), Some(opts)).await.map_err(|e| e.to_string())?;
    let mut seen = BTreeMap::new();
    let limit = Duration::from_secs(20);
    let (mut puts, mut joins, mut leaves) = (Vec::new(), Vec::new(), Vec::new());
    let member = schema.key(&schema::member_key("ghost", "eth0"));
    let value = r#"{"groups":["web"],"addresses":["198.51.100.200","2001:db8:100::c8"]}"#;
    for rep in 0..reps {
        let keys = policy_keys(&mesh(&names, "eth0", WEB_PORTS[(rep + 1) % 2]));
        let t0 = Instant::now();
        let rev =
            store.put_policy(&keys, false).await.map_err(|e| e.to_string())?.revision.ok_or("no change")?;
        puts.push(
            until_reported(&mut stream, &schema, &mut seen, &hosts, rev, t0, limit)
                .await
                .ok_or("put: not all hosts reported")?,
        );

        let lease = client.lease_grant(30, None).await.map_err(|e| e.to_string())?.id();
        let t0 = Instant::now();
        let r = client
            .put(member.clone(), value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| e.to_string())?;
        let rev = r.header().map_or(0, etcd_client::ResponseHeader::revision);
        joins.push(
            until_reported(&mut stream, &schema, &mut seen, &hosts, rev, t0, limit)
                .await
                .ok_or("join: not all hosts reported")?,
        );

        let t0 = Instant::now();
        let r = client.lease_revoke(lease).await.map_err(|e| e.to_string())?;
        let rev = r.header().map_or(0, etcd_client::ResponseHeader::revision);
        leaves.push(
            until_reported(&mut stream, &schema, &mut seen, &hosts, rev, t0, limit)
                .await
                .ok_or("leave: not all hosts reported")?,
        );
    }
    Ok(vec![("put", puts), ("join", joins), ("leave", leaves)])
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the command (which may hold spaces): state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let (u, s) =
        (f.get(11).and_then(|v| v.parse::<f64>().ok()), f.get(12).and_then(|v| v.parse::<f64>().ok()));
    u.zip(s).map_or(f64::NAN, |(u, s)| (u + s) / ticks)
}

/// Sum over the members of `name`'s samples in their /metrics.
fn etcd_metric(cluster: &EtcdCluster, members: usize, name: &str) -> f64 {
    let mut total = 0.0;
    for i in 0..members {
        let url = cluster.url(i);
        let Some(addr) = url.strip_prefix("http://").and_then(|a| a.parse::<SocketAddr>().ok()) else {
            continue;
        };
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        total += text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// The etcd cluster's load between two points: CPU seconds of its members and gRPC bytes
/// they sent, and this process's CPU seconds (the simulated hosts).
#[derive(Clone, Copy)]
struct Load {
    etcd_cpu: f64,
    sent: f64,
    own_cpu: f64,
}

impl Load {
    fn now(cluster: &EtcdCluster) -> Load {
        Load {
            etcd_cpu: cluster.pids().into_iter().map(cpu_seconds).sum(),
            sent: etcd_metric(cluster, 3, "etcd_network_client_grpc_sent_bytes_total"),
            own_cpu: cpu_seconds(std::process::id()),
        }
    }
}

/// What a simulated host applied: (revision, members of group web, when).
type Applied = Arc<Mutex<Vec<(i64, usize, Instant)>>>;

/// A simulated host: the fleet agent, and a stand-in for the daemon that applies (records the
/// revision and the time) when the host's rule set changes, as the daemon does.
fn sim_host(rt: &tokio::runtime::Runtime, cfg: AgentConfig, applied: Applied) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(None);
    let resync = Arc::new(Notify::new());
    // Ends when the runtime shuts down.
    rt.spawn(agent::run(cfg, tx, status_rx, None, resync));
    rt.spawn(async move {
        let mut last = None;
        let mut n = 0;
        while let Some(u) = rx.recv().await {
            let Update::Policy { revision, rules: Ok(rs), done } = u else { continue };
            let bare = rs.without_locations();
            if last.as_ref() != Some(&bare) {
                n += 1;
                let members = rs.groups.iter().find(|g| g.name == "web").map_or(0, |g| g.members.len());
                applied.lock().expect("applied").push((revision, members, Instant::now()));
                let interfaces = rs.interfaces.iter().map(|b| b.iface.clone()).collect();
                let _ = status_tx.send(Some(HostStatus {
                    revision,
                    rule_set: n,
                    at: 0,
                    error: None,
                    interfaces,
                }));
                last = Some(bare);
            }
            let _ = done.send(false);
        }
    });
}

/// Time after `t0` until every host applied a rule set for which `done(revision, members)`
/// holds (one value per host), or `None` after `limit`.
fn until_applied(
    applied: &[Applied],
    done: impl Fn(i64, usize) -> bool,
    t0: Instant,
    limit: Duration,
) -> Option<Vec<f64>> {
    loop {
        let at: Vec<Option<f64>> = applied
            .iter()
            .map(|a| {
                let a = a.lock().expect("applied");
                a.iter().find(|(r, m, _)| done(*r, *m)).map(|(_, _, t)| ms(t.saturating_duration_since(t0)))
            })
            .collect();
        if at.iter().all(Option::is_some) {
            return Some(at.into_iter().flatten().collect());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sim(b: &mut Bench) {
    let counts: &[usize] = if b.opts.quick { &[10, 50] } else { &[10, 100, 300, 1000] };
    let cluster = EtcdCluster::start(3);
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    for &n in counts {
        b.progress(SECTION, &format!("sim: {n} simulated hosts (fleet agents without datapaths)"));
        if let Err(e) = sim_one(b, &cluster, &urls, n) {
            b.fail(format!("fleet sim {n} hosts: {e}"));
        }
    }
}

fn sim_one(b: &mut Bench, cluster: &EtcdCluster, urls: &[String], n: usize) -> Result<(), String> {
    let prefix = format!("/sgctl/sim{n}/");
    let schema = Schema::new(&prefix).map_err(|e| e.to_string())?;
    let names: Vec<String> = (1..=n).map(|i| format!("sim{i:04}")).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ep = Endpoints { urls: urls.to_vec(), timeout: Duration::from_secs(10), tls: None };
    let write = |keys: PolicyKeys| -> Result<i64, String> {
        let ep = ep.clone();
        let schema = schema.clone();
        rt.block_on(async move {
            let mut store = Store::connect(&ep, schema).await.map_err(|e| e.to_string())?;
            store
                .put_policy(&keys, false)
                .await
                .map_err(|e| e.to_string())?
                .revision
                .ok_or_else(|| "no change".to_string())
        })
    };
    write(policy_keys(&mesh(&names, "sim0", WEB_PORTS[0])))?;
    let limit = Duration::from_secs(if n >= 1000 { 600 } else { 120 });

    // The join: every host at once; each talks to one member (rotated, as a fleet's hosts
    // would be configured).
    let applied: Vec<Applied> = (0..n).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let before = Load::now(cluster);
    let t0 = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let mut urls = urls.to_vec();
        urls.rotate_left(i % 3);
        let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x5, 0, 0, 0, 0, i as u16 + 1));
        let cfg = AgentConfig {
            endpoints: Endpoints { urls, timeout: Duration::from_secs(10), tls: None },
            schema: schema.clone(),
            host: name.clone(),
            lease_ttl: 30,
            addresses: Addresses::Given([("sim0".to_string(), vec![addr])].into()),
        };
        sim_host(&rt, cfg, applied[i].clone());
    }
    // Joined: every host applied a rule set with all n members (its own rule names web).
    let join = until_applied(&applied, |_, m| m >= n, t0, limit).ok_or("not every host saw every member")?;
    let after_join = Load::now(cluster);
    let applies_join: usize = applied.iter().map(|a| a.lock().expect("applied").len()).sum();

    // A policy change, then a membership change (the ghost joins group web).
    let t0 = Instant::now();
    let rev = write(policy_keys(&mesh(&names, "sim0", WEB_PORTS[1])))?;
    let put =
        until_applied(&applied, |r, _| r >= rev, t0, limit).ok_or("the put did not reach every host")?;
    let after_put = Load::now(cluster);
    let t0 = Instant::now();
    let rev = rt.block_on(async {
        let store = Store::connect(&ep, schema.clone()).await.map_err(|e| e.to_string())?;
        let mut c = store.client();
        let v = r#"{"groups":["web"],"addresses":["2001:db8:5::ffff"]}"#;
        let r = c
            .put(schema.key(&schema::member_key("ghost", "sim0")), v, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<i64, String>(r.header().map_or(0, etcd_client::ResponseHeader::revision))
    })?;
    let member = until_applied(&applied, |r, m| r >= rev && m > n, t0, limit)
        .ok_or("the membership change did not reach every host")?;
    let after_member = Load::now(cluster);
    let db_size = rt.block_on(async {
        let store = Store::connect(&ep, schema.clone()).await.ok()?;
        let mut c = store.client();
        let st = c.status().await.ok()?;
        let r = c.get(prefix.clone(), Some(GetOptions::new().with_prefix().with_count_only())).await.ok()?;
        Some((st.db_size(), r.count()))
    });
    rt.shutdown_timeout(Duration::from_secs(5));

    let rec = |b: &mut Bench, m: &str, v: f64, unit: &'static str| {
        b.record(
            SECTION,
            vec![
                ("config", "sim".to_string()),
                ("hosts", n.to_string()),
                ("case", m.split_once(':').map_or(m, |(c, _)| c).to_string()),
                ("measure", m.split_once(':').map_or("", |(_, x)| x).to_string()),
                ("rep", "0".to_string()),
            ],
            v,
            unit,
        );
    };
    for (case, v) in [("join", &join), ("put", &put), ("member", &member)] {
        rec(b, &format!("{case}:p50"), median(v), "ms");
        rec(b, &format!("{case}:p99"), p(v, 0.99), "ms");
        rec(b, &format!("{case}:max"), p(v, 1.0), "ms");
    }
    let d = |a: Load, b: Load| (a.etcd_cpu - b.etcd_cpu, (a.sent - b.sent) / 1e6, a.own_cpu - b.own_cpu);
    for (case, (cpu, mb, own)) in [
        ("join", d(after_join, before)),
        ("put", d(after_put, after_join)),
        ("member", d(after_member, after_put)),
    ] {
        rec(b, &format!("{case}:etcd_cpu"), cpu, "s");
        rec(b, &format!("{case}:etcd_sent"), mb, "MB");
        rec(b, &format!("{case}:hosts_cpu"), own, "s");
    }
    rec(b, "join:applies", applies_join as f64, "count");
    if let Some((size, keys)) = db_size {
        rec(b, "store:db_size", size as f64 / 1e6, "MB");
        rec(b, "store:keys", keys as f64, "count");
    }
    Ok(())
}

/// The LAN's times of change `case` (put, join, leave): `measure` "all" (until every host
/// reported, one per repetition) or "host" (each host's).
fn lan_values(s: &[Sample], case: &str, measure: &str) -> Vec<f64> {
    matching(s, SECTION, &[("config", "lan"), ("case", case), ("measure", measure)])
        .map(|x| x.value)
        .collect()
}

/// The `q` quantile over repetitions of the time until every host of the LAN reported
/// (`case`: put, join, leave); NaN when not measured.
pub fn lan_quantile(s: &[Sample], case: &str, q: f64) -> f64 {
    p(&lan_values(s, case, "all"), q)
}

fn sim_value(s: &[Sample], hosts: &str, case: &str, measure: &str) -> f64 {
    med(s, SECTION, &[("config", "sim"), ("hosts", hosts), ("case", case), ("measure", measure)])
}

fn sim_hosts(s: &[Sample]) -> Vec<String> {
    let mut h: Vec<usize> = s
        .iter()
        .filter(|x| x.section == SECTION && x.label("config") == "sim")
        .filter_map(|x| x.label("hosts").parse().ok())
        .collect();
    h.sort_unstable();
    h.dedup();
    h.into_iter().map(|n| n.to_string()).collect()
}

/// The fleet section of BENCHMARKS.md (empty when the run had none).
pub fn report(s: &[Sample], m: &mut String) {
    if !s.iter().any(|x| x.section == SECTION) {
        return;
    }
    let _ = writeln!(m, "\n## Fleet convergence (etcd)\n");
    let _ = writeln!(
        m,
        "10 hosts, each its own namespace and `sgctl daemon --etcd`, and a 3-member etcd cluster in \
         its own namespace on their LAN. Every host is in group web, whose rule admits \
         `from_group = \"web\"`, so every change below changes every host's rule set. Time from just \
         before the write until each host's status key reports the revision (written after the \
         apply: enforcement plus one etcd write and one watch delivery), over repetitions:\n"
    );
    let _ =
        writeln!(m, "| change | all 10 hosts p50 | p99 | max | one host p50 |\n|---|---:|---:|---:|---:|");
    for (case, label) in [
        ("put", "`fleet put` (one transaction)"),
        ("join", "a member key of group web written (a host joins)"),
        ("leave", "that member's lease revoked (a host's death, after its lease runs out)"),
    ] {
        let host = lan_values(s, case, "host");
        let _ = writeln!(
            m,
            "| {label} | {} ms | {} ms | {} ms | {} ms |",
            fmt(lan_quantile(s, case, 0.5), 1),
            fmt(lan_quantile(s, case, 0.99), 1),
            fmt(lan_quantile(s, case, 1.0), 1),
            fmt(median(&host), 1)
        );
    }
    let hosts = sim_hosts(s);
    if hosts.is_empty() {
        return;
    }
    let _ = writeln!(m, "\n![fleet convergence and etcd load vs hosts](bench/fleet.svg)\n");
    let _ = writeln!(
        m,
        "Simulated hosts: the daemon's fleet agent (read, lease, register, watch, status) in one \
         process per host count, with a stand-in for the datapath that records when it would apply; \
         the same 3-member etcd on 127.0.0.1 (each host talks to one member, rotated). Every host \
         is in group web and its rule names web (the worst case: every membership change concerns \
         every host). `join`: all hosts start at once, until every host applied a rule set holding \
         every member. `put`, `member`: one policy change, one new member, until every host \
         applied it. All of it shares this machine's CPUs: from a few hundred hosts on, the \
         times are those of N hosts' work on two cores (see the load table).\n"
    );
    let _ = writeln!(
        m,
        "| hosts | join p50 / p99 | put p50 / p99 | member p50 / p99 | applies per host during the join | store keys, db size |"
    );
    let _ = writeln!(m, "|---:|---:|---:|---:|---:|---:|");
    for h in &hosts {
        let n: f64 = h.parse().unwrap_or(f64::NAN);
        let q = |c: &str| {
            format!("{} / {} ms", fmt(sim_value(s, h, c, "p50"), 1), fmt(sim_value(s, h, c, "p99"), 1))
        };
        let _ = writeln!(
            m,
            "| {h} | {} | {} | {} | {} | {}, {} MB |",
            q("join"),
            q("put"),
            q("member"),
            fmt(sim_value(s, h, "join", "applies") / n, 1),
            fmt(sim_value(s, h, "store", "keys"), 0),
            fmt(sim_value(s, h, "store", "db_size"), 2)
        );
    }
    let _ = writeln!(
        m,
        "\nLoad per phase: etcd's CPU seconds (3 members) / MB its members sent over gRPC / CPU \
         milliseconds per simulated host (the simulated hosts' CPU time divided by their number: \
         what one real host would spend):\n"
    );
    let _ = writeln!(m, "| hosts | join | put | member |\n|---:|---:|---:|---:|");
    for h in &hosts {
        let n: f64 = h.parse().unwrap_or(f64::NAN);
        let load = |c: &str| {
            format!(
                "{} s / {} MB / {} ms",
                fmt(sim_value(s, h, c, "etcd_cpu"), 2),
                fmt(sim_value(s, h, c, "etcd_sent"), 2),
                fmt(1e3 * sim_value(s, h, c, "hosts_cpu") / n, 2)
            )
        };
        let _ = writeln!(m, "| {h} | {} | {} | {} |", load("join"), load("put"), load("member"));
    }
}

/// bench/fleet.svg: p99 convergence of each change (left) against simulated hosts (log).
pub fn plot(s: &[Sample], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let hosts = sim_hosts(s);
    if hosts.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let series: Vec<(String, Vec<(f64, f64)>)> =
        [("join", "p99"), ("put", "p99"), ("member", "p99"), ("put", "p50")]
            .iter()
            .map(|(c, q)| {
                let pts = hosts
                    .iter()
                    .map(|h| (h.parse::<f64>().unwrap_or(1.0).log10(), sim_value(s, h, c, q)))
                    .filter(|(_, y)| y.is_finite() && *y > 0.0)
                    .map(|(x, y)| (x, y.log10()))
                    .collect();
                (format!("{c} {q}"), pts)
            })
            .collect();
    let xmax = hosts.last().and_then(|h| h.parse::<f64>().ok()).unwrap_or(10.0).log10() + 0.1;
    let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).collect();
    let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min).min(0.0).floor();
    let ymax = ys.iter().copied().fold(1.0, f64::max).ceil() + 0.2;
    let mut chart = ChartBuilder::on(&root)
        .caption("Simulated fleet: time until every host applied, vs hosts", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.9f64..xmax, ymin..ymax)?;
    chart
        .configure_mesh()
        .x_desc("hosts (log)")
        .y_desc("ms (log)")
        .x_label_formatter(&|x| format!("{:.0}", 10f64.powf(*x)))
        .y_label_formatter(&|y| format!("{:.0}", 10f64.powf(*y)))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = line(&mut chart, i, name, pts, 2)?;
        chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))?;
    }
    // The issue's goal for 10 hosts: p99 < 1 s.
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(vec![(0.9, 3.0), (xmax, 3.0)], grey.stroke_width(1)))?
        .label("1 s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
