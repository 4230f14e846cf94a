//! New TCP connections per second through the veth pair (the number firewall vendors
//! publish): clients in namespace B open connections to a server in A on TCP
//! [`ALLOWED_PORT`] (allowed by the receiver's policy), each a full handshake and close, as
//! fast as they can for one run. Receivers on A: no filter, nftables with conntrack (the
//! policy through `sgctl export nft`), sgctl generic (what `--mode auto` picks on a veth) and
//! native; interleaved round by round.
//!
//! The server closes first, so the server holds the TIME_WAIT sockets and the clients' ports
//! come free at once (B's port range is widened to 1024-65535; A's conntrack keeps TIME_WAIT
//! entries 10 s). Every run is bounded in time; a connection that does not complete within
//! 1 s counts as failed.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    Bench,
    rulegen::ALLOWED_PORT,
    tools,
    traffic::{self, Receiver},
};
use sg_tests::netns::{NetnsPair, spawn_in_ns};

const SECTION: &str = "connrate";
/// Client threads in B.
const CLIENTS: usize = 2;

/// Receivers measured, in the order of each round.
pub const RECEIVERS: [Receiver; 4] =
    [Receiver::None, Receiver::Nftables, Receiver::SgctlGeneric, Receiver::SgctlNative];

/// One run of `dur`: (completed connections per second, failed connections).
fn one(pair: &NetnsPair, dur: Duration) -> Result<(f64, u64)> {
    let addr = SocketAddr::new(pair.addr(sg_tests::netns::Side::A, false), ALLOWED_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    let listener = spawn_in_ns(&pair.ns_a, move || TcpListener::bind(addr))
        .join()
        .map_err(|_| anyhow::anyhow!("bind thread panicked"))?
        .context("bind the server")?;
    listener.set_nonblocking(true)?;
    let s = stop.clone();
    // Accepts and closes at once (the server closes first).
    let server = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            spawn_in_ns(&pair.ns_b, move || {
                let mut buf = [0u8; 16];
                while t0.elapsed() < dur {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(mut c) => {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                            // The server's close: the connection is complete.
                            match c.read(&mut buf) {
                                Ok(0) => done.fetch_add(1, Ordering::Relaxed),
                                _ => failed.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    Ok((done.load(Ordering::Relaxed) as f64 / secs, failed.load(Ordering::Relaxed)))
}

pub fn run(b: &mut Bench) {
    let pair = match traffic::fixture() {
        Ok(p) => p,
        Err(e) => return b.fail(format!("connrate fixture: {e:#}")),
    };
    // B's ports: the whole range. A's conntrack (nftables): TIME_WAIT entries for 10 s, not
    // 120 s, so that the rounds' entries do not pile up to nf_conntrack_max (262,144, for
    // the whole machine) and make nftables drop new connections for want of room.
    for (ns, setting) in [
        (&pair.ns_b, "net.ipv4.ip_local_port_range=1024 65535"),
        (&pair.ns_a, "net.netfilter.nf_conntrack_tcp_timeout_time_wait=10"),
    ] {
        if let Err(e) = tools::in_ns_ok(ns, 10, "sysctl", &["-q", "-w", setting]) {
            return b.fail(format!("connrate: {setting}: {e:#}"));
        }
    }
    for rep in 0..b.opts.reps {
        for r in RECEIVERS {
            let guard = match traffic::setup(&pair, r) {
                Ok(g) => g,
                Err(e) => {
                    b.fail(format!("connrate {}: {e:#}", r.name()));
                    continue;
                }
            };
            b.progress(SECTION, &format!("{} #{}", r.name(), rep + 1));
            match one(&pair, b.opts.run) {
                Ok((rate, failed)) => {
                    let labels = |m: &str| {
                        vec![
                            ("receiver", r.name().to_string()),
                            ("measure", m.to_string()),
                            ("rep", rep.to_string()),
                        ]
                    };
                    b.record(SECTION, labels("conn_per_s"), rate, "conn/s");
                    b.record(SECTION, labels("failed"), failed as f64, "count");
                }
                Err(e) => b.fail(format!("connrate {}: {e:#}", r.name())),
            }
            traffic::teardown(&pair, r, guard);
        }
    }
}
