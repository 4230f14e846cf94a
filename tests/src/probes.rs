//! Live traffic that tests keep running through an event (sgctl enabled on a running host, an
//! upgrade, a crash) and then ask what it lost. Every probe runs on threads inside the test's
//! own namespaces, is bounded in time ([`MAX_RUN`]) and stops on [`finish`](TcpPing::finish)
//! or when dropped.
//!
//! - [`TcpPing`]: one TCP connection; the client sends a numbered message every interval and
//!   the server echoes it; a round trip that fails (3 s) ends the probe with its error.
//! - [`UdpEcho`]: numbered datagrams, paced, from a client to a server that echoes each; counts
//!   what the server got and what came back.
//! - [`UdpPush`]: the server sends numbered datagrams to a client that said hello once (a
//!   stream that only flows one way after its first packet).
//! - [`Flood`]: datagrams to a port the policy denies, throughout; counts what arrived.

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::spawn_in_ns;

/// No probe runs longer than this.
pub const MAX_RUN: Duration = Duration::from_mins(3);

fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn v6only(addr: SocketAddr) -> bool {
    addr.is_ipv6()
}

/// What a [`TcpPing`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingResult {
    pub sent: u64,
    pub ok: u64,
    /// The first failed round trip, if any (the probe stops there).
    pub error: Option<String>,
}

/// One TCP connection exchanging numbered messages.
pub struct TcpPing {
    stop: Arc<AtomicBool>,
    client: Option<JoinHandle<PingResult>>,
    server: Option<JoinHandle<()>>,
    rounds: Arc<AtomicU64>,
}

impl TcpPing {
    /// A server listening on `server` in `server_ns`, a client in `client_ns` connected to it
    /// (from `client_bind` when given, port 0 = any); a round trip every `every`. Returns once
    /// the first round trip succeeded.
    pub fn start(
        server_ns: &str,
        server: SocketAddr,
        client_ns: &str,
        client_bind: Option<SocketAddr>,
        every: Duration,
    ) -> Self {
        Self::start_with(server_ns, server, client_ns, client_bind, every, Duration::from_secs(3))
    }

    /// As [`TcpPing::start`], a round trip failing only after `patience` (TCP retransmits
    /// meanwhile: a connection cut for a few seconds and then restored goes on).
    pub fn start_with(
        server_ns: &str,
        server: SocketAddr,
        client_ns: &str,
        client_bind: Option<SocketAddr>,
        every: Duration,
        patience: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop_s = stop.clone();
        let server_h = spawn_in_ns(server_ns, move || {
            let l = bind_tcp(server);
            ready_tx.send(()).ok();
            l.set_nonblocking(true).expect("nonblocking");
            let deadline = Instant::now() + MAX_RUN;
            let mut conn = loop {
                match l.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if stop_s.load(Ordering::Relaxed) || Instant::now() > deadline => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            conn.set_nonblocking(false).expect("blocking");
            conn.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            let mut buf = [0u8; 8];
            while !stop_s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match conn.read_exact(&mut buf) {
                    Ok(()) => {
                        if conn.write_all(&buf).is_err() {
                            return;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("TCP server did not start");
        let stop_c = stop.clone();
        let rounds = Arc::new(AtomicU64::new(0));
        let rounds_c = rounds.clone();
        let (first_tx, first_rx) = mpsc::channel();
        let client = spawn_in_ns(client_ns, move || {
            let mut r = PingResult { sent: 0, ok: 0, error: None };
            let conn = match client_bind {
                Some(from) => {
                    let s = socket2_connect(from, server);
                    s.map_err(|e| e.to_string())
                }
                None => {
                    TcpStream::connect_timeout(&server, Duration::from_secs(3)).map_err(|e| e.to_string())
                }
            };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    r.error = Some(format!("connect: {e}"));
                    first_tx.send(()).ok();
                    return r;
                }
            };
            conn.set_read_timeout(Some(patience)).expect("timeout");
            let deadline = Instant::now() + MAX_RUN;
            let mut buf = [0u8; 8];
            while !stop_c.load(Ordering::Relaxed) && Instant::now() < deadline {
                r.sent += 1;
                let out = r.sent.to_be_bytes();
                let round = conn.write_all(&out).and_then(|()| conn.read_exact(&mut buf));
                match round {
                    Ok(()) if buf == out => r.ok += 1,
                    Ok(()) => {
                        r.error = Some(format!("round {}: wrong echo", r.sent));
                        break;
                    }
                    Err(e) => {
                        r.error = Some(format!("round {}: {e}", r.sent));
                        break;
                    }
                }
                rounds_c.store(r.ok, Ordering::Relaxed);
                if r.sent == 1 {
                    first_tx.send(()).ok();
                }
                std::thread::sleep(every);
            }
            first_tx.send(()).ok();
            r
        });
        first_rx.recv_timeout(Duration::from_secs(10)).expect("TCP probe: no first round trip");
        TcpPing { stop, client: Some(client), server: Some(server_h), rounds }
    }

    /// Round trips completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits until `n` more round trips completed (or `limit` passed); true when they did.
    pub fn wait_rounds(&self, n: u64, limit: Duration) -> bool {
        let target = self.rounds() + n;
        crate::wait_until(limit, || self.rounds() >= target).is_some()
    }

    /// Stops the probe; what it saw.
    pub fn finish(mut self) -> PingResult {
        self.stop.store(true, Ordering::Relaxed);
        let r = join(self.client.take().expect("client"));
        join(self.server.take().expect("server"));
        r
    }
}

impl Drop for TcpPing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn bind_tcp(addr: SocketAddr) -> TcpListener {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
        sockopt,
    };
    let fam = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    if v6only(addr) {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).expect("IPV6_V6ONLY");
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr)).expect("bind");
    listen(&fd, Backlog::new(16).expect("backlog")).expect("listen");
    TcpListener::from(fd)
}

/// A TCP connection from `from` (a fixed source address and port) to `to`.
fn socket2_connect(from: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket, sockopt,
    };
    let fam = if from.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    bind(raw, &SockaddrStorage::from(from))?;
    connect(raw, &SockaddrStorage::from(to))?;
    Ok(TcpStream::from(fd))
}

