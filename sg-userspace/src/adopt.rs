//! Taking over the connections a host already has when sgctl is first enabled on an interface:
//! each is treated as if sgctl had been there from its start.
//!
//! A mid-stream packet does not say who opened its connection, and an outside sender must never
//! create state with a forged non-SYN packet, so the datapath never adopts a flow on its own.
//! The true direction comes from the kernel's socket table (sock_diag), which only the host's
//! own sockets are in:
//! - TCP: a connected socket whose local address and port have a listening socket was accepted
//!   (the peer opened it: ingress); any other was opened by the host (egress).
//! - UDP: a connected socket is the host's own flow (egress), unless an unconnected socket is
//!   bound to the same local port (a server that connected back to its client: ingress).
//!   Unconnected UDP sockets carry no flow: a server's next datagram in is a new flow anyway.
//!
//! Only sockets whose local address is one of the interface's addresses are the interface's
//! connections. Each is asked of the policy in its true direction, with its first packet (the
//! caller's decider: the posture, or the rules by the reference model, which answers as the
//! datapath does for a flow's first packet). An allowed one is entered in the conntrack tables
//! as the datapath would hold it by now (TCP by the socket's state: established and closing
//! connections in `SG_CT`, handshakes in `SG_CT_NEW`; UDP as not answered yet, in `SG_CT_NEW`),
//! marked `CT_F_ADOPTED`; a flow already tracked is left alone. One the policy would not have
//! allowed is not entered: its packets meet the policy as before and are dropped.
//!
//! Not read: the kernel's own conntrack table (forwarded flows on a router host), ICMP (ping
//! sockets), raw sockets, and sockets of other network namespaces.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};
use serde::Serialize;
use sg_common::{
    conntrack::{
        CT_F_ADOPTED, CT_F_SEEN_REPLY, CT_NEW, CT_TCP_CLOSING, CT_TCP_ESTABLISHED, CT_TCP_FIN_ORIG,
        CT_TCP_FIN_REPLY, CT_TCP_SYN_RECV, CT_TCP_SYN_SENT, CtEntry, CtKey, WSCALE_NONE, ct_key,
        is_established,
    },
    packet::{FAMILY_IPV4, FAMILY_IPV6},
};

use sg_common::{Action, IfaceConfig, Posture, policy::NO_RULE};

use crate::{
    error::{Context as _, Error, Result},
    maps::{CtTable, InstanceMaps, ct_now_ns},
    rules::{Dir, RuleSet, model},
};

/// Linux TCP states (`include/net/tcp_states.h`).
mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// A connection of the host, with its true direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// 6 or 17.
    pub proto: u8,
    /// Ingress: the peer opened it; egress: the host did.
    pub dir: Dir,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// TCP: the socket's state (Linux numbering); UDP: 0.
    pub tcp_state: u8,
}

impl Candidate {
    /// The first packet of the connection: (source, destination).
    pub fn first_packet(&self) -> (SocketAddr, SocketAddr) {
        match self.dir {
            Dir::Egress => (self.local, self.remote),
            Dir::Ingress => (self.remote, self.local),
        }
    }
}

/// What [`adopt`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdoptReport {
    /// Connections of the interface's addresses found in the socket table.
    pub found: usize,
    /// Entered in the conntrack tables.
    pub adopted: usize,
    /// Not entered: the policy would not have allowed them in their true direction.
    pub refused: usize,
    /// Already tracked (left as they were).
    pub tracked: usize,
    /// Time taken: reading the socket table, deciding, entering the flows.
    pub micros: u64,
}

impl AdoptReport {
    /// Both passes of an enable together.
    pub fn and(self, o: AdoptReport) -> AdoptReport {
        AdoptReport {
            found: self.found + o.found,
            adopted: self.adopted + o.adopted,
            refused: self.refused + o.refused,
            tracked: self.tracked + o.tracked,
            micros: self.micros + o.micros,
        }
    }
}

