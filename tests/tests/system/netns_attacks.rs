//! Attacks on conntrack's state with real sockets on the host (issue 36): the attacker (B)
//! injects crafted frames into the veth with a packet socket, the host (A) runs real TCP and
//! ICMP. In generic and native XDP. Each of these failed on the datapath of commit 47437fc.
//!
//! - Table fill: SYN+RST pairs from the attacker's own address do not keep new connections out.
//! - Blind RST: an out-of-window RST (IPv4, and IPv6 with a bad checksum, which the host never
//!   sees) followed by an idle gap longer than the closing timeout does not kill a connection.
//! - Own-address spoof: a forged SYN from outside carrying the host's address does not break
//!   the host's own later connection on that tuple.
//! - Ping riding: the peer's own echo request with the identifier of the host's ping is not
//!   taken as a reply.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    time::Duration,
};

use sg_tests::{
    netns::{NetnsPair, Side},
    packet::{MAC_A, MAC_B, Pkt, TCP_ACK, TCP_RST, TCP_SYN},
    probes::TcpPing,
    reason_count, require_bpf, write_temp,
};

/// The pair with the MACs the frame builder writes (A's is the frames' destination).
fn pair() -> NetnsPair {
    let pair = NetnsPair::new();
    let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    for (side, m) in [(Side::A, MAC_A), (Side::B, MAC_B)] {
        let out = pair.cmd(side, "ip", &["link", "set", "dev", pair.iface(side), "address", &mac(m)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    pair
}

/// Sends `frames` out of B's veth (a packet socket in B's namespace), in order.
fn inject(pair: &NetnsPair, frames: Vec<Vec<u8>>) {
    let ifname = pair.if_b.clone();
    pair.run(Side::B, move || {
        use nix::sys::socket::{
            AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, SockaddrLike as _, sendto, socket,
        };
        let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
            .expect("packet socket");
        let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).expect("ifindex");
        // struct sockaddr_ll for the interface.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&MAC_A);
        // SAFETY: a sockaddr_ll of the right size.
        let addr = unsafe {
            LinkAddr::from_raw(
                std::ptr::addr_of!(sll).cast(),
                Some(size_of::<libc::sockaddr_ll>() as libc::socklen_t),
            )
        }
        .expect("link address");
        for f in frames {
            sendto(fd.as_raw_fd(), &f, &addr, nix::sys::socket::MsgFlags::empty()).expect("send a frame");
        }
    });
}

fn rules(iface: &str, extra_ingress: &str) -> String {
    format!(
        "[groups.g]\ningress = [\n  {{ proto = \"tcp\", ports = \"7000\", from = [\"192.0.2.0/24\", \"2001:db8::/64\"] }},\n{extra_ingress}]\n\n\
         [interfaces.{iface}]\ngroups = [\"g\"]\ntimeouts = {{ tcp_closing = 1 }}\n"
    )
}

fn attach(pair: &NetnsPair, mode: &str, extra_ingress: &str, ct_size: &str) {
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--mode", mode, "--ct-size", ct_size]);
    let f = write_temp(&format!("{}-attack.toml", pair.if_a), &rules(&pair.if_a, extra_ingress));
    pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
}

fn a(pair: &NetnsPair, v6: bool, port: u16) -> SocketAddr {
    SocketAddr::new(pair.addr(Side::A, v6), port)
}

fn rules_open(iface: &str) -> String {
    rules(
        iface,
        "  { proto = \"tcp\", ports = \"7100-7110\", from = [\"192.0.2.0/24\", \"2001:db8::/64\"] },\n",
    )
}

#[test]
fn syn_rst_pairs_do_not_keep_new_connections_out_generic() {
    if !require_bpf("syn_rst_pairs_do_not_keep_new_connections_out_generic") {
        return;
    }
    table_fill_with(&rules_open, "generic");
}

#[test]
fn syn_rst_pairs_do_not_keep_new_connections_out_native() {
    if !require_bpf("syn_rst_pairs_do_not_keep_new_connections_out_native") {
        return;
    }
    table_fill_with(&rules_open, "native");
}

fn table_fill_with(rules: &dyn Fn(&str) -> String, mode: &str) {
    let pair = pair();
    pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--mode", mode, "--ct-size", "32"]);
    let f = write_temp(&format!("{}-fill.toml", pair.if_a), &rules(&pair.if_a));
    pair.sgctl_ok(Side::A, &["apply", &f.display().to_string()]);
    let (b, host) = (pair.addr(Side::B, false), pair.addr(Side::A, false));
    let mut frames = Vec::new();
    for p in 0..48u16 {
        frames.push(Pkt::tcp(b, host, 20000 + p, 7000).flags(TCP_SYN).seq(1000).build());
        frames.push(Pkt::tcp(b, host, 20000 + p, 7000).flags(TCP_RST).seq(1001).build());
    }
    inject(&pair, frames);
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..5 {
        let ping = TcpPing::start(
            &pair.ns_a,
            a(&pair, false, 7100 + i),
            &pair.ns_b,
            None,
            Duration::from_millis(10),
        );
        assert!(ping.wait_rounds(3, Duration::from_secs(5)), "{mode}: connection {i} after the fill");
        assert_eq!(ping.finish().error, None);
    }
    let iface = &pair.status_json()["interfaces"][0];
    assert_eq!(
        reason_count(iface, "ingress", "ct_full", "packets"),
        0,
        "{mode}: new connections were refused"
    );
    assert_eq!(
        iface["conntrack"]["established"], 5,
        "{mode}: only the real connections joined SG_CT: {iface}"
    );
}

fn blind_rst(mode: &str, v6: bool) {
    let pair = pair();
    attach(&pair, mode, "", "1024");
    // One round every 1.5 s: each gap is longer than the closing timeout (1 s).
    let client_port = 40123;
    let client = SocketAddr::new(pair.addr(Side::B, v6), client_port);
    let ping =
        TcpPing::start(&pair.ns_a, a(&pair, v6, 7000), &pair.ns_b, Some(client), Duration::from_millis(1500));
    // A blind RST on the connection's tuple (its checksum is wrong, too: the host never sees
    // it, only sgctl does).
    let rst = Pkt::tcp(client.ip(), pair.addr(Side::A, v6), client_port, 7000)
        .flags(TCP_RST | TCP_ACK)
        .seq(0x1234_5678)
        .ack(0x9abc_def0)
        .build();
    inject(&pair, vec![rst]);
    assert!(
        ping.wait_rounds(3, Duration::from_secs(10)),
        "{mode} v6={v6}: the connection died after a blind RST"
    );
    let r = ping.finish();
    assert_eq!(r.error, None, "{mode} v6={v6}");
    let iface = &pair.status_json()["interfaces"][0];
    assert_eq!(reason_count(iface, "ingress", "tcp_seq_invalid", "packets"), 1, "{iface}");
}

#[test]
fn a_blind_rst_does_not_kill_a_connection_generic() {
    if !require_bpf("a_blind_rst_does_not_kill_a_connection_generic") {
        return;
    }
    blind_rst("generic", false);
    blind_rst("generic", true);
}

#[test]
fn a_blind_rst_does_not_kill_a_connection_native() {
    if !require_bpf("a_blind_rst_does_not_kill_a_connection_native") {
        return;
    }
    blind_rst("native", false);
    blind_rst("native", true);
}

fn own_address(mode: &str) {
    let pair = pair();
    // Ingress allows tcp 443 from the subnet the host is in too: the forged SYN would pass.
    attach(&pair, mode, "  { proto = \"tcp\", ports = \"443\", from = \"192.0.2.0/24\" },\n", "1024");
    let (host, peer) = (pair.addr(Side::A, false), pair.addr(Side::B, false));
    let port = 40321;
    // From outside, claiming to be the host's future connection host:40321 -> peer:443.
    inject(&pair, vec![Pkt::tcp(host, peer, port, 443).flags(TCP_SYN).seq(5).build()]);
    std::thread::sleep(Duration::from_millis(200));
    let ping = TcpPing::start(
        &pair.ns_b,
        SocketAddr::new(peer, 443),
        &pair.ns_a,
        Some(SocketAddr::new(host, port)),
        Duration::from_millis(20),
    );
    assert!(ping.wait_rounds(5, Duration::from_secs(5)), "{mode}: the host's own connection failed");
    assert_eq!(ping.finish().error, None);
    let iface = &pair.status_json()["interfaces"][0];
    assert_eq!(reason_count(iface, "ingress", "src_is_local", "packets"), 1, "{iface}");
}

#[test]
fn a_forged_own_address_does_not_break_the_hosts_connection_generic() {
    if !require_bpf("a_forged_own_address_does_not_break_the_hosts_connection_generic") {
        return;
    }
    own_address("generic");
}

#[test]
fn a_forged_own_address_does_not_break_the_hosts_connection_native() {
    if !require_bpf("a_forged_own_address_does_not_break_the_hosts_connection_native") {
        return;
    }
    own_address("native");
}

/// An ICMP echo (request or reply) with a valid checksum.
fn echo(src: IpAddr, dst: IpAddr, icmp_type: u8) -> Vec<u8> {
    Pkt::icmp(src, dst, icmp_type, 0).build()
}

fn ping_riding(mode: &str) {
    let pair = pair();
    attach(&pair, mode, "", "1024");
    let (host, peer) = (pair.addr(Side::A, false), pair.addr(Side::B, false));
    // The host pings the peer (egress allows all): a raw ICMP socket in A, identifier 0x4242.
    pair.run(Side::A, move || {
        let s = socket2_raw_icmp();
        let frame = echo(host, peer, 8);
        // The ICMP message of the frame (after Ethernet and IPv4 headers).
        let msg = &frame[34..];
        let to = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(
            match peer {
                IpAddr::V4(v4) => v4,
                IpAddr::V6(_) => unreachable!(),
            },
            0,
        ));
        nix::sys::socket::sendto(s.as_raw_fd(), msg, &to, nix::sys::socket::MsgFlags::empty()).expect("ping");
    });
    std::thread::sleep(Duration::from_millis(200));
    let before = pair.status_json()["interfaces"][0].clone();
    // The peer's own echo request with the same identifier, then a real echo reply.
    inject(&pair, vec![echo(peer, host, 8)]);
    std::thread::sleep(Duration::from_millis(200));
    let after = pair.status_json()["interfaces"][0].clone();
    let delta = |r: &str| {
        reason_count(&after, "ingress", r, "packets") - reason_count(&before, "ingress", r, "packets")
    };
    assert_eq!(delta("ct_reply"), 0, "{mode}: the peer's echo request rode the host's ping");
    assert_eq!(delta("no_rule"), 1, "{mode}: {after}");
}

fn socket2_raw_icmp() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
    socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp)
        .expect("raw ICMP socket")
}

#[test]
fn the_peers_echo_request_does_not_ride_the_hosts_ping_generic() {
    if !require_bpf("the_peers_echo_request_does_not_ride_the_hosts_ping_generic") {
        return;
    }
    ping_riding("generic");
}

#[test]
fn the_peers_echo_request_does_not_ride_the_hosts_ping_native() {
    if !require_bpf("the_peers_echo_request_does_not_ride_the_hosts_ping_native") {
        return;
    }
    ping_riding("native");
}
