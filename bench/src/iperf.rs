//! TCP throughput with iperf3 through the veth pair (bounded runs): no filter, nftables,
//! sgctl generic (what `--mode auto` picks on a veth), sgctl native; one stream, receivers
//! interleaved round by round.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::{
    Bench,
    rulegen::ALLOWED_PORT,
    tools,
    traffic::{self, Receiver},
};
use sg_tests::netns::NetnsPair;

/// One bounded iperf3 run from B to A; Gbit/s received.
fn one(pair: &NetnsPair, dur: Duration) -> Result<f64> {
    let secs = dur.as_secs().max(1);
    let port = ALLOWED_PORT.to_string();
    let server_ns = pair.ns_a.clone();
    let bind = pair.v4_a.to_string();
    let port_s = port.clone();
    let server = std::thread::spawn(move || {
        tools::in_ns(&server_ns, (secs + 15) as u32, "iperf3", &["-s", "-1", "-B", &bind, "-p", &port_s])
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = tools::in_ns(
        &pair.ns_b,
        (secs + 10) as u32,
        "iperf3",
        &["-c", &pair.v4_a.to_string(), "-p", &port, "-t", &secs.to_string(), "-J"],
    )?;
    let _ = server.join();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().context("no sum_received")?;
    Ok(bps / 1e9)
}

pub fn run(b: &mut Bench) {
    let pair = match traffic::fixture() {
        Ok(p) => p,
        Err(e) => return b.fail(format!("iperf3 fixture: {e:#}")),
    };
    // Interleaved: every receiver once per round, so a slow phase of the shared machine
    // touches all of them alike.
    for rep in 0..b.opts.reps {
        for r in [Receiver::None, Receiver::Nftables, Receiver::SgctlGeneric, Receiver::SgctlNative] {
            let guard = match traffic::setup(&pair, r) {
                Ok(g) => g,
                Err(e) => {
                    b.fail(format!("iperf3 {}: {e:#}", r.name()));
                    continue;
                }
            };
            b.progress("iperf3", &format!("{} #{}", r.name(), rep + 1));
            match one(&pair, b.opts.run) {
                Ok(g) => b.record(
                    "iperf3",
                    vec![("receiver", r.name().to_string()), ("rep", rep.to_string())],
                    g,
                    "Gbit/s",
                ),
                Err(e) => b.fail(format!("iperf3 {}: {e:#}", r.name())),
            }
            traffic::teardown(&pair, r, guard);
        }
    }
}
