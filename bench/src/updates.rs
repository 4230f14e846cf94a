//! Updates under load: wall time of `sgctl apply` (the release binary, process start
//! included) of generated rule sets of 1,000 and 10,000 rules on a live interface, each apply
//! a real change (two rule sets alternate); and packets lost from an established UDP flow
//! (numbered datagrams, paced, the receiver answers the first so the flow is established)
//! while 10 applies of 1,000 rules run back to back.

use std::{
    collections::HashSet,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Bench, median, rulegen, traffic};
use sg_tests::netns::{NetnsPair, Side};

/// Datagrams per millisecond of the established flow (20,000 per second).
const PER_MS: u32 = 20;
/// Upper bound of one loss run.
const MAX_RUN: Duration = Duration::from_mins(2);

fn rule_files(pair: &NetnsPair, n: usize) -> [String; 2] {
    [1, 2].map(|seed| {
        let text = rulegen::rules_toml_for(&pair.if_a, n, seed * 1000 + n as u64);
        sg_tests::write_temp(&format!("bench-{n}-{seed}.toml"), &text).display().to_string()
    })
}

fn apply(pair: &NetnsPair, file: &str) -> Duration {
    let t = Instant::now();
    pair.sgctl_ok(Side::A, &["apply", file]);
    t.elapsed()
}

fn timing(b: &mut Bench, pair: &NetnsPair, n: usize) {
    let files = rule_files(pair, n);
    apply(pair, &files[1]);
    let mut ms = Vec::new();
    for i in 0..b.opts.applies {
        let d = apply(pair, &files[i % 2]).as_secs_f64() * 1e3;
        ms.push(d);
        b.record(
            "updates",
            vec![("measure", "apply_ms".to_string()), ("rules", n.to_string()), ("rep", i.to_string())],
            d,
            "ms",
        );
    }
    b.progress("updates", &format!("apply {n} rules: median {:.1} ms", median(&ms)));
}

/// Sends numbered datagrams B -> A while `applies` applies run; returns (sent, received).
fn loss(pair: &NetnsPair, applies: usize) -> Result<(u64, u64)> {
    let files = rule_files(pair, 1_000);
    let server = SocketAddr::new(pair.v4_a.into(), rulegen::ALLOWED_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop_rx = stop.clone();
    let receiver = pair.run_spawn(Side::A, move || -> Result<u64> {
        let sock = UdpSocket::bind(server)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        ready_tx.send(()).ok();
        let mut seen = HashSet::new();
        let mut buf = [0u8; 64];
        let mut answered = false;
        let deadline = Instant::now() + MAX_RUN;
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if n >= 8 => {
                    if !answered {
                        sock.send_to(&buf[..n], from)?;
                        answered = true;
                    }
                    seen.insert(u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")));
                }
                Ok(_) => {}
                Err(_) if stop_rx.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        Ok(seen.len() as u64)
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).context("receiver did not start")?;
    let stop_tx = stop.clone();
    let sender = pair.run_spawn(Side::B, move || -> Result<u64> {
        let sock = UdpSocket::bind(SocketAddr::new([192, 0, 2, 2].into(), 0))?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        // The first datagram is answered: from then on the flow is established.
        sock.send(&0u64.to_be_bytes())?;
        let mut buf = [0u8; 64];
        sock.recv(&mut buf).context("no answer to the first datagram")?;
        let mut seq = 1u64;
        let start = Instant::now();
        while !stop_tx.load(Ordering::Relaxed) && start.elapsed() < MAX_RUN {
            for _ in 0..PER_MS {
                sock.send(&seq.to_be_bytes())?;
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(seq)
    });
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..applies {
        apply(pair, &files[i % 2]);
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    std::thread::sleep(Duration::from_millis(300));
    let received = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    if received == 0 {
        bail!("nothing received");
    }
    Ok((sent, received))
}

pub fn run(b: &mut Bench) {
    let pair = match traffic::fixture() {
        Ok(p) => p,
        Err(e) => return b.fail(format!("updates fixture: {e:#}")),
    };
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a]);
    for n in [1_000, 10_000] {
        b.progress("updates", &format!("apply {n} rules x{}", b.opts.applies));
        timing(b, &pair, n);
    }
    let applies = 10;
    b.progress("updates", &format!("established UDP flow while {applies} applies of 1,000 rules run"));
    match loss(&pair, applies) {
        Ok((sent, received)) => {
            let labels = |m: &str| {
                vec![("measure", m.to_string()), ("rules", "1000".to_string()), ("rep", "0".to_string())]
            };
            b.record("updates", labels("flow_sent"), sent as f64, "packets");
            b.record("updates", labels("flow_lost"), sent.saturating_sub(received) as f64, "packets");
        }
        Err(e) => b.fail(format!("updates loss: {e:#}")),
    }
    let _ = pair.sgctl(Side::A, &["detach", &pair.if_a]);
}
