//! Policy decision for a parsed IP packet: the interface's posture, or its security groups
//! (LPM trie on the peer address, then a bounded binary search of the compiled port set).

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    Action, Direction, IfaceConfig, PacketSummary, Posture, Reason,
    config::{
        CONFIG_FLOW_LOG, CONFIG_MONITOR, CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6,
        CONFIG_NO_IMPLICIT_NDP, CONFIG_RECORD_PARSE, POLICY_GROUPS, POLICY_POSTURE,
    },
    conntrack::tcp_flags_abusive,
    packet::{
        FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PKT_FRAGMENT,
        PKT_HAS_L4, PKT_LATER_FRAGMENT,
    },
    policy::{
        LPM_HDR_BITS, MAX_RULES, MAX_SEARCH_STEPS, NO_RULE, PortSetRef, SEGMENTS_PER_GEN, flow_key,
        lpm_data_v4, lpm_data_v6,
    },
};

use crate::{
    conntrack,
    maps::{SG_LPM_V4, SG_LPM_V6, SG_SEGMENTS},
    parse::{self, Packet},
};

/// A decision: its reason, and the rule-hit slot (`gen * MAX_RULES + rule`) or `NO_RULE`.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub reason: Reason,
    pub rule_slot: u32,
    /// Record the packet's summary in `SG_LAST_PARSE` (`CONFIG_RECORD_PARSE`, tests).
    pub record: bool,
    /// Monitor mode (`CONFIG_MONITOR`): the verdict is counted, but a drop passes.
    pub monitor: bool,
    /// Flow logs on (`CONFIG_FLOW_LOG`): the exit emits the event of this verdict, if any.
    pub flow_log: bool,
    /// This packet started a tracked flow (an `EV_ACCEPT` event).
    pub new_flow: bool,
}

impl Verdict {
    #[inline(always)]
    pub const fn of(reason: Reason) -> Self {
        Verdict {
            reason,
            rule_slot: NO_RULE,
            record: false,
            monitor: false,
            flow_log: false,
            new_flow: false,
        }
    }
}

/// The whole pipeline for one frame: config, parse, decide. Every error is a drop reason;
/// once the config is read, the verdict carries its record flag (malformed packets too).
#[inline(always)]
pub fn run(pkt: &impl Packet, dir: Direction, bytes: u64) -> Verdict {
    let cfg = match parse::config() {
        Ok(cfg) => cfg,
        Err(r) => return Verdict::of(r),
    };
    let v = match parse::parse_packet(pkt) {
        Ok(Some(p)) => decide(cfg, dir, p, bytes).unwrap_or_else(Verdict::of),
        Ok(None) => Verdict::of(Reason::PassNonIp),
        Err(r) => Verdict::of(r),
    };
    Verdict {
        record: cfg.flags & CONFIG_RECORD_PARSE != 0,
        monitor: cfg.flags & CONFIG_MONITOR != 0,
        flow_log: cfg.flags & CONFIG_FLOW_LOG != 0,
        ..v
    }
}

/// Decides an IP packet: implicit allowances, then non-first fragments (by their first
/// fragment), RELATED ICMP, the tracked flow, TCP flag abuse, then the policy (posture or
/// security groups); an allowed flow start is tracked, an allowed first fragment admits the
/// rest of its datagram.
#[inline(always)]
pub fn decide(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary, bytes: u64) -> Result<Verdict, Reason> {
    if pkt.flags & PKT_LATER_FRAGMENT != 0 {
        return Ok(Verdict::of(conntrack::later_fragment(pkt)));
    }
    let v = decide_whole(cfg, dir, pkt, bytes)?;
    if pkt.flags & PKT_FRAGMENT != 0 && v.reason.action() == Action::Pass {
        conntrack::admit_fragments(pkt);
    }
    Ok(v)
}

#[inline(always)]
fn decide_whole(
    cfg: &IfaceConfig,
    dir: Direction,
    pkt: &PacketSummary,
    bytes: u64,
) -> Result<Verdict, Reason> {
    if is_ndp(cfg, pkt) {
        return Ok(Verdict::of(Reason::ImplicitNdp));
    }
    if is_dhcp_client(cfg, dir, pkt) {
        return Ok(Verdict::of(Reason::ImplicitDhcp));
    }
    if let Some(v) = conntrack::related(cfg, pkt) {
        return Ok(v);
    }
    if let Some(v) = conntrack::track(cfg, dir, pkt, bytes)? {
        return Ok(v);
    }
    if pkt.proto == IPPROTO_TCP && tcp_flags_abusive(pkt.tcp_flags) {
        return Ok(Verdict::of(Reason::TcpBadFlags));
    }
    let v = match cfg.policy_mode {
        POLICY_POSTURE => Verdict::of(posture(cfg, dir)?),
        POLICY_GROUPS => groups(cfg, dir, pkt)?,
        _ => return Err(Reason::NoConfig),
    };
    if v.reason.action() == Action::Pass {
        return Ok(conntrack::create(cfg, dir, pkt, v, bytes));
    }
    if conntrack::tcp_not_syn(pkt) {
        return Ok(Verdict::of(Reason::TcpNotSyn));
    }
    Ok(v)
}

