//! The flow key both layers match on (`sg_common::policy::flow_key`): the range a rule or an
//! ACL entry covers, and the key of a packet as the reference model sees it ([`Probe`]). The
//! compiler, the reference model and the network ACL's first-match all use these, and nothing
//! here uses them.

use std::net::IpAddr;

use sg_common::{
    packet::{FAMILY_IPV4, FAMILY_IPV6},
    policy::flow_key,
};

use crate::{Ports, Proto};

/// The flow-key range a rule allows (see `sg_common::policy::flow_key`).
pub fn key_range(proto: Proto, ports: Ports) -> (u32, u32) {
    match (proto, ports) {
        (Proto::All, _) => (0, 0x00ff_ffff),
        (Proto::Num(p), Ports::All | Ports::Icmp { icmp_type: None, .. }) => {
            (flow_key(p, 0), flow_key(p, 0xffff))
        }
        (Proto::Num(p), Ports::Range(lo, hi)) => (flow_key(p, lo), flow_key(p, hi)),
        (Proto::Num(p), Ports::Icmp { icmp_type: Some(t), code: None }) => {
            let base = u16::from(t) << 8;
            (flow_key(p, base), flow_key(p, base | 0xff))
        }
        (Proto::Num(p), Ports::Icmp { icmp_type: Some(t), code: Some(c) }) => {
            let k = flow_key(p, (u16::from(t) << 8) | u16::from(c));
            (k, k)
        }
    }
}

/// Whether everything `(proto, ports)` matches, `(o_proto, o_ports)` matches too: the one
/// test of match-space coverage, for rules and network ACL entries alike (`audit`).
pub fn key_range_covers(o_proto: Proto, o_ports: Ports, proto: Proto, ports: Ports) -> bool {
    let (olo, ohi) = key_range(o_proto, o_ports);
    let (lo, hi) = key_range(proto, ports);
    olo <= lo && hi <= ohi
}

/// What the model needs of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Destination port (TCP, UDP).
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// A fragment with a non-zero offset.
    pub later_fragment: bool,
}

/// The 16 low bits of the probe's flow key (the datapath's own definition).
pub fn key_low16(p: &Probe) -> u16 {
    let family = if p.src.is_ipv4() { FAMILY_IPV4 } else { FAMILY_IPV6 };
    sg_common::policy::key_low16(family, p.proto, p.dport, p.icmp_type, p.icmp_code)
}
