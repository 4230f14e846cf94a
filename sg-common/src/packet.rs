//! What the parser extracts from a packet.
//!
//! The datapath fills a `PacketSummary` for every IP packet; with `CONFIG_RECORD_PARSE` set it
//! also stores it in `SG_LAST_PARSE`, so tests can check that the kernel parsed what they built
//! (ports behind VLAN tags, IPv4 options, IPv6 extension headers).

/// `PacketSummary::flags`: the packet is an IP fragment (MF set or offset > 0).
pub const PKT_FRAGMENT: u8 = 1 << 0;
/// `PacketSummary::flags`: a non-first fragment (offset > 0): no L4 header in it.
pub const PKT_LATER_FRAGMENT: u8 = 1 << 1;
/// `PacketSummary::flags`: `sport`/`dport` (or ICMP type/code) were read.
pub const PKT_HAS_L4: u8 = 1 << 2;
/// `PacketSummary::flags`: an ICMP error (v4 unreachable/time-exceeded, v6 unreachable/
/// packet-too-big/time-exceeded) whose quoted header is in the `inner_*` fields.
pub const PKT_ICMP_ERROR: u8 = 1 << 3;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
/// The Mobility Header: an upper-layer protocol for Linux (and IANA lists it among the
/// extension headers, but no header follows it that a host would deliver): judged as itself.
pub const IPPROTO_MH: u8 = 135;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// VLAN tags the parser walks; a frame with more is dropped (`vlan_too_deep`).
pub const MAX_VLAN_TAGS: u32 = 2;
/// IPv6 extension headers the parser walks; a longer chain is dropped (`ipv6_ext_too_long`).
pub const MAX_IPV6_EXT: u32 = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketSummary {
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// `PKT_*` bits.
    pub flags: u8,
    /// VLAN tags walked.
    pub vlan_depth: u8,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// IPv6 extension headers walked.
    pub ext_count: u8,
    /// Source port (TCP/UDP) or ICMP echo identifier, host order.
    pub sport: u16,
    /// Destination port (TCP/UDP), host order.
    pub dport: u16,
    /// Offset of the L3 header from the start of the frame.
    pub l3_off: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: u16,
    /// Fragment offset in 8-byte units.
    pub frag_off: u16,
    pub _pad0: u16,
    /// IPv4 identification or IPv6 fragment identification.
    pub frag_id: u32,
    /// Source address; IPv4 in the first 4 bytes, the rest zero.
    pub src: [u8; 16],
    /// Destination address; IPv4 in the first 4 bytes, the rest zero.
    pub dst: [u8; 16],
    /// Incremented by the datapath for every recorded summary (tests spot stale entries).
    pub seq: u64,
    /// Verdict reason (`Reason` as u32), filled when recorded.
    pub reason: u32,
    /// Rule id that allowed the packet, or `policy::NO_RULE`.
    pub rule: u32,
    /// ICMP errors (`PKT_ICMP_ERROR`): the quoted packet's ports (or echo id) and protocol.
    pub inner_sport: u16,
    pub inner_dport: u16,
    pub inner_proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub _pad1: [u8; 2],
    /// ICMP errors: the quoted packet's addresses.
    pub inner_src: [u8; 16],
    pub inner_dst: [u8; 16],
    /// TCP: sequence and acknowledgment numbers, host order.
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// TCP: the advertised window, unscaled, host order.
    pub tcp_win: u16,
    /// TCP: payload bytes (the datagram after the TCP header).
    pub tcp_len: u16,
    /// TCP SYN: the window scale option's shift (`conntrack::WSCALE_NONE` without one).
    pub tcp_wscale: u8,
    pub _pad2: [u8; 3],
}

const _: () = assert!(size_of::<PacketSummary>() == 128);
// The datapath clears and fills the summary by 8-byte words (sg-ebpf parse.rs).
const _: () = assert!(
    core::mem::offset_of!(PacketSummary, src) == 24
        && core::mem::offset_of!(PacketSummary, dst) == 40
        && core::mem::offset_of!(PacketSummary, seq) == 56
        && core::mem::offset_of!(PacketSummary, inner_sport) == 72
        && core::mem::offset_of!(PacketSummary, tcp_seq) == 112
        && align_of::<PacketSummary>() == 8
);

crate::impl_pod!(PacketSummary);