/// DHCP client traffic: replies from a server (v4 67 -> 68, v6 547 -> 546) at ingress, the
/// client's messages (68 -> 67, 546 -> 547) at egress. Offers may be broadcast, so no 5-tuple
/// could track them.
#[inline(always)]
fn is_dhcp_client(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary) -> bool {
    if pkt.proto != IPPROTO_UDP || pkt.flags & PKT_HAS_L4 == 0 {
        return false;
    }
    let (server, client, off) = if pkt.family == FAMILY_IPV4 {
        (67, 68, CONFIG_NO_IMPLICIT_DHCP)
    } else {
        (547, 546, CONFIG_NO_IMPLICIT_DHCPV6)
    };
    if cfg.flags & off != 0 {
        return false;
    }
    match dir {
        Direction::Ingress => pkt.sport == server && pkt.dport == client,
        Direction::Egress => pkt.sport == client && pkt.dport == server,
    }
}

/// IPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect) as
/// RFC 4861 requires it: hop limit 255, so it cannot come from off-link.
#[inline(always)]
fn is_ndp(cfg: &IfaceConfig, pkt: &PacketSummary) -> bool {
    cfg.flags & CONFIG_NO_IMPLICIT_NDP == 0
        && pkt.family == FAMILY_IPV6
        && pkt.proto == IPPROTO_ICMPV6
        && pkt.flags & PKT_HAS_L4 != 0
        && (133..=137).contains(&pkt.icmp_type)
        && pkt.ttl == 255
}

#[inline(always)]
fn posture(cfg: &IfaceConfig, dir: Direction) -> Result<Reason, Reason> {
    let posture = match dir {
        Direction::Ingress => cfg.ingress_posture,
        Direction::Egress => cfg.egress_posture,
    };
    match Posture::from_u8(posture) {
        Some(Posture::Allow) => Ok(Reason::PostureAllow),
        Some(Posture::Deny) => Ok(Reason::PostureDeny),
        None => Err(Reason::NoConfig),
    }
}

/// The 16 low bits of the flow key: destination port (TCP/UDP), ICMP type and code (ICMP on
/// IPv4, ICMPv6 on IPv6), 0 for any other protocol.
#[inline(always)]
fn key_low16(pkt: &PacketSummary) -> u16 {
    match (pkt.proto, pkt.family) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => pkt.dport,
        (IPPROTO_ICMP, FAMILY_IPV4) | (IPPROTO_ICMPV6, FAMILY_IPV6) => {
            (u16::from(pkt.icmp_type) << 8) | u16::from(pkt.icmp_code)
        }
        _ => 0,
    }
}

#[inline(always)]
fn port_set(gen_: u8, dir: Direction, family: u8, peer: &[u8; 16]) -> Option<PortSetRef> {
    if family == FAMILY_IPV4 {
        let addr = [peer[0], peer[1], peer[2], peer[3]];
        let key = Key::new(LPM_HDR_BITS + 32, lpm_data_v4(gen_, dir as u32, addr));
        SG_LPM_V4.get(&key).copied()
    } else {
        let key = Key::new(LPM_HDR_BITS + 128, lpm_data_v6(gen_, dir as u32, *peer));
        SG_LPM_V6.get(&key).copied()
    }
}

/// The rule-hit slot of the first rule allowing (`dir`, `proto`, flow-key low bits `low16`)
/// with `peer` as the remote address, under the interface's policy; `None` when none does.
#[inline(always)]
pub fn allowed(
    cfg: &IfaceConfig,
    dir: Direction,
    family: u8,
    proto: u8,
    peer: &[u8; 16],
    low16: u16,
) -> Result<Option<u32>, Reason> {
    if cfg.policy_mode == POLICY_POSTURE {
        return Ok(match posture(cfg, dir)? {
            Reason::PostureAllow => Some(NO_RULE),
            _ => None,
        });
    }
    let gen_ = cfg.active_gen & 1;
    let Some(set) = port_set(gen_, dir, family, peer) else {
        return Ok(None);
    };
    if set.count > SEGMENTS_PER_GEN || set.start > SEGMENTS_PER_GEN - set.count {
        return Err(Reason::InternalError);
    }
    let key = flow_key(proto, low16);
    let base = u32::from(gen_) * SEGMENTS_PER_GEN;
    let mut lo = set.start;
    let mut hi = set.start + set.count;
    for _ in 0..MAX_SEARCH_STEPS {
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let seg = SG_SEGMENTS.get(base + mid).ok_or(Reason::InternalError)?;
        if key < seg.lo {
            hi = mid;
        } else if key > seg.hi {
            lo = mid + 1;
        } else {
            if seg.rule >= MAX_RULES {
                return Err(Reason::InternalError);
            }
            return Ok(Some(u32::from(gen_) * MAX_RULES + seg.rule));
        }
    }
    Ok(None)
}

#[inline(always)]
fn groups(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary) -> Result<Verdict, Reason> {
    // The peer: source address of ingress packets, destination of egress packets.
    let peer = match dir {
        Direction::Ingress => &pkt.src,
        Direction::Egress => &pkt.dst,
    };
    Ok(match allowed(cfg, dir, pkt.family, pkt.proto, peer, key_low16(pkt))? {
        Some(slot) => Verdict { rule_slot: slot, ..Verdict::of(Reason::RuleAllow) },
        None => Verdict::of(Reason::NoRule),
    })
}
