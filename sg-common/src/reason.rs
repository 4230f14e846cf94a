//! Verdict reasons: why the datapath passed or dropped a packet.
//!
//! Every packet leaves the programs through one exit that records exactly one reason in the
//! per-CPU counters (`SG_COUNTERS`). The action (pass or drop) is a fixed property of the
//! reason, so a counter name always tells what happened to the packet. Reason numbers are
//! stable: new reasons are appended, never renumbered (they index a map).

/// Traffic direction as seen from the protected host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Direction {
    /// Packets arriving on the interface (XDP program `sg_ingress`).
    Ingress = 0,
    /// Packets leaving through the interface (TC program `sg_egress`).
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pass,
    Drop,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
        }
    }
}

/// Room reserved in the counters map for reasons, per direction.
pub const MAX_REASONS: u32 = 64;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $action:ident, $label:literal; )+) => {
        /// Why a packet got its verdict. Stable numbers (they index `SG_COUNTERS`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Reason {
            $( $(#[$doc])* $name = $num, )+
        }

        impl Reason {
            /// Every reason, in number order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),+];

            /// The fixed action of this reason.
            #[inline(always)]
            pub const fn action(self) -> Action {
                match self { $(Reason::$name => Action::$action,)+ }
            }

            /// Short stable name, as printed by `sgctl status` (snake_case).
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$name => $label,)+ }
            }

            /// The reason with number `n`, if any.
            pub const fn from_u32(n: u32) -> Option<Reason> {
                match n { $($num => Some(Reason::$name),)+ _ => None }
            }
        }
    };
}

reasons! {
    /// Not an IP frame (ARP, LLDP, ...): security groups filter IP only.
    PassNonIp = 0, Pass, "pass_non_ip";
    /// IP packet accepted by the interface's default posture (`allow`).
    PostureAllow = 1, Pass, "posture_allow";
    /// IP packet dropped by the interface's default posture (`deny`).
    PostureDeny = 2, Drop, "posture_deny";
    /// The configuration map has no valid entry: fail closed.
    NoConfig = 3, Drop, "no_config";
    /// Frame shorter than an Ethernet header.
    EthTruncated = 4, Drop, "eth_truncated";
    /// A VLAN tag is cut off by the end of the frame.
    VlanTruncated = 5, Drop, "vlan_truncated";
    /// More VLAN tags than the parser walks (2).
    VlanTooDeep = 6, Drop, "vlan_too_deep";
    /// Frame too short for the fixed IPv4 header.
    Ipv4Truncated = 7, Drop, "ipv4_truncated";
    /// IPv4 header length (IHL) below 5 or beyond the end of the frame.
    Ipv4BadIhl = 8, Drop, "ipv4_bad_ihl";
    /// IPv4 total length smaller than the header or larger than the frame.
    Ipv4BadLength = 9, Drop, "ipv4_bad_length";
    /// IP version field does not match the EtherType.
    IpBadVersion = 10, Drop, "ip_bad_version";
    /// Frame too short for the fixed IPv6 header.
    Ipv6Truncated = 11, Drop, "ipv6_truncated";
    /// An IPv6 extension header is cut off by the end of the packet.
    Ipv6ExtTruncated = 12, Drop, "ipv6_ext_truncated";
    /// The IPv6 extension-header chain is longer than the parser walks.
    Ipv6ExtTooLong = 13, Drop, "ipv6_ext_too_long";
    /// IPv6 payload length larger than the frame.
    Ipv6BadLength = 14, Drop, "ipv6_bad_length";
    /// The TCP, UDP or ICMP header is cut off (in a packet that must carry it).
    L4Truncated = 15, Drop, "l4_truncated";
    /// TCP data offset below 5 or beyond the end of the packet.
    TcpBadDoff = 16, Drop, "tcp_bad_doff";
    /// The headers run beyond what the parser can address.
    HeadersTooLong = 17, Drop, "headers_too_long";
    /// A helper or map call failed in the datapath: fail closed.
    InternalError = 18, Drop, "internal_error";
    /// Allowed by a security-group rule (the first rule in file order that allows it is counted).
    RuleAllow = 19, Pass, "rule_allow";
    /// No security-group rule allows the packet (default deny).
    NoRule = 20, Drop, "no_rule";
    /// A non-first fragment whose first fragment was not accepted (or not seen, or too long ago).
    FragmentNoFirst = 21, Drop, "fragment_no_first";
    /// A packet of a tracked flow, from the side that opened it.
    CtEstablished = 22, Pass, "ct_established";
    /// A packet of a tracked flow, from the side that answered (the return path).
    CtReply = 23, Pass, "ct_reply";
    /// An ICMP error (unreachable, frag-needed, packet-too-big, time-exceeded) quoting a tracked flow.
    CtRelated = 24, Pass, "ct_related";
    /// A new flow could not be tracked (conntrack table full).
    CtFull = 25, Drop, "ct_full";
    /// A TCP packet with no tracked flow that is not a SYN (lone ACK, SYN-ACK...), and no
    /// rule allows it statelessly.
    TcpNotSyn = 26, Drop, "tcp_not_syn";
    /// An ICMP error whose quoted IP header or ports are cut short.
    IcmpQuoteTruncated = 27, Drop, "icmp_quote_truncated";
    /// IPv6 neighbour discovery (ICMPv6 133-137 with hop limit 255): passes unless the
    /// interface switched the implicit allowance off.
    ImplicitNdp = 28, Pass, "implicit_ndp";
    /// UDP length field does not match the datagram (or is below 8).
    UdpBadLength = 29, Drop, "udp_bad_length";
    /// IPv6 extension headers in an illegal order (hop-by-hop not first, repeated headers).
    Ipv6ExtBadOrder = 30, Drop, "ipv6_ext_bad_order";
    /// IPv6 routing header type 0 (deprecated by RFC 5095: source routing, amplification).
    Ipv6RoutingType0 = 31, Drop, "ipv6_routing_type0";
    /// An IPv4 first fragment too short to hold the whole transport header (RFC 1858).
    TinyFragment = 32, Drop, "tiny_fragment";
    /// A TCP fragment at offset 8 bytes, rewriting the TCP flags (RFC 1858 overlap attack).
    FragmentOverlap = 33, Drop, "fragment_overlap";
    /// An IPv6 first fragment without the whole header chain and transport header (RFC 7112).
    Ipv6IncompleteChain = 34, Drop, "ipv6_incomplete_chain";
    /// TCP flags no connection uses (SYN+FIN, SYN+RST, none, FIN+PSH+URG...) on a new flow.
    TcpBadFlags = 35, Drop, "tcp_bad_flags";
    /// A non-first fragment of a datagram whose first fragment was accepted.
    FragmentAllowed = 36, Pass, "fragment_allowed";
    /// DHCP client traffic (v4 68<->67, v6 546<->547), allowed implicitly unless switched off.
    ImplicitDhcp = 37, Pass, "implicit_dhcp";
    /// Denied by a deny entry of the interface's network ACL (counted on that entry).
    AclDeny = 38, Drop, "acl_deny";
    /// No entry of the interface's network ACL matches: its implicit final deny.
    AclDefault = 39, Drop, "acl_default";
    /// A TCP RST or FIN of a tracked flow outside the flow's sequence space (a blind reset,
    /// RFC 5961): it changes nothing in the flow.
    TcpSeqInvalid = 40, Drop, "tcp_seq_invalid";
    /// A packet arriving from outside with one of the interface's own addresses as its source
    /// (spoofed or looped): it creates no state.
    SrcIsLocal = 41, Drop, "src_is_local";
}

