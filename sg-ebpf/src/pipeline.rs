//! The decision pipeline, read top-down: [`ingress`] (XDP) and [`egress`] (TC) read the
//! interface's config and parse the packet; [`decide`] then takes, in order:
//!
//! 1. non-first fragments: by their datagram's first fragment (`conntrack::later_fragment`);
//! 2. the implicit allowances (IPv6 neighbour discovery, DHCP client traffic);
//! 3. at ingress, the network ACL (`policy::acl`), when the interface has one: stateless, every
//!    packet, replies of tracked flows included (see `decide_stateful` for where it is asked);
//! 4. RELATED: an ICMP error quoting a tracked flow;
//! 5. the tracked flow (conntrack), which decides every packet of a flow it holds (a TCP RST
//!    or FIN outside the flow's sequence space is dropped, `tcp_seq_invalid`);
//!    at ingress, a packet of no tracked flow whose source is one of the interface's own
//!    addresses is dropped (`src_is_local`; ICMP errors before RELATED already);
//! 6. TCP flag combinations no connection sends;
//! 7. the policy: the interface's posture, or its security groups (`policy::lookup`);
//! 8. at egress, the network ACL, for a packet steps 4-7 pass (before a new flow is tracked);
//! 9. an allowed flow start is tracked; an allowed first fragment admits the rest of its
//!    datagram.
//!
//! Every error on the way is a drop reason (fail closed); the verdict leaves through
//! `verdict::exit`.

use aya_ebpf::programs::{TcContext, XdpContext};
use sg_common::{
    Action, Direction, IfaceConfig, PacketSummary, Posture, Reason,
    config::{
        CONFIG_ACL, CONFIG_FLOW_LOG, CONFIG_MONITOR, CONFIG_NO_IMPLICIT_DHCP, CONFIG_NO_IMPLICIT_DHCPV6,
        CONFIG_NO_IMPLICIT_NDP, CONFIG_RECORD_PARSE, POLICY_GROUPS, POLICY_POSTURE,
    },
    conntrack::{acl_cache, acl_cached, tcp_flags_abusive},
    local::LocalAddr,
    packet::{
        FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PKT_FRAGMENT, PKT_HAS_L4,
        PKT_ICMP_ERROR, PKT_LATER_FRAGMENT,
    },
    policy::NO_RULE,
    stage::{STAGE_PARSED, STAGE_POLICY},
};

use crate::{
    conntrack,
    maps::{SG_ACL_HITS, SG_LOCAL},
    parse::{self, Packet},
    policy::{self, AclHit},
    stage,
    verdict::Verdict,
};

/// Ingress (XDP): the frame is complete and linear.
#[inline(always)]
pub fn ingress(ctx: &XdpContext, bytes: u64) -> Verdict {
    run(ctx, Direction::Ingress, bytes)
}

/// TC (egress, or ingress with `--ingress-hook tcx`): linearise the headers first (direct
/// packet access only sees the linear part of an skb), then the same pipeline.
/// `pkt` is `ctx` as the program reads it (`parse::IngressSkb` at ingress).
#[inline(always)]
pub fn tc(ctx: &TcContext, pkt: &impl Packet, dir: Direction, bytes: u64) -> Verdict {
    let want = core::cmp::min(ctx.len(), parse::MAX_HDR_BYTES as u32);
    if ((ctx.data_end() - ctx.data()) as u32) < want && ctx.pull_data(want).is_err() {
        return Verdict::of(Reason::InternalError);
    }
    run(pkt, dir, bytes)
}

