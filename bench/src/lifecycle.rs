//! The life of an instance: how long an upgrade takes per interface and what it loses, and
//! how long enabling sgctl on a host with connections takes to adopt them.
//!
//! - Upgrade: `sgctl upgrade --force` (the release binary, process start included; the same
//!   layout: the programs are loaded, verified and swapped behind the links, every map reused)
//!   on an interface enforcing a rule set, repeated, while numbered UDP datagrams are echoed
//!   through it and a flood goes to a denied port: the wall time of each upgrade, the time the
//!   upgrade itself reports, the datagrams lost (goal 0) and the denied datagrams that arrived
//!   (goal 0).
//! - Adoption: N TCP connections from A to B exist, then `sgctl attach` (egress allow) enables
//!   sgctl on A: the time the adoption took (both passes), and how many were adopted.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Bench, rulegen, traffic};
use sg_tests::{
    netns::{NetnsPair, Side},
    probes::{Flood, UdpEcho},
};

fn upgrades(b: &mut Bench, n: usize) -> Result<()> {
    let pair = traffic::fixture()?;
    let file = sg_tests::write_temp("bench-lifecycle.toml", &traffic::policy(&pair.if_a));
    pair.sgctl_ok(Side::A, &["apply", &file.display().to_string()]);
    let a = |port| SocketAddr::new(pair.v4_a.into(), port);
    let udp = UdpEcho::start(&pair.ns_a, a(rulegen::ALLOWED_PORT), &pair.ns_b, 5);
    let flood = Flood::start(&pair.ns_a, a(rulegen::DENIED_PORT), &pair.ns_b, 2);
    std::thread::sleep(Duration::from_millis(200));
    for rep in 0..n {
        let t = Instant::now();
        let out = pair.sgctl_ok(Side::A, &["upgrade", &pair.if_a, "--force", "--json"]);
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let r: serde_json::Value = serde_json::from_str(out.trim()).context("upgrade --json")?;
        let labels = |m: &str| vec![("measure", m.to_string()), ("rep", rep.to_string())];
        b.record("lifecycle", labels("upgrade_wall_ms"), wall, "ms");
        b.record("lifecycle", labels("upgrade_ms"), r["millis"].as_f64().unwrap_or(f64::NAN), "ms");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (u, (sent, arrived)) = (udp.finish(), flood.finish());
    let labels = |m: &str| vec![("measure", m.to_string()), ("rep", "0".to_string())];
    b.record("lifecycle", labels("upgrade_flow_sent"), u.sent as f64, "packets");
    b.record("lifecycle", labels("upgrade_flow_lost"), u.lost() as f64, "packets");
    b.record("lifecycle", labels("upgrade_denied_sent"), sent as f64, "packets");
    b.record("lifecycle", labels("upgrade_denied_passed"), arrived as f64, "packets");
    Ok(())
}

fn adoption(b: &mut Bench, conns: usize) -> Result<()> {
    let pair = NetnsPair::new();
    let server = SocketAddr::new(pair.v4_b.into(), 9000);
    let listener = pair.run(Side::B, move || TcpListener::bind(server))?;
    let acceptor = std::thread::spawn(move || -> Vec<TcpStream> {
        listener.set_nonblocking(true).ok();
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_mins(1);
        while held.len() < conns && Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        held
    });
    let clients = pair.run(Side::A, move || -> Result<Vec<TcpStream>> {
        (0..conns)
            .map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(3)).context("connect"))
            .collect()
    })?;
    let served = acceptor.join().map_err(|_| anyhow::anyhow!("acceptor panicked"))?;
    if served.len() != conns {
        bail!("only {} of {conns} connections accepted", served.len());
    }
    let out = pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).context("attach --json")?;
    let adopted = &r["adopted"];
    let labels = |m: &str| vec![("measure", m.to_string()), ("rep", conns.to_string())];
    b.record("lifecycle", labels("adopt_ms"), adopted["micros"].as_f64().unwrap_or(f64::NAN) / 1e3, "ms");
    b.record("lifecycle", labels("adopted"), adopted["adopted"].as_f64().unwrap_or(f64::NAN), "count");
    drop((clients, served));
    Ok(())
}

pub fn run(b: &mut Bench) {
    let n = if b.opts.quick { 2 } else { 10 };
    b.progress("lifecycle", &format!("{n} upgrades under traffic"));
    if let Err(e) = upgrades(b, n) {
        b.fail(format!("lifecycle upgrades: {e:#}"));
    }
    let counts: &[usize] = if b.opts.quick { &[100] } else { &[100, 1_000, 5_000] };
    for &conns in counts {
        b.progress("lifecycle", &format!("enabling on a host with {conns} connections"));
        if let Err(e) = adoption(b, conns) {
            b.fail(format!("lifecycle adoption of {conns}: {e:#}"));
        }
    }
}