/// One sock_diag dump: every socket of `family` and `protocol` in this network namespace.
fn dump(family: u8, protocol: u8) -> Result<Vec<InetResponse>> {
    let what = || format!("reading the socket table (sock_diag, family {family}, protocol {protocol})");
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context(what)?;
    socket.bind_auto().context(what)?;
    socket.connect(&NlAddr::new(0, 0)).context(what)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.header.length as usize];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).context(what)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full().context(what)?;
        let mut off = 0;
        while off < data.len() {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&data[off..])
                .map_err(|e| Error::Io { what: what(), source: std::io::Error::other(e.to_string()) })?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(Error::Io { what: what(), source: std::io::Error::other(e.to_string()) });
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// Does `addr:port` have a socket of `listeners` (an exact or a wildcard address)?
fn has_listener(listeners: &HashSet<(IpAddr, u16)>, addr: IpAddr, port: u16) -> bool {
    let wildcards = [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])];
    listeners.contains(&(addr, port)) || wildcards.iter().any(|w| listeners.contains(&(*w, port)))
}

/// The connections of the socket table whose local address is one of `addrs`, with their true
/// direction.
pub fn candidates(addrs: &[IpAddr]) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
        let mut socks = Vec::new();
        for family in [AF_INET, AF_INET6] {
            socks.extend(dump(family, protocol)?);
        }
        let id = |r: &InetResponse| {
            let s = &r.header.socket_id;
            (
                SocketAddr::new(s.source_address, s.source_port),
                SocketAddr::new(s.destination_address, s.destination_port),
            )
        };
        // TCP: listening sockets; UDP: unconnected ones (no remote port).
        let listeners: HashSet<(IpAddr, u16)> =
            socks
                .iter()
                .filter(|r| {
                    if protocol == IPPROTO_TCP { r.header.state == tcp::LISTEN } else { id(r).1.port() == 0 }
                })
                .map(|r| (id(r).0.ip(), id(r).0.port()))
                .collect();
        for r in &socks {
            let (local, remote) = id(r);
            let state = r.header.state;
            let connected = if protocol == IPPROTO_TCP {
                matches!(
                    state,
                    tcp::ESTABLISHED
                        | tcp::SYN_SENT
                        | tcp::SYN_RECV
                        | tcp::NEW_SYN_RECV
                        | tcp::FIN_WAIT1
                        | tcp::FIN_WAIT2
                        | tcp::CLOSE_WAIT
                        | tcp::LAST_ACK
                        | tcp::CLOSING
                )
            } else {
                remote.port() != 0
            };
            // An IPv4 peer of an IPv6 socket (v4-mapped) is IPv4 on the wire.
            let (local, remote) = (unmap(local), unmap(remote));
            if !connected || !addrs.contains(&local.ip()) || local.is_ipv4() != remote.is_ipv4() {
                continue;
            }
            let listened = has_listener(&listeners, local.ip(), local.port())
                || has_listener(&listeners, mapped(local.ip()), local.port());
            let accepted = match (protocol, state) {
                // The host's own handshake; one in SYN_RECV is the listener's (the peer's).
                (IPPROTO_TCP, tcp::SYN_SENT) => false,
                (IPPROTO_TCP, tcp::SYN_RECV | tcp::NEW_SYN_RECV) => true,
                _ => listened,
            };
            out.push(Candidate {
                proto: protocol,
                dir: if accepted { Dir::Ingress } else { Dir::Egress },
                local,
                remote,
                tcp_state: if protocol == IPPROTO_TCP { state } else { 0 },
            });
        }
    }
    Ok(out)
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    }
}

/// An IPv4 address as the v4-mapped IPv6 one a dual-stack listener is bound to.
fn mapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 @ IpAddr::V6(_) => v6,
    }
}

fn addr16(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    b
}

/// The conntrack state of an adopted TCP connection, from its socket's state (`None`: nothing
/// to track).
fn tcp_ct_state(c: &Candidate) -> Option<u8> {
    let host_opened = c.dir == Dir::Egress;
    Some(match c.tcp_state {
        tcp::ESTABLISHED => CT_TCP_ESTABLISHED,
        tcp::SYN_SENT => CT_TCP_SYN_SENT,
        tcp::SYN_RECV | tcp::NEW_SYN_RECV => CT_TCP_SYN_RECV,
        // The host sent its FIN.
        tcp::FIN_WAIT1 | tcp::FIN_WAIT2 => {
            if host_opened {
                CT_TCP_FIN_ORIG
            } else {
                CT_TCP_FIN_REPLY
            }
        }
        // The peer sent its FIN.
        tcp::CLOSE_WAIT => {
            if host_opened {
                CT_TCP_FIN_REPLY
            } else {
                CT_TCP_FIN_ORIG
            }
        }
        tcp::LAST_ACK | tcp::CLOSING => CT_TCP_CLOSING,
        _ => return None,
    })
}

