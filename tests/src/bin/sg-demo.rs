//! `cargo xtask demo`: sgctl on a pair of network namespaces, with real sockets.
//!
//! Creates two namespaces joined by a veth pair (192.0.2.0/24, 2001:db8::/64), applies a
//! built-in security group to the "server" side (TCP 7000 from the client's subnet), shows
//! allowed TCP and dropped UDP with real sockets, the counters, per-rule hits and `explain`,
//! adds a rule at runtime, exports the groups as AWS JSON, lets `sgctl daemon` apply an edit of
//! the file and shows its flow log, detaches and tears everything down.
//!
//! `sg-demo fleet` (`cargo xtask demo fleet`): three hosts and a 3-member etcd cluster on a LAN
//! of namespaces; one policy put in etcd; a group reference that follows a host joining and
//! leaving.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sg_tests::netns::{NetnsPair, Side, run_in_ns};

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn show(out: &str) {
    for line in out.lines() {
        println!("    {line}");
    }
}

/// Serves TCP echo and UDP echo on A:7000 for `secs` seconds (bounded).
fn servers(pair: &NetnsPair, secs: u64) -> std::thread::JoinHandle<()> {
    let addr = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let ns = pair.ns_a.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        run_in_ns(&ns, move || {
            let tcp = TcpListener::bind(addr).expect("bind tcp");
            let udp = UdpSocket::bind(addr).expect("bind udp");
            tcp.set_nonblocking(true).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                if let Ok((mut s, _)) = tcp.accept() {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    if let Ok(n) = s.read(&mut buf) {
                        let _ = s.write_all(&buf[..n]);
                    }
                }
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("servers ready");
    h
}

fn tcp_echo(pair: &NetnsPair, msg: &'static str) -> String {
    let addr = SocketAddr::new(pair.addr(Side::A, false), 7000);
    pair.run(Side::B, move || {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) {
            Ok(s) => s,
            Err(e) => return format!("TCP connect to {addr} FAILED: {e}"),
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        match s.read_exact(&mut buf) {
            Ok(()) => format!("TCP to {addr}: sent {msg:?}, got back {:?}", String::from_utf8_lossy(&buf)),
            Err(e) => format!("TCP to {addr}: no echo: {e}"),
        }
    })
}

fn udp_echo(pair: &NetnsPair, msg: &'static str) -> String {
    let addr = SocketAddr::new(pair.addr(Side::A, false), 7000);
    let local = SocketAddr::new(pair.addr(Side::B, false), 0);
    pair.run(Side::B, move || {
        let s = UdpSocket::bind(local).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        s.send_to(msg.as_bytes(), addr).unwrap();
        let mut buf = [0u8; 256];
        match s.recv_from(&mut buf) {
            Ok((n, _)) => {
                format!("UDP to {addr}: sent {msg:?}, got back {:?}", String::from_utf8_lossy(&buf[..n]))
            }
            Err(e) => format!("UDP to {addr}: no answer: {e}"),
        }
    })
}

fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        None => demo(),
        Some("fleet") => fleet_demo(),
        Some(other) => Err(format!("unknown demo {other:?} (none, or fleet)")),
    };
    if let Err(e) = result {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

/// The built-in example: the server allows TCP 7000 from the client's subnet, nothing else in.
fn example_rules(iface: &str) -> String {
    format!(
        r#"[groups.echo]
description = "echo service"
ingress = [
  {{ proto = "tcp", ports = "7000", from = "192.0.2.0/24", description = "echo over TCP" }},
  {{ proto = "tcp", ports = "22", from = "203.0.113.7/32", description = "admin" }},
]
# egress omitted: allow all (AWS default)

[interfaces.{iface}]
groups = ["echo"]
"#
    )
}

fn demo() -> Result<(), String> {
    let missing = sg_tests::missing_privileges();
    if !missing.is_empty() {
        return Err(format!("the demo needs {}", missing.join(", ")));
    }
    println!("sgctl demo: AWS-style security groups enforced by XDP (ingress) and TC (egress)");
    step(1, "Creating two network namespaces joined by a veth pair");
    let pair = NetnsPair::new();
    println!("    server: namespace {} interface {} address {}", pair.ns_a, pair.if_a, pair.v4_a);
    println!("    client: namespace {} interface {} address {}", pair.ns_b, pair.if_b, pair.v4_b);
    let server = servers(&pair, 40);

    step(2, "Before sgctl: the client reaches the server's echo service (TCP and UDP, port 7000)");
    println!("    {}", tcp_echo(&pair, "hello"));
    println!("    {}", udp_echo(&pair, "ping"));

    let rules = example_rules(&pair.if_a);
    let dir = std::env::temp_dir().join(format!("sg-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("rules.toml");
    std::fs::write(&file, &rules).map_err(|e| e.to_string())?;
    let file_s = file.to_string_lossy().into_owned();
    step(3, "The built-in rules file: TCP 7000 allowed from 192.0.2.0/24, nothing else in");
    show(&rules);

    step(4, "sgctl apply --dry-run: what would change");
    show(&pair.sgctl_ok(Side::A, &["apply", "--dry-run", &file_s]));
    step(5, "sgctl apply: attaches the interface with the policy already in place");
    show(&pair.sgctl_ok(Side::A, &["apply", &file_s]));

    step(6, "TCP 7000 is allowed by the rule; UDP 7000 is dropped by XDP (no rule allows it)");
    let tcp = tcp_echo(&pair, "hello");
    let udp = udp_echo(&pair, "ping");
    println!("    {tcp}");
    println!("    {udp}");
    if !tcp.contains("got back") || udp.contains("got back") {
        return Err("the example policy did not behave as described".into());
    }
    show(&pair.sgctl_ok(Side::A, &["status"]));
    println!("    Hits per rule:");
    show(&pair.sgctl_ok(Side::A, &["stats"]));

    println!(
        "    Tracked flows (the echo's replies leave as ct_reply: tracked, not re-checked against egress rules):"
    );
    show(&pair.sgctl_ok(Side::A, &["conntrack", "list"]));

    step(7, "Why was UDP dropped? sgctl explain asks the reference model");
    show(&pair.sgctl_ok(
        Side::A,
        &[
            "explain",
            "--iface",
            &pair.if_a,
            "--dir",
            "ingress",
            "--proto",
            "udp",
            "--src",
            "192.0.2.2",
            "--dst",
            "192.0.2.1",
            "--dport",
            "7000",
        ],
    ));

    step(8, "sgctl rule add: allow UDP 7000 at runtime (new generation, one flip, same programs)");
    show(&pair.sgctl_ok(
        Side::A,
        &[
            "rule",
            "add",
            "echo",
            "ingress",
            "--proto",
            "udp",
            "--ports",
            "7000",
            "--cidr",
            "192.0.2.0/24",
            "--file",
            &file_s,
        ],
    ));
    let udp = udp_echo(&pair, "ping again");
    println!("    {udp}");
    if !udp.contains("got back") {
        return Err("UDP still dropped after the rule was added".into());
    }
    show(&pair.sgctl_ok(Side::A, &["stats"]));

    step(9, "The applied groups as AWS describe-security-groups JSON (sgctl export aws)");
    show(&pair.sgctl_ok(Side::A, &["export", "aws"]));

    step(10, "sgctl daemon: it keeps the interface equal to the file; an edit is applied at once");
    let flows = dir.join("flows.jsonl");
    let mut daemon = sg_tests::daemon::Daemon::start(
        &pair,
        "demo",
        &[
            "--config",
            &file_s,
            "--flow-log",
            &flows.display().to_string(),
            "--metrics",
            "off",
            "--poll",
            "0.1",
        ],
    );
    let seq = || pair.status_json()["interfaces"][0]["policy_seq"].as_u64();
    let before = seq();
    sg_tests::wait_until(Duration::from_secs(10), || daemon.log().contains("running"))
        .ok_or_else(|| format!("the daemon did not start: {}", daemon.log()))?;
    // Remove the UDP rule `rule add` wrote to the file.
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    let edited: String = text.lines().filter(|l| !l.contains("\"udp\"")).flat_map(|l| [l, "\n"]).collect();
    std::fs::write(&file, edited).map_err(|e| e.to_string())?;
    let took = sg_tests::wait_until(Duration::from_secs(5), || seq() > before)
        .ok_or_else(|| format!("the edit was not applied: {}", daemon.log()))?;
    println!("    edit applied {} ms after it was saved", took.as_millis());
    let udp = udp_echo(&pair, "ping after the edit");
    println!("    {udp}");
    if udp.contains("got back") {
        return Err("UDP still passes after the daemon applied the edit".into());
    }
    println!("    $ sgctl flows   (the daemon's flow log)");
    sg_tests::wait_until(Duration::from_secs(3), || {
        std::fs::read_to_string(&flows).unwrap_or_default().contains("\"reject\"")
    });
    show(&pair.sgctl_ok(Side::A, &["flows"]));
    if !daemon.term().success() {
        return Err(format!("the daemon did not exit cleanly: {}", daemon.log()));
    }
    println!("    daemon stopped (SIGTERM); enforcement stays in place:");
    show(daemon.log().lines().last().unwrap_or_default());

    step(11, &format!("sgctl detach {}: links, programs and maps removed", pair.if_a));
    show(&pair.sgctl_ok(Side::A, &["detach", &pair.if_a]));
    show(&pair.sgctl_ok(Side::A, &["status"]));
    drop(server);

    step(12, "Tearing down the namespaces");
    drop(pair);
    let _ = std::fs::remove_dir_all(&dir);
    println!("    done: nothing of the demo is left on this machine");
    Ok(())
}

/// `cargo xtask demo fleet`: db1, web1 and web2, each its own namespace and `sgctl daemon
/// --etcd`, a client in no group, and a 3-member etcd cluster in its own namespace. The db
/// group admits TCP 5432 `from_group = "web"`: web2 gets in when its daemon starts and is out
/// one lease after it dies.
fn fleet_demo() -> Result<(), String> {
    use sg_tests::fleet::{DB_PORTS, Fleet, connects, policy};
    let missing = sg_tests::missing_privileges();
    if !missing.is_empty() {
        return Err(format!("the demo needs {}", missing.join(", ")));
    }
    const TTL: u64 = 3;
    println!(
        "sgctl fleet demo: one policy in etcd, enforced by three hosts; group membership follows the hosts"
    );
    step(
        1,
        "A LAN of namespaces (198.51.100.0/24): etcd (3 members) on .250, db1 .1, web1 .2, web2 .3, a client .240",
    );
    let f = Fleet::new("demo-fleet.toml", 1, 2, TTL);
    let (db1, web1, web2, client) = (&f.dbs[0], &f.webs[0], &f.webs[1], &f.client);
    step(2, "The policy, written with `sgctl fleet put` (one etcd transaction):");
    show(&policy(1, 2, DB_PORTS[0], sg_tests::fleet::WEB_PORTS[0], None));

    step(3, &format!("sgctl daemon --etcd ... --host NAME on db1 and web1 (lease {TTL} s)"));
    let d_db1 = f.daemon(db1, None);
    let d_web1 = f.daemon(web1, None);
    sg_tests::wait_until(Duration::from_secs(20), || f.enforces("db1", f.rev) && f.enforces("web1", f.rev))
        .ok_or_else(|| format!("the daemons do not enforce the policy:\n{}\n{}", d_db1.log(), d_web1.log()))?;
    let probe =
        |from: &sg_tests::lan::LanHost| if connects(from, db1, DB_PORTS[0]) { "connects" } else { "dropped" };
    sg_tests::wait_until(Duration::from_secs(10), || connects(web1, db1, DB_PORTS[0]))
        .ok_or("web1 is not admitted by db1")?;
    println!("    web1   -> db1:5432  {}   (web1 registered itself in group web)", probe(web1));
    println!("    web2   -> db1:5432  {}    (no daemon: not in group web)", probe(web2));
    println!("    client -> db1:5432  {}    (in no group)", probe(client));

    step(4, "web2's daemon starts: it registers its address in group web under its lease");
    let mut d_web2 = f.daemon(web2, None);
    let t = Instant::now();
    sg_tests::wait_until(Duration::from_secs(10), || connects(web2, db1, DB_PORTS[0]))
        .ok_or_else(|| format!("web2 never admitted:\n{}", d_web2.log()))?;
    println!("    web2   -> db1:5432  connects, {} ms after its daemon started", t.elapsed().as_millis());
    sg_tests::wait_until(Duration::from_secs(10), || f.enforces("web2", f.rev));
    show(&String::from_utf8_lossy(&f.store.sgctl(&["fleet", "status", "--etcd", &f.urls]).stdout));

    step(5, "web2 dies (kill -9): its lease runs out and db1 drops it from group web");
    d_web2.kill9();
    let t = Instant::now();
    sg_tests::wait_until(Duration::from_secs(TTL * 4 + 5), || !connects(web2, db1, DB_PORTS[0]))
        .ok_or("web2 still admitted after its lease")?;
    println!(
        "    web2   -> db1:5432  dropped, {:.1} s after it died (lease {TTL} s)",
        t.elapsed().as_secs_f64()
    );
    println!("    web1   -> db1:5432  {}", probe(web1));
    show(&String::from_utf8_lossy(&f.store.sgctl(&["fleet", "status", "--etcd", &f.urls]).stdout));

    step(6, "Tearing down: daemons, etcd, namespaces");
    drop((d_db1, d_web1, d_web2));
    drop(f);
    println!("    done: nothing of the demo is left on this machine");
    Ok(())
}