/// Config, parse, decide. Once the config is read, the verdict carries its record, monitor and
/// flow-log flags (malformed packets too).
#[inline(always)]
fn run(pkt: &impl Packet, dir: Direction, bytes: u64) -> Verdict {
    let cfg = match parse::config() {
        Ok(cfg) => cfg,
        Err(r) => return Verdict::of(r),
    };
    let v = match parse::parse_packet(pkt) {
        Ok(Some(_)) if stage::stop_at(STAGE_PARSED) => Verdict::of(Reason::PostureAllow),
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

/// Decides an IP packet (steps 1 and 7 of the module documentation: fragments).
#[inline(always)]
fn decide(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary, bytes: u64) -> Result<Verdict, Reason> {
    if pkt.flags & PKT_LATER_FRAGMENT != 0 {
        return Ok(Verdict::of(conntrack::later_fragment(pkt)));
    }
    let v = decide_whole(cfg, dir, pkt, bytes)?;
    if pkt.flags & PKT_FRAGMENT != 0 && v.reason.action() == Action::Pass {
        conntrack::admit_fragments(pkt);
    }
    Ok(v)
}

/// Decides a whole packet or a first fragment (steps 2 to 9).
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
    let (v, start) = decide_stateful(cfg, dir, pkt, bytes, &Acl { cfg, dir, pkt })?;
    // `start` comes only with a verdict that passes (see decide_stateful): the packet starts
    // a flow.
    Ok(match start {
        Some(acl_first) => conntrack::create(cfg, dir, pkt, v, bytes, acl_first),
        None => v,
    })
}

/// Steps 3 to 8: the ACL with RELATED, the tracked flow, TCP flags and the policy. With a
/// verdict of the policy that passes, `Some(acl_first)`: the packet starts a flow, tracked
/// once the egress ACL let it, whose entry caches the ACL's allow of it (`acl_first`).
///
/// The ACL decides every packet, at ingress before the rest and at egress after it. Where it
/// is asked changes no verdict: for an ICMP error after RELATED (a lookup without effects);
/// for a packet of a tracked flow between conntrack's lookup and update, once the packet is
/// known to be the flow's and before the entry changes (the allow is cached per side and ACL
/// epoch); otherwise at ingress before the TCP flag check, at egress after the policy passed
/// the packet.
#[inline(always)]
fn decide_stateful(
    cfg: &IfaceConfig,
    dir: Direction,
    pkt: &PacketSummary,
    bytes: u64,
    acl: &Acl<'_>,
) -> Result<(Verdict, Option<u64>), Reason> {
    let ingress = dir == Direction::Ingress;
    if ingress && pkt.flags & PKT_ICMP_ERROR != 0 && src_is_local(pkt) {
        return Ok((Verdict::of(Reason::SrcIsLocal), None));
    }
    if let Some(v) = conntrack::related(cfg, pkt) {
        return Ok((acl.drop(None)?.unwrap_or(v), None));
    }
    match conntrack::lookup(cfg, dir, pkt, &Policy(cfg))? {
        conntrack::Found::Decided(v) => return Ok((v, None)),
        conntrack::Found::Flow(mut flow) => {
            if let Some(v) = acl.drop(Some(flow.acl_cache()))? {
                return Ok((v, None));
            }
            return Ok((conntrack::update(cfg, pkt, bytes, flow), None));
        }
        conntrack::Found::New => {}
    }
    // Not a tracked flow's packet. One that arrives with one of the interface's own
    // addresses as its source is spoofed or looped: it must not start a flow (the host's own
    // later connection on that tuple would find it) nor reach the policy.
    if ingress && src_is_local(pkt) {
        return Ok((Verdict::of(Reason::SrcIsLocal), None));
    }
    // The ACL's allow of this packet, cached in the flow it may start (its first side).
    let mut first = 0;
    if ingress && let Some(v) = acl.drop(Some(&mut first))? {
        return Ok((v, None));
    }
    if pkt.proto == IPPROTO_TCP && tcp_flags_abusive(pkt.tcp_flags) {
        return Ok((Verdict::of(Reason::TcpBadFlags), None));
    }
    let v = match cfg.policy_mode {
        POLICY_POSTURE => Verdict::of(posture(cfg, dir)?),
        POLICY_GROUPS => groups(cfg, dir, pkt)?,
        _ => return Err(Reason::NoConfig),
    };
    if v.reason.action() == Action::Pass {
        if !ingress && let Some(d) = acl.drop(Some(&mut first))? {
            return Ok((d, None));
        }
        return Ok((v, (!stage::stop_at(STAGE_POLICY)).then_some(first)));
    }
    if conntrack::tcp_not_syn(pkt) {
        return Ok((Verdict::of(Reason::TcpNotSyn), None));
    }
    Ok((v, None))
}

/// Is the packet's source one of the interface's own addresses (`SG_LOCAL`)?
#[inline(always)]
fn src_is_local(pkt: &PacketSummary) -> bool {
    SG_LOCAL.get_ptr(LocalAddr { addr: pkt.src, family: pkt.family, _pad: [0; 3] }).is_some()
}

/// The interface's network ACL, for one packet.
struct Acl<'a> {
    cfg: &'a IfaceConfig,
    dir: Direction,
    pkt: &'a PacketSummary,
}