/// The flow of `c` as the datapath would hold it: key, table and entry, allowed by rule
/// `rule` (a rule id or `policy::NO_RULE`) of rule set `policy_seq`.
pub fn flow_of(c: &Candidate, rule: u32, policy_seq: u32, now_ns: u64) -> Option<(CtKey, CtTable, CtEntry)> {
    let (src, dst) = c.first_packet();
    let family = if src.is_ipv4() { FAMILY_IPV4 } else { FAMILY_IPV6 };
    let (key, src_lo) = ct_key(family, c.proto, &addr16(src.ip()), src.port(), &addr16(dst.ip()), dst.port());
    let state = if c.proto == 6 { tcp_ct_state(c)? } else { CT_NEW };
    let seen_reply = state != CT_NEW && state != CT_TCP_SYN_SENT;
    let entry = CtEntry {
        created_ns: now_ns,
        last_seen_ns: now_ns,
        rule,
        policy_seq,
        state,
        origin: c.dir.datapath() as u8,
        initiator_lo: u8::from(src_lo),
        flags: CT_F_ADOPTED | if seen_reply { CT_F_SEEN_REPLY } else { 0 },
        wscale: [WSCALE_NONE; 2],
        ..CtEntry::default()
    };
    let table = if is_established(state) { CtTable::Established } else { CtTable::New };
    Some((key, table, entry))
}

/// The decider of an interface in security-groups mode: the rules of `rs`, by the reference
/// model, for the connection's first packet (the network ACL included).
pub fn by_rules<'a>(rs: &'a RuleSet, iface: &'a str) -> impl Fn(&Candidate) -> Option<u32> + 'a {
    move |c: &Candidate| {
        let (src, dst) = c.first_packet();
        let probe = model::Probe {
            src: src.ip(),
            dst: dst.ip(),
            proto: c.proto,
            dport: dst.port(),
            icmp_type: 0,
            icmp_code: 0,
            later_fragment: false,
        };
        let d = model::evaluate(rs, iface, c.dir, &probe);
        (d.reason.action() == Action::Pass).then(|| d.rule.map_or(NO_RULE, |r| r as u32))
    }
}

/// The decider of an interface in posture mode: the posture of the connection's direction.
pub fn by_posture(cfg: IfaceConfig) -> impl Fn(&Candidate) -> Option<u32> {
    move |c: &Candidate| {
        let posture = match c.dir {
            Dir::Ingress => cfg.ingress_posture,
            Dir::Egress => cfg.egress_posture,
        };
        (Posture::from_u8(posture) == Some(Posture::Allow)).then_some(NO_RULE)
    }
}