impl Reason {
    /// Reasons for packets the parser could not read (malformed, truncated, evasive): what
    /// the differential parse fuzzer compares with the reference parser.
    pub const fn is_malformed(self) -> bool {
        matches!(
            self,
            Reason::EthTruncated
                | Reason::VlanTruncated
                | Reason::VlanTooDeep
                | Reason::Ipv4Truncated
                | Reason::Ipv4BadIhl
                | Reason::Ipv4BadLength
                | Reason::IpBadVersion
                | Reason::Ipv6Truncated
                | Reason::Ipv6ExtTruncated
                | Reason::Ipv6ExtTooLong
                | Reason::Ipv6BadLength
                | Reason::L4Truncated
                | Reason::TcpBadDoff
                | Reason::HeadersTooLong
                | Reason::IcmpQuoteTruncated
                | Reason::UdpBadLength
                | Reason::Ipv6ExtBadOrder
                | Reason::Ipv6RoutingType0
                | Reason::TinyFragment
                | Reason::FragmentOverlap
                | Reason::Ipv6IncompleteChain
        )
    }
}

const _: () = assert!(Reason::ALL.len() as u32 <= MAX_REASONS);

/// Index into `SG_COUNTERS` for a direction and a reason.
#[inline(always)]
pub const fn counter_index(dir: Direction, reason: Reason) -> u32 {
    dir as u32 * MAX_REASONS + reason as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_dense() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "reason numbers must be dense and ordered");
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_u32(Reason::ALL.len() as u32), None);
    }

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            assert!(a.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn only_pass_reasons_pass() {
        let passing = [
            Reason::PassNonIp,
            Reason::PostureAllow,
            Reason::RuleAllow,
            Reason::CtEstablished,
            Reason::CtReply,
            Reason::CtRelated,
            Reason::ImplicitNdp,
            Reason::FragmentAllowed,
            Reason::ImplicitDhcp,
        ];
        for r in Reason::ALL {
            assert_eq!(r.action() == Action::Pass, passing.contains(r), "{}", r.name());
        }
    }

    #[test]
    fn counter_indices_do_not_overlap() {
        let last_ingress = counter_index(Direction::Ingress, *Reason::ALL.last().unwrap());
        assert!(last_ingress < counter_index(Direction::Egress, Reason::PassNonIp));
    }
}
