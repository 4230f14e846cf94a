//! `cargo xtask demo`: sgctl on a pair of network namespaces, with real sockets.
//!
//! Creates two namespaces joined by a veth pair (192.0.2.0/24, 2001:db8::/64), attaches sgctl
//! to the "server" side with ingress denied, shows a TCP connection failing and the counter
//! that stopped it, switches ingress to allow in place (same programs), shows TCP and UDP
//! working, prints `sgctl status`, detaches and tears everything down.

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
    if let Err(e) = demo() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn demo() -> Result<(), String> {
    let missing = sg_tests::missing_privileges();
    if !missing.is_empty() {
        return Err(format!("the demo needs {}", missing.join(", ")));
    }
    println!("sgctl demo: security groups enforced by XDP (ingress) and TC (egress)");
    step(1, "Creating two network namespaces joined by a veth pair");
    let pair = NetnsPair::new();
    println!("    server: namespace {} interface {} address {}", pair.ns_a, pair.if_a, pair.v4_a);
    println!("    client: namespace {} interface {} address {}", pair.ns_b, pair.if_b, pair.v4_b);
    let server = servers(&pair, 30);

    step(2, "Before sgctl: the client reaches the server's echo service (TCP and UDP, port 7000)");
    println!("    {}", tcp_echo(&pair, "hello"));
    println!("    {}", udp_echo(&pair, "ping"));

    step(
        3,
        &format!("sgctl attach {} --ingress deny   (AWS default: deny all ingress, allow egress)", pair.if_a),
    );
    show(&pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--ingress", "deny"]));

    step(4, "The same traffic is now dropped by the XDP program before the stack sees it");
    let blocked = tcp_echo(&pair, "hello");
    println!("    {blocked}");
    println!("    {}", udp_echo(&pair, "ping"));
    if !blocked.contains("FAILED") {
        return Err("TCP got through an ingress-deny posture".into());
    }
    show(&pair.sgctl_ok(Side::A, &["status"]));

    step(
        5,
        &format!(
            "sgctl attach {} --ingress allow   (changes a map entry; no reload, same program ids)",
            pair.if_a
        ),
    );
    show(&pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--ingress", "allow"]));
    let allowed = tcp_echo(&pair, "hello again");
    println!("    {allowed}");
    println!("    {}", udp_echo(&pair, "ping again"));
    if !allowed.contains("got back") {
        return Err("TCP failed under ingress allow".into());
    }

    step(6, "Counters per verdict reason (packets and bytes, both directions)");
    show(&pair.sgctl_ok(Side::A, &["status"]));

    step(7, &format!("sgctl detach {}: links, programs and maps removed", pair.if_a));
    show(&pair.sgctl_ok(Side::A, &["detach", &pair.if_a]));
    show(&pair.sgctl_ok(Side::A, &["status"]));
    drop(server);

    step(8, "Tearing down the namespaces");
    drop(pair);
    println!("    done: nothing of the demo is left on this machine");
    Ok(())
}