/// Adopts the connections of `iface` that `decide` allows (`Some(rule)`: the rule id, or
/// `policy::NO_RULE` for a posture), into the instance's tables (rule set `policy_seq`).
pub fn adopt(
    iface: &str,
    maps: &mut InstanceMaps,
    policy_seq: u32,
    decide: &dyn Fn(&Candidate) -> Option<u32>,
) -> Result<AdoptReport> {
    let started = std::time::Instant::now();
    let addrs = crate::iface::addrs(iface)?;
    let mut report = AdoptReport::default();
    if addrs.is_empty() {
        return Ok(report);
    }
    let tracked: HashSet<CtKey> = maps.ct_entries()?.into_iter().map(|(_, k, _)| k).collect();
    let now = ct_now_ns();
    for c in candidates(&addrs)? {
        report.found += 1;
        let Some(rule) = decide(&c) else {
            report.refused += 1;
            continue;
        };
        let Some((key, table, entry)) = flow_of(&c, rule, policy_seq, now) else { continue };
        if tracked.contains(&key) || !maps.ct_insert_new(table, &key, &entry)? {
            report.tracked += 1;
            continue;
        }
        report.adopted += 1;
    }
    report.micros = started.elapsed().as_micros() as u64;
    if report.found > 0 {
        log::info!(
            "{iface}: {} existing connections adopted, {} not (the policy would not have allowed them), {} already tracked",
            report.adopted,
            report.refused,
            report.tracked
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(dir: Dir, tcp_state: u8) -> Candidate {
        Candidate {
            proto: 6,
            dir,
            local: "192.0.2.1:40000".parse().unwrap(),
            remote: "198.51.100.7:443".parse().unwrap(),
            tcp_state,
        }
    }

    #[test]
    fn an_adopted_flow_is_keyed_from_its_true_first_packet() {
        let out = cand(Dir::Egress, tcp::ESTABLISHED);
        let (key, table, e) = flow_of(&out, 3, 9, 100).expect("tracked");
        let (want, src_lo) = ct_key(4, 6, &addr16(out.local.ip()), 40000, &addr16(out.remote.ip()), 443);
        assert_eq!(key, want);
        assert_eq!(e.initiator_lo, u8::from(src_lo));
        assert_eq!((table, e.state, e.rule, e.policy_seq), (CtTable::Established, CT_TCP_ESTABLISHED, 3, 9));
        assert_eq!(e.origin, Dir::Egress.datapath() as u8);
        assert_eq!(e.flags, CT_F_ADOPTED | CT_F_SEEN_REPLY);
        // The same sockets the other way round: the peer opened it.
        let inb = Candidate { dir: Dir::Ingress, ..out };
        let (key2, _, e2) = flow_of(&inb, 3, 9, 100).expect("tracked");
        assert_eq!(key2, key, "one flow, one key");
        assert_ne!(e2.initiator_lo, e.initiator_lo);
        assert_eq!(e2.origin, Dir::Ingress.datapath() as u8);
    }

    #[test]
    fn socket_states_map_to_conntrack_states_and_tables() {
        let s = |dir, st| flow_of(&cand(dir, st), 0, 0, 0).map(|(_, t, e)| (t, e.state));
        assert_eq!(s(Dir::Egress, tcp::SYN_SENT), Some((CtTable::New, CT_TCP_SYN_SENT)));
        assert_eq!(s(Dir::Ingress, tcp::NEW_SYN_RECV), Some((CtTable::New, CT_TCP_SYN_RECV)));
        assert_eq!(s(Dir::Egress, tcp::FIN_WAIT2), Some((CtTable::Established, CT_TCP_FIN_ORIG)));
        assert_eq!(s(Dir::Ingress, tcp::FIN_WAIT1), Some((CtTable::Established, CT_TCP_FIN_REPLY)));
        assert_eq!(s(Dir::Ingress, tcp::CLOSE_WAIT), Some((CtTable::Established, CT_TCP_FIN_ORIG)));
        assert_eq!(s(Dir::Egress, tcp::LAST_ACK), Some((CtTable::Established, CT_TCP_CLOSING)));
        assert_eq!(s(Dir::Egress, tcp::LISTEN), None);
        let udp = Candidate { proto: 17, tcp_state: 0, ..cand(Dir::Egress, 0) };
        let (_, t, e) = flow_of(&udp, 0, 0, 0).expect("udp");
        assert_eq!((t, e.state, e.flags), (CtTable::New, CT_NEW, CT_F_ADOPTED), "not answered yet");
    }

    #[test]
    fn a_wildcard_listener_makes_a_connection_inbound() {
        let mut l = HashSet::new();
        l.insert((IpAddr::from([0u8; 4]), 22));
        assert!(has_listener(&l, "192.0.2.1".parse().unwrap(), 22));
        assert!(!has_listener(&l, "192.0.2.1".parse().unwrap(), 23));
        l.insert(("2001:db8::1".parse().unwrap(), 80));
        assert!(has_listener(&l, "2001:db8::1".parse().unwrap(), 80));
        assert!(!has_listener(&l, "2001:db8::2".parse().unwrap(), 80));
        assert_eq!(unmap("[::ffff:192.0.2.1]:80".parse().unwrap()), "192.0.2.1:80".parse().unwrap());
    }
}