impl Acl<'_> {
    /// The ACL's verdict when it drops the packet (`None`: the ACL allows it, or the interface
    /// has none). Every entry's decision is counted in `SG_ACL_HITS`. With `cache` (the side's
    /// `CtEntry::acl_cache` of a tracked TCP or UDP flow, or the one a new flow's entry will
    /// start with), an allow cached under the current ACL epoch stands for the lookup, and an
    /// allow looked up is cached.
    #[inline(always)]
    fn drop(&self, cache: Option<&mut u64>) -> Result<Option<Verdict>, Reason> {
        let (cfg, pkt) = (self.cfg, self.pkt);
        if cfg.flags & CONFIG_ACL == 0 {
            return Ok(None);
        }
        // Read once: the lookup, the cache check and the stamp use the same two values (the
        // config may change under the program; see `acl_cached`).
        let (epoch, gen_) = (cfg.acl_epoch, cfg.active_gen & 1);
        let cache = if matches!(pkt.proto, IPPROTO_TCP | IPPROTO_UDP) { cache } else { None };
        if let Some(c) = &cache
            && let Some(slot) = acl_cached(**c, epoch, gen_)
        {
            count_acl_hit(slot);
            return Ok(None);
        }
        let peer = peer_words(self.dir, pkt);
        let hit = policy::acl(gen_, self.dir, pkt.family, pkt.proto, &peer, policy::key_low16(pkt))?;
        let (slot, drop) = match hit {
            AclHit::Allow(slot) => (slot, false),
            AclHit::Deny(slot) => (slot, true),
            AclHit::Default => return Ok(Some(Verdict::of(Reason::AclDefault))),
        };
        count_acl_hit(slot);
        if drop {
            return Ok(Some(Verdict { acl_slot: slot, ..Verdict::of(Reason::AclDeny) }));
        }
        if let Some(c) = cache {
            *c = acl_cache(epoch, slot);
        }
        Ok(None)
    }
}

/// One more packet the ACL entry with this slot decided.
#[inline(always)]
fn count_acl_hit(slot: u32) {
    if let Some(h) = SG_ACL_HITS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, valid for the program's run; no concurrent writer on this CPU.
        unsafe { *h += 1 };
    }
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

/// The interface's posture for `dir` (posture mode).
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

/// The interface's policy, as conntrack may ask it (`conntrack::Recheck`): would it allow a
/// packet? `Some(rule slot)` if so (`NO_RULE` for a posture).
struct Policy<'a>(&'a IfaceConfig);

impl conntrack::Recheck for Policy<'_> {
    #[inline(always)]
    fn allows(
        &self,
        dir: Direction,
        family: u8,
        proto: u8,
        peer: &[u64; 2],
        low16: u16,
    ) -> Result<Option<u32>, Reason> {
        let cfg = self.0;
        if cfg.policy_mode == POLICY_POSTURE {
            return Ok(match posture(cfg, dir)? {
                Reason::PostureAllow => Some(NO_RULE),
                _ => None,
            });
        }
        policy::lookup(cfg.active_gen & 1, dir, family, proto, peer, low16)
    }
}

/// The peer a rule or an ACL entry matches: the source of ingress packets, the destination of
/// egress packets (as address words).
#[inline(always)]
fn peer_words(dir: Direction, pkt: &PacketSummary) -> [u64; 2] {
    match dir {
        Direction::Ingress => parse::src_words(pkt),
        Direction::Egress => parse::dst_words(pkt),
    }
}

/// Security groups: the first rule allowing the packet, or `no_rule`.
#[inline(always)]
fn groups(cfg: &IfaceConfig, dir: Direction, pkt: &PacketSummary) -> Result<Verdict, Reason> {
    let peer = peer_words(dir, pkt);
    Ok(match policy::lookup(cfg.active_gen & 1, dir, pkt.family, pkt.proto, &peer, policy::key_low16(pkt))? {
        Some(slot) => Verdict::by_rule(Reason::RuleAllow, slot),
        None => Verdict::of(Reason::NoRule),
    })
}
