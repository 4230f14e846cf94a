//! Attacks on conntrack's state at full rate: how long new connections are refused while an
//! attacker sends SYN+RST pairs (goal: not at all).
//!
//! The receiver (A) is attached with a small established table (`--ct-size 1024`) and allows
//! TCP to a port range. The attacker (B) sends SYN+RST pairs from its own address (a packet
//! socket, as fast as one thread sends, for the run's length); meanwhile a client in B opens a
//! new connection every 10 ms (3 s connect timeout) and exchanges one message on it. Recorded:
//! pairs sent per second, connections tried and refused, and the time new connections were
//! refused (the refused ones times the interval).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::Bench;
use sg_tests::{
    netns::{NetnsPair, Side},
    packet::{MAC_A, MAC_B, Pkt, TCP_RST, TCP_SYN},
};

const INTERVAL: Duration = Duration::from_millis(10);

fn fixture() -> Result<NetnsPair> {
    let pair = NetnsPair::new();
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    for (side, m) in [(Side::A, MAC_A), (Side::B, MAC_B)] {
        let out = pair.cmd(side, "ip", &["link", "set", "dev", pair.iface(side), "address", &mac(m)]);
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(pair)
}

/// SYN+RST pairs from B to A's port range, until `stop`; returns pairs sent.
fn flood(pair: &NetnsPair, stop: Arc<AtomicBool>, limit: Duration) -> std::thread::JoinHandle<u64> {
    let (ifname, b, a) = (pair.if_b.clone(), pair.addr(Side::B, false), pair.addr(Side::A, false));
    pair.run_spawn(Side::B, move || {
        use nix::sys::socket::{
            AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike as _, sendto,
            socket,
        };
        let Ok(fd) =
            socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
        else {
            return 0;
        };
        let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).unwrap_or(0);
        // SAFETY: zeroed plain C struct.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&MAC_A);
        // SAFETY: a sockaddr_ll of the right size.
        let Some(addr) = (unsafe {
            LinkAddr::from_raw(
                std::ptr::addr_of!(sll).cast(),
                Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
            )
        }) else {
            return 0;
        };
        let frames: Vec<(Vec<u8>, Vec<u8>)> = (0..4096u16)
            .map(|p| {
                let syn = Pkt::tcp(b, a, 10_000 + p, 7000).flags(TCP_SYN).seq(1000).build();
                let rst = Pkt::tcp(b, a, 10_000 + p, 7000).flags(TCP_RST).seq(1001).build();
                (syn, rst)
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        'outer: while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
            for (syn, rst) in &frames {
                let _ = sendto(fd.as_raw_fd(), syn, &addr, MsgFlags::empty());
                let _ = sendto(fd.as_raw_fd(), rst, &addr, MsgFlags::empty());
                sent += 1;
                if sent.is_multiple_of(256) && stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
            }
        }
        sent
    })
}

fn run_once(b: &mut Bench) -> Result<()> {
    let pair = fixture()?;
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--ct-size", "1024"]);
    let rules = format!(
        "[groups.g]\ningress = [ {{ proto = \"tcp\", ports = \"7000-7001\", from = \"192.0.2.0/24\" }} ]\n[interfaces.{}]\ngroups = [\"g\"]\n",
        pair.if_a
    );
    let f = sg_tests::write_temp("bench-attack.toml", &rules);
    pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
    let server = SocketAddr::new(pair.v4_a.into(), 7001);
    let listener = pair.run(Side::A, move || TcpListener::bind(server)).context("bind")?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_s = stop.clone();
    let acceptor = std::thread::spawn(move || {
        while !stop_s.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut buf = [0u8; 1];
                    if c.read_exact(&mut buf).is_ok() {
                        let _ = c.write_all(&buf);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    let run = b.opts.run * 2;
    let started = Instant::now();
    let flooder = flood(&pair, stop.clone(), run + Duration::from_secs(10));
    let (tried, refused) = pair.run(Side::B, move || {
        let (mut tried, mut refused) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < run {
            tried += 1;
            let ok = TcpStream::connect_timeout(&server, Duration::from_secs(3)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(b"x")?;
                let mut buf = [0u8; 1];
                s.read_exact(&mut buf)
            });
            refused += u64::from(ok.is_err());
            std::thread::sleep(INTERVAL);
        }
        (tried, refused)
    });
    stop.store(true, Ordering::Relaxed);
    let pairs = flooder.join().map_err(|_| anyhow::anyhow!("flooder panicked"))?;
    let secs = started.elapsed().as_secs_f64();
    acceptor.join().map_err(|_| anyhow::anyhow!("acceptor panicked"))?;
    let labels = |m: &str| vec![("measure", m.to_string()), ("rep", "0".to_string())];
    b.record("attacks", labels("syn_rst_pairs_per_s"), pairs as f64 / secs, "pps");
    b.record("attacks", labels("connections_tried"), tried as f64, "count");
    b.record("attacks", labels("connections_refused"), refused as f64, "count");
    b.record("attacks", labels("refused_ms"), refused as f64 * INTERVAL.as_secs_f64() * 1e3, "ms");
    Ok(())
}

pub fn run(b: &mut Bench) {
    b.progress("attacks", "SYN+RST pairs at full rate against a 1,024-flow table, new connections meanwhile");
    if let Err(e) = run_once(b) {
        b.fail(format!("attacks: {e:#}"));
    }
}
