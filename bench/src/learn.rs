//! `sgctl learn`'s costs (issue 32), in userspace, where learning runs: the memory of the
//! observations table per 10,000 distinct observations (counted by the benchmark's
//! allocator, and as saved to its file), and a proposal from a synthetic week of flows (its
//! time and size). The datapath's part is the flow event of each new flow, which the daemon
//! reads for flow logs already: nothing per established packet.
//!
//! The synthetic week (documentation addresses only; no traffic is sent): 250 IPv4 and 250
//! IPv6 web clients opening 40 connections a day each to tcp 443 and 10 to tcp 80; 20 of them
//! using a passive data range (60 ports seen of tcp 50000-50099); two admin addresses on tcp
//! 22 (group `admins`' members); a monitoring prefix (prefix list `monitoring`, 16 addresses)
//! pinging and scraping tcp 9100 and udp 161; against a group that allows every TCP and UDP
//! port and ICMP from anywhere.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use sg_userspace::rules::{
    AwsContext, Dir, Format,
    learn::{LearnOptions, ObsKey, Observations, propose},
    parse_str, toml_out,
};

use super::Bench;

/// The allocator of `sg-bench`: the system's, counting the bytes live.
pub struct Counting;

/// Bytes allocated and not yet freed.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is the system allocator's, with the same layout; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

const DAY: u64 = 86_400;
const START: u64 = 1_796_601_600;

fn key(dir: Dir, proto: u8, service: u16, peer: IpAddr) -> ObsKey {
    ObsKey { iface: "eth0".into(), dir, proto, service, peer }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The synthetic week's observations (see the module documentation) and its flow count.
pub fn synthetic_week() -> (Observations, u64) {
    let mut obs = Observations::new(100_000);
    let mut flows = 0u64;
    let mut add = |obs: &mut Observations, k: ObsKey, t: u64, n: u64| {
        for _ in 0..n {
            obs.record(k.clone(), t);
        }
        flows += n;
    };
    for day in 0..7 {
        let t = START + day * DAY;
        for i in 0..250u16 {
            let c4 = v4(198, 51, 100, (i % 250) as u8 + 1);
            let c6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i + 1));
            for c in [c4, c6] {
                add(&mut obs, key(Dir::Ingress, 6, 443, c), t, 40);
                add(&mut obs, key(Dir::Ingress, 6, 80, c), t, 10);
            }
            if i < 20 {
                for p in (0..100u16).filter(|p| p % 5 != 1 && p % 5 != 3) {
                    add(&mut obs, key(Dir::Ingress, 6, 50_000 + p, c4), t, 1);
                }
            }
        }
        for admin in [v4(192, 0, 2, 10), v4(192, 0, 2, 11)] {
            add(&mut obs, key(Dir::Ingress, 6, 22, admin), t, 5);
        }
        for m in 0..16u8 {
            let a = v4(203, 0, 113, m);
            add(&mut obs, key(Dir::Ingress, 1, 0x0800, a), t, 24);
            add(&mut obs, key(Dir::Ingress, 6, 9100, a), t, 1440);
            add(&mut obs, key(Dir::Ingress, 17, 161, a), t, 288);
        }
    }
    (obs, flows)
}

const CURRENT: &str = r#"
[groups.app]
ingress = [
  { proto = "tcp", from = ["0.0.0.0/0", "::/0"] },
  { proto = "udp", from = ["0.0.0.0/0", "::/0"] },
  { proto = "icmp", from = "0.0.0.0/0" },
]

[groups.admins]
members = ["192.0.2.10", "192.0.2.11"]

[prefix_lists.monitoring]
entries = ["203.0.113.0/28"]

[interfaces.eth0]
groups = ["app"]
"#;

pub fn run(b: &mut Bench) {
    if let Err(e) = measure(b) {
        b.fail(format!("learn: {e:#}"));
    }
}

fn measure(b: &mut Bench) -> anyhow::Result<()> {
    // Memory: 10,000 distinct observations.
    let before = LIVE.load(Ordering::Relaxed);
    let mut table = Observations::new(10_000);
    for i in 0..10_000u16 {
        let peer = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, i));
        table.record(key(Dir::Ingress, 6, 443, peer), START);
    }
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    anyhow::ensure!(live > 0, "the counting allocator is not installed");
    b.record("learn", vec![("measure", "heap_bytes_per_10k".into())], live as f64, "bytes");
    b.record("learn", vec![("measure", "saved_bytes_per_10k".into())], table.to_json().len() as f64, "bytes");
    drop(table);

    // A proposal from the synthetic week.
    let t = Instant::now();
    let (obs, flows) = synthetic_week();
    let recorded = t.elapsed();
    let current = parse_str("current.toml", CURRENT, Format::Toml, &AwsContext::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let p = propose(&current, &obs, &LearnOptions { since: START, max_cidrs: 8, tighten_egress: false });
    let proposed = t.elapsed();
    let app = p.candidate.groups.iter().find(|g| g.name == "app").expect("group app");
    let lines = toml_out::to_toml(&p.candidate).lines().count();
    b.record("learn", vec![("measure", "week_flows".into())], flows as f64, "flows");
    b.record(
        "learn",
        vec![("measure", "week_observations".into())],
        obs.entries.len() as f64,
        "observations",
    );
    b.record(
        "learn",
        vec![("measure", "record_ns_per_flow".into())],
        recorded.as_nanos() as f64 / flows as f64,
        "ns",
    );
    b.record("learn", vec![("measure", "propose_ms".into())], proposed.as_secs_f64() * 1000.0, "ms");
    b.record("learn", vec![("measure", "rules_proposed".into())], app.ingress.len() as f64, "rules");
    b.record("learn", vec![("measure", "candidate_lines".into())], lines as f64, "lines");
    Ok(())
}

#[cfg(test)]
mod tests {
    use sg_userspace::rules::{Peer, Ports};

    use super::*;

    /// The week's proposal names the admins' group and the monitoring prefix list, merges
    /// the dense passive range, and holds no port that was not a service.
    #[test]
    fn the_synthetic_week_proposes_what_a_reviewer_expects() {
        let (obs, _) = synthetic_week();
        let current = parse_str("current.toml", CURRENT, Format::Toml, &AwsContext::default()).unwrap();
        let p = propose(&current, &obs, &LearnOptions { since: START, max_cidrs: 8, tighten_egress: false });
        let app = p.candidate.groups.iter().find(|g| g.name == "app").unwrap();
        let has = |ports: Ports, peer: Peer| app.ingress.iter().any(|r| r.ports == ports && r.peer == peer);
        assert!(has(Ports::Range(22, 22), Peer::Group("admins".into())), "{:#?}", app.ingress);
        assert!(has(Ports::Range(9100, 9100), Peer::PrefixList("monitoring".into())));
        assert!(has(Ports::Range(161, 161), Peer::PrefixList("monitoring".into())));
        assert!(has(
            Ports::Icmp { icmp_type: Some(8), code: Some(0) },
            Peer::PrefixList("monitoring".into())
        ));
        for r in &app.ingress {
            match r.ports {
                Ports::Range(lo, hi) => assert!(
                    [(22, 22), (80, 80), (443, 443), (9100, 9100), (161, 161), (50_000, 50_099)]
                        .contains(&(lo, hi)),
                    "a port that is no service: {r:?}"
                ),
                Ports::Icmp { .. } => {}
                Ports::All => panic!("a rule for every port: {r:?}"),
            }
        }
    }
}