fn bind_udp(addr: SocketAddr) -> UdpSocket {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
    };
    let fam = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(fam, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    if v6only(addr) {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).expect("IPV6_V6ONLY");
    }
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr)).expect("bind");
    UdpSocket::from(fd)
}

/// What a [`UdpEcho`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoResult {
    pub sent: u64,
    /// Distinct datagrams the server got.
    pub server_got: u64,
    /// Distinct echoes the client got back.
    pub echoed: u64,
}

impl EchoResult {
    /// Datagrams lost either way.
    pub fn lost(&self) -> u64 {
        self.sent - self.echoed
    }
}

/// Numbered datagrams from a client to an echoing server.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<u64>>,
    client: Option<JoinHandle<(u64, u64)>>,
}

impl UdpEcho {
    /// Server on `server` in `server_ns`, client in `client_ns`: `per_ms` datagrams every
    /// millisecond. Returns once the first datagram came back (the flow is established).
    pub fn start(server_ns: &str, server: SocketAddr, client_ns: &str, per_ms: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop_s = stop.clone();
        let server_h = spawn_in_ns(server_ns, move || {
            let s = bind_udp(server);
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            ready_tx.send(()).ok();
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + MAX_RUN;
            let mut idle_since = None;
            while Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) if n >= 8 => {
                        idle_since = None;
                        let _ = s.send_to(&buf[..n], from);
                        seen.insert(u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")));
                    }
                    Ok(_) => {}
                    Err(_) if stop_s.load(Ordering::Relaxed) => {
                        // Stop after the stragglers: 300 ms without a datagram.
                        let t = *idle_since.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
            seen.len() as u64
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("UDP server did not start");
        let stop_c = stop.clone();
        let (first_tx, first_rx) = mpsc::channel();
        let client = spawn_in_ns(client_ns, move || {
            let any: SocketAddr =
                if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("addr");
            let s = bind_udp(any);
            s.connect(server).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut buf = [0u8; 64];
            // Datagram 0 establishes the flow.
            s.send(&0u64.to_be_bytes()).expect("send");
            if s.recv(&mut buf).is_err() {
                first_tx.send(false).ok();
                return (0, 0);
            }
            first_tx.send(true).ok();
            let echoed = Arc::new(std::sync::Mutex::new(HashSet::new()));
            let rx = s.try_clone().expect("clone");
            rx.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let echoed_r = echoed.clone();
            let stop_r = stop_c.clone();
            let reader = std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut idle_since = None;
                let deadline = Instant::now() + MAX_RUN;
                while Instant::now() < deadline {
                    match rx.recv(&mut buf) {
                        Ok(n) if n >= 8 => {
                            idle_since = None;
                            echoed_r
                                .lock()
                                .expect("lock")
                                .insert(u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")));
                        }
                        Ok(_) => {}
                        Err(_) if stop_r.load(Ordering::Relaxed) => {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(300) {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
            });
            let mut seq = 1u64;
            let deadline = Instant::now() + MAX_RUN;
            while !stop_c.load(Ordering::Relaxed) && Instant::now() < deadline {
                for _ in 0..per_ms {
                    let _ = s.send(&seq.to_be_bytes());
                    seq += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            reader.join().ok();
            let echoed = echoed.lock().expect("lock").iter().filter(|n| **n > 0).count() as u64;
            (seq - 1, echoed)
        });
        assert!(
            first_rx.recv_timeout(Duration::from_secs(10)).unwrap_or(false),
            "UDP probe: the first datagram was not echoed"
        );
        UdpEcho { stop, server: Some(server_h), client: Some(client) }
    }

    /// Stops sending, waits for the stragglers; what each end saw.
    pub fn finish(mut self) -> EchoResult {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, echoed) = join(self.client.take().expect("client"));
        let got = join(self.server.take().expect("server"));
        // Datagram 0 is not counted as sent.
        EchoResult { sent, server_got: got.saturating_sub(1), echoed }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A server that, once a client said hello, sends it a numbered datagram every interval.
pub struct UdpPush {
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<u64>>,
    client: Option<JoinHandle<u64>>,
    received: Arc<AtomicU64>,
}

impl UdpPush {
    /// Server on `server` in `server_ns`; the client in `client_ns` says hello from a
    /// connected socket and counts what comes back. Returns once the first push arrived.
    pub fn start(server_ns: &str, server: SocketAddr, client_ns: &str, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop_s = stop.clone();
        let server_h = spawn_in_ns(server_ns, move || {
            let s = bind_udp(server);
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            ready_tx.send(()).ok();
            let mut buf = [0u8; 16];
            let Ok((_, client)) = s.recv_from(&mut buf) else { return 0 };
            let mut n = 0u64;
            let deadline = Instant::now() + MAX_RUN;
            while !stop_s.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                let _ = s.send_to(&n.to_be_bytes(), client);
                std::thread::sleep(every);
            }
            n
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("UDP push server did not start");
        let stop_c = stop.clone();
        let received = Arc::new(AtomicU64::new(0));
        let received_c = received.clone();
        let client = spawn_in_ns(client_ns, move || {
            let any: SocketAddr =
                if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("addr");
            let s = bind_udp(any);
            s.connect(server).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            s.send(b"hello").expect("send");
            let mut buf = [0u8; 16];
            let deadline = Instant::now() + MAX_RUN;
            while !stop_c.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(n) = s.recv(&mut buf)
                    && n == 8
                {
                    received_c.fetch_add(1, Ordering::Relaxed);
                }
            }
            received_c.load(Ordering::Relaxed)
        });
        assert!(
            crate::wait_until(Duration::from_secs(5), || received.load(Ordering::Relaxed) > 0).is_some(),
            "UDP push probe: nothing arrived"
        );
        UdpPush { stop, server: Some(server_h), client: Some(client), received }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops; (sent, received).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let got = join(self.client.take().expect("client"));
        (join(self.server.take().expect("server")), got)
    }
}

impl Drop for UdpPush {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Datagrams to a port the policy denies, sent throughout; the receiver counts what arrives.
pub struct Flood {
    stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<u64>>,
    sender: Option<JoinHandle<u64>>,
}

impl Flood {
    /// Receiver bound to `target` in `target_ns`; sender in `sender_ns`, `per_ms` datagrams a
    /// millisecond.
    pub fn start(target_ns: &str, target: SocketAddr, sender_ns: &str, per_ms: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop_r = stop.clone();
        let receiver = spawn_in_ns(target_ns, move || {
            let s = bind_udp(target);
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            ready_tx.send(()).ok();
            let mut got = 0;
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + MAX_RUN;
            let mut idle_since = None;
            while Instant::now() < deadline {
                match s.recv(&mut buf) {
                    Ok(_) => got += 1,
                    Err(_) if stop_r.load(Ordering::Relaxed) => {
                        let t = *idle_since.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
            got
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("flood receiver did not start");
        let stop_s = stop.clone();
        let sender = spawn_in_ns(sender_ns, move || {
            let any: SocketAddr =
                if target.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("addr");
            let s = bind_udp(any);
            let mut n = 0;
            let deadline = Instant::now() + MAX_RUN;
            while !stop_s.load(Ordering::Relaxed) && Instant::now() < deadline {
                for _ in 0..per_ms {
                    let _ = s.send_to(b"denied", target);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        });
        Flood { stop, receiver: Some(receiver), sender: Some(sender) }
    }

    /// Stops; (sent, arrived).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = join(self.sender.take().expect("sender"));
        (sent, join(self.receiver.take().expect("receiver")))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
