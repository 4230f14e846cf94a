//! Connection tracking in the datapath. Layouts, states and timeouts: `sg_common::conntrack`.
//!
//! Per packet: an ICMP error quoting a tracked flow is RELATED; otherwise [`lookup`] of the
//! normalised key in `SG_CT` (flows that saw both directions), then in `SG_CT_NEW` (LRU, flows
//! not answered yet), which finds the packet's flow (an expired entry is deleted and the
//! packet is new), then, once the pipeline has asked the network ACL, [`update`] records the
//! packet in the entry (state, counters, last seen) and decides it. New packets go to the policy;
//! when it allows a flow start (TCP SYN, UDP, ICMP echo request, other protocols) the flow is
//! created in `SG_CT_NEW`; it moves to `SG_CT` once both directions are seen.
//!
//! Conntrack does not read the rules: when a `--revoke` apply asks that a flow be checked
//! again, the pipeline passes in the question it may ask ([`Recheck`]); the network ACL is
//! asked by the pipeline itself, between lookup and update.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::{bpf_for_each_map_elem, bpf_map_delete_elem},
};
use sg_common::{
    Direction, IfaceConfig, PacketSummary, Reason,
    config::CONFIG_FLOW_LOG,
    conntrack::{
        CT_F_SEEN_REPLY, CT_NEW, CT_STREAM, CT_TCP_CLOSED, CT_TCP_CLOSING, CT_TCP_SYN_SENT, CtEntry, CtKey,
        FRAG_LIFETIME_NS, FragEntry, FragKey, TCP_ACK, TCP_SYN, TcpSeg, WSCALE_NONE, addr_words, ct_key,
        echo_fits, joins_established, seen_offset, seen_slot, tcp_next, tcp_seq_acceptable, tcp_seq_learn,
    },
    flowlog::{END_EXPIRED, END_REUSED, END_REVOKED},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PKT_ICMP_ERROR},
    policy::slot_rule,
    stage::{STAGE_CT_FOUND, STAGE_CT_KEYED, STAGE_NEW_KEYED},
};

use aya_ebpf::maps::{HashMap, LruHashMap};

use crate::{
    clock::now_ns,
    maps::{SG_CLOCK, SG_CT, SG_CT_NEW, SG_CT_SEEN, SG_FRAGS},
    parse, stage,
    verdict::Verdict,
};

/// The question conntrack may ask the policy: would it allow a packet (direction, family,
/// protocol, peer address as words, flow-key low bits)? `Some(rule slot)` if so. Asked of a flow allowed
/// before a `--revoke` apply, with the flow's first packet. (A trait, not a closure: closures
/// are not inlined, and BPF calls cannot take this many arguments.)
pub trait Recheck {
    fn allows(
        &self,
        dir: Direction,
        family: u8,
        proto: u8,
        peer: &[u64; 2],
        low16: u16,
    ) -> Result<Option<u32>, Reason>;
}

/// The two flow tables, behind one interface.
trait CtMap {
    fn entry(&self, key: &CtKey) -> Option<*mut CtEntry>;
    /// Removes the flow; true when this call removed it.
    fn delete(&self, key: &CtKey) -> bool;
}

macro_rules! impl_ct_map {
    ($($map:ident),+) => {
        $(
            impl CtMap for $map<CtKey, CtEntry> {
                #[inline(always)]
                fn entry(&self, key: &CtKey) -> Option<*mut CtEntry> {
                    self.get_ptr_mut(key)
                }
                #[inline(always)]
                fn delete(&self, key: &CtKey) -> bool {
                    self.remove(key).is_ok()
                }
            }
        )+
    };
}

impl_ct_map!(HashMap, LruHashMap);

/// What [`lookup`] found for a packet.
pub enum Found {
    /// No tracked flow's packet (none, expired, revoked, a new TCP connection on a closed
    /// one's ports, the flow's tuple the wrong way, a peer's own echo request): a new packet.
    New,
    /// Decided by its flow without being counted (a blind RST or FIN; a benchmark stop).
    Decided(Verdict),
    /// A packet of this flow, not yet recorded: the pipeline asks the network ACL, then
    /// [`update`].
    Flow(Tracked),
}

/// A packet's tracked flow, as [`lookup`] found it.
pub struct Tracked {
    e: *mut CtEntry,
    /// In `SG_CT` (answered); else in `SG_CT_NEW`. (The key is not carried: the stack is
    /// tight, and only the move to `SG_CT`, once per flow, needs it again.)
    established: bool,
    /// Presence-filter slot.
    slot: u32,
    /// Sent by the side that started the flow.
    from_initiator: bool,
    now: u64,
}

impl Tracked {
    /// The packet's side of the entry's network-ACL cache (`CtEntry::acl_cache`).
    #[inline(always)]
    pub fn acl_cache(&mut self) -> &mut u64 {
        // SAFETY: valid map value pointer for this program run (see `lookup_in`).
        unsafe { &mut (*self.e).acl_cache[usize::from(!self.from_initiator)] }
    }
}

/// Outcome of looking a packet up in one table.
enum In {
    /// Not in this table (or expired and deleted): try the next.
    Absent,
    Found(Found),
}

/// -EEXIST from a map insert with BPF_NOEXIST.
const EEXIST: i32 = -17;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Is this ICMP message an echo request or reply (the only tracked ICMP)?
#[inline(always)]
fn is_echo(pkt: &PacketSummary) -> bool {
    matches!(
        (pkt.proto, pkt.icmp_type),
        (IPPROTO_ICMP, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)
            | (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST | ICMPV6_ECHO_REPLY)
    )
}

/// The ports a flow key uses for this packet (ICMP echo: the identifier on both sides);
/// `None` for what is not tracked (ICMP other than echo).
#[inline(always)]
fn key_ports(pkt: &PacketSummary) -> Option<(u16, u16)> {
    match pkt.proto {
        IPPROTO_TCP | IPPROTO_UDP => Some((pkt.sport, pkt.dport)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if is_echo(pkt) => Some((pkt.sport, pkt.sport)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => None,
        _ => Some((0, 0)),
    }
}

/// The packet's flow key, whether its source is the key's `lo` endpoint, and the flow's
/// presence-filter slot; `None` for what is not tracked.
#[inline(always)]
fn key_of(pkt: &PacketSummary) -> Option<(CtKey, bool, u32)> {
    let (sport, dport) = key_ports(pkt)?;
    let (key, src_lo) = ct_key(pkt.family, pkt.proto, &pkt.src, sport, &pkt.dst, dport);
    Some((key, src_lo, slot_of(pkt, sport, dport)))
}

/// The presence-filter slot of the packet's flow, from the summary's addresses (as words).
#[inline(always)]
fn slot_of(pkt: &PacketSummary, sport: u16, dport: u16) -> u32 {
    seen_slot(pkt.proto, parse::src_words(pkt), sport, parse::dst_words(pkt), dport)
}

/// The byte of `slot` in `bank` of `SG_CT_SEEN`.
#[inline(always)]
fn seen_byte(bank: u32, slot: u32) -> Option<*mut u8> {
    let off = seen_offset(bank, slot);
    let word = SG_CT_SEEN.get_ptr_mut(off >> 3)?;
    Some(word.cast::<u8>().wrapping_add((off & 7) as usize))
}

/// Might a tracked flow have this slot? False only when both banks say no. A failed lookup of
/// the filter counts as "maybe" (the tables decide).
#[inline(always)]
fn maybe_tracked(slot: u32) -> bool {
    for bank in 0..2 {
        match seen_byte(bank, slot) {
            // SAFETY: a byte inside a map value, valid for this run; userspace writes bytes too.
            Some(b) if unsafe { core::ptr::read_volatile(b) } == 0 => {}
            _ => return true,
        }
    }
    false
}

/// Marks a flow's slot in both banks (after its insert: see `SG_CT_SEEN`).
#[inline(always)]
fn mark_tracked(slot: u32) {
    for bank in 0..2 {
        if let Some(b) = seen_byte(bank, slot) {
            // SAFETY: as above; a single byte store (other CPUs may store other bytes).
            unsafe { core::ptr::write_volatile(b, 1) };
        }
    }
}

/// RELATED: an ICMP error quoting a tracked flow, sent to the quoted packet's source.
#[inline(always)]
pub fn related(cfg: &IfaceConfig, pkt: &PacketSummary) -> Option<Verdict> {
    if pkt.flags & PKT_ICMP_ERROR == 0 || pkt.dst != pkt.inner_src {
        return None;
    }
    let (key, _) =
        ct_key(pkt.family, pkt.inner_proto, &pkt.inner_src, pkt.inner_sport, &pkt.inner_dst, pkt.inner_dport);
    let now = now_ns();
    let live = |e: Option<*mut CtEntry>| match e {
        // SAFETY: valid map value pointer for this program run.
        Some(e) => !cfg.ct_timeouts.expired(key.proto, unsafe { &*e }, now),
        None => false,
    };
    if live(SG_CT.entry(&key)) || live(SG_CT_NEW.entry(&key)) {
        return Some(Verdict::of(Reason::CtRelated));
    }
    None
}

/// The packet's tracked flow, if any, checked (direction, echo side, `--revoke`, TCP
/// sequence space) but not yet changed: a packet the network ACL then drops leaves the flow
/// as it was.
#[inline(always)]
pub fn lookup(
    cfg: &IfaceConfig,
    dir: Direction,
    pkt: &PacketSummary,
    recheck: &impl Recheck,
) -> Result<Found, Reason> {
    let Some((sport, dport)) = key_ports(pkt) else { return Ok(Found::New) };
    let slot = slot_of(pkt, sport, dport);
    if !maybe_tracked(slot) {
        // No flow with this slot was ever inserted (since the last rebuild): both lookups
        // would miss, so the key is not even built.
        return Ok(Found::New);
    }
    let (key, src_lo) = ct_key(pkt.family, pkt.proto, &pkt.src, sport, &pkt.dst, dport);
    if stage::stop_at(STAGE_CT_KEYED) {
        return Ok(Found::Decided(Verdict::of(Reason::CtEstablished)));
    }
    if let In::Found(f) = lookup_in(&SG_CT, true, cfg, dir, pkt, &key, src_lo, slot, recheck)? {
        return Ok(f);
    }
    match lookup_in(&SG_CT_NEW, false, cfg, dir, pkt, &key, src_lo, slot, recheck)? {
        In::Found(f) => Ok(f),
        In::Absent => Ok(Found::New),
    }
}

#[allow(clippy::too_many_arguments, reason = "inlined helper of lookup()")]
#[inline(always)]
fn lookup_in(
    map: &impl CtMap,
    established: bool,
    cfg: &IfaceConfig,
    dir: Direction,
    pkt: &PacketSummary,
    key: &CtKey,
    src_lo: bool,
    slot: u32,
    recheck: &impl Recheck,
) -> Result<In, Reason> {
    let Some(e) = map.entry(key) else { return Ok(In::Absent) };
    if established && stage::stop_at(STAGE_CT_FOUND) {
        return Ok(In::Found(Found::Decided(Verdict::of(Reason::CtEstablished))));
    }
    // The clock only once a flow is found (see `clock`).
    let now = now_ns();
    // SAFETY: valid map value pointer for this program run; concurrent updates of counters
    // from other CPUs may race (they are statistics).
    let entry = unsafe { &mut *e };
    if cfg.ct_timeouts.expired(key.proto, entry, now) {
        end(cfg, dir, map, key, entry, END_EXPIRED);
        return Ok(In::Absent);
    }
    let from_initiator = u8::from(src_lo) == entry.initiator_lo;
    let expected = if from_initiator { entry.origin } else { entry.origin ^ 1 };
    if dir as u8 != expected {
        // The flow's tuple in the wrong direction (spoofed or looped): not this flow.
        return Ok(In::Found(Found::New));
    }
    if matches!(key.proto, IPPROTO_ICMP | IPPROTO_ICMPV6) && !echo_fits(pkt.icmp_type, from_initiator) {
        // Request and reply share a key: only requests from the side that pinged and
        // replies from the pinged side are this flow's (a peer's own echo request is not).
        return Ok(In::Found(Found::New));
    }
    if (entry.policy_seq.wrapping_sub(cfg.revoke_seq as u32) as i32) < 0 {
        // Rules changed with --revoke since the flow was allowed: check it again.
        match revalidate(key, entry, recheck)? {
            Some(slot) => {
                entry.policy_seq = cfg.policy_seq as u32;
                entry.rule = slot_rule(slot);
            }
            None => {
                end(cfg, dir, map, key, entry, END_REVOKED);
                return Ok(In::Found(Found::New));
            }
        }
    }
    let tcp = key.proto == IPPROTO_TCP;
    if tcp
        && from_initiator
        && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && matches!(entry.state, CT_TCP_CLOSING | CT_TCP_CLOSED)
    {
        // A new connection on the ports of a closed one.
        end(cfg, dir, map, key, entry, END_REUSED);
        return Ok(In::Found(Found::New));
    }
    if tcp && !tcp_seq_acceptable(entry, usize::from(!from_initiator), &tcp_seg(pkt)) {
        // A blind RST or FIN: the flow stays as it was.
        return Ok(In::Found(Found::Decided(Verdict::of(Reason::TcpSeqInvalid))));
    }
    Ok(In::Found(Found::Flow(Tracked { e, established, slot, from_initiator, now })))
}

/// Records a packet of its tracked flow (sequence space learned, counters, last seen, state;
/// a flow answered for the first time moves to `SG_CT`) and decides it: `ct_established`
/// from the side that started the flow, `ct_reply` from the other.
#[expect(
    clippy::needless_pass_by_value,
    reason = "a found flow is recorded once: update takes lookup's answer"
)]
#[inline(always)]
pub fn update(cfg: &IfaceConfig, pkt: &PacketSummary, bytes: u64, flow: Tracked) -> Verdict {
    let Tracked { e, established, slot, from_initiator, now } = flow;
    // SAFETY: as in `lookup_in`.
    let e = unsafe { &mut *e };
    let tcp = pkt.proto == IPPROTO_TCP;
    let side = usize::from(!from_initiator);
    if tcp {
        tcp_seq_learn(e, side, &tcp_seg(pkt));
    }
    e.packets[side] += 1;
    e.bytes[side] += bytes;
    e.last_seen_ns = now;
    if !from_initiator && e.flags & CT_F_SEEN_REPLY == 0 {
        e.flags |= CT_F_SEEN_REPLY;
    }
    let state = if tcp {
        tcp_next(e.state, !from_initiator, pkt.tcp_flags)
    } else if !from_initiator {
        CT_STREAM
    } else {
        e.state
    };
    // Written only when it changes: packets of one flow run on several CPUs at once (A's ACK
    // of B's FIN from the softirq, A's own FIN from the application's CPU), and one that keeps
    // the state must not store back the value it read over another's change (the flow would
    // stay half-closed, under the established timeout).
    if state != e.state {
        e.state = state;
    }
    let reason = if from_initiator { Reason::CtEstablished } else { Reason::CtReply };
    if !established && joins_established(state, e.flags) {
        // Answered: move to the table that is never evicted. When it is full, this packet is
        // dropped and the table gives back what expired, for the flow's next packet (at most
        // one sweep per CPU per `REAP_INTERVAL_NS`); the flow stays in `SG_CT_NEW` meanwhile.
        let Some((sport, dport)) = key_ports(pkt) else { return Verdict::of(Reason::InternalError) };
        let (key, _) = ct_key(pkt.family, pkt.proto, &pkt.src, sport, &pkt.dst, dport);
        if SG_CT.insert(key, *e, u64::from(BPF_NOEXIST)).is_err() {
            reclaim(cfg, now);
            return Verdict::of(Reason::CtFull);
        }
        SG_CT_NEW.delete(&key);
        // Marked again after the move: a rebuild enumerating the tables meanwhile may have
        // read `SG_CT` before the insert and `SG_CT_NEW` after the delete, missing the flow
        // in the bank it was rebuilding.
        mark_tracked(slot);
    }
    Verdict::of(reason)
}

/// The shortest time between two sweeps of `SG_CT` on one CPU.
const REAP_INTERVAL_NS: u64 = 100_000_000;

/// What a sweep of `SG_CT` needs and counts (the callback's context, on the stack).
#[repr(C)]
struct Reap {
    now: u64,
    timeouts: sg_common::conntrack::CtTimeouts,
    freed: u64,
}

/// `bpf_for_each_map_elem`'s callback over `SG_CT`: deletes an expired flow. Returns 0 (go on).
#[inline(never)]
extern "C" fn reap_expired(map: *mut c_void, key: *mut c_void, value: *mut c_void, ctx: *mut c_void) -> u64 {
    // SAFETY: the helper passes this map's key and value and our context, valid for the call.
    let (k, e, r) = unsafe { (&*key.cast::<CtKey>(), &*value.cast::<CtEntry>(), &mut *ctx.cast::<Reap>()) };
    if r.timeouts.expired(k.proto, e, r.now) {
        // SAFETY: deleting the element the callback is at is allowed for hash maps.
        if unsafe { bpf_map_delete_elem(map, key) } == 0 {
            r.freed += 1;
        }
    }
    0
}

/// `SG_CT` is full: deletes its expired flows now, without waiting for userspace's sweep
/// (`sgctl conntrack gc`, the daemon's `--gc-interval`). At most once per CPU per
/// [`REAP_INTERVAL_NS`] (a sweep of a full default table costs a few milliseconds of this
/// CPU).
#[inline(always)]
fn reclaim(cfg: &IfaceConfig, now: u64) {
    let Some(c) = SG_CLOCK.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's entry of a per-CPU map, valid for the program's run.
    let c = unsafe { &mut *c };
    if c.reaped_ns != 0 && now.wrapping_sub(c.reaped_ns) < REAP_INTERVAL_NS {
        return;
    }
    c.reaped_ns = now;
    let t = &cfg.ct_timeouts;
    let w = |a: u32, b: u32| u64::from(a) | u64::from(b) << 32;
    sg_ct_reclaim(
        now,
        w(t.tcp_established, t.tcp_half_open),
        w(t.tcp_closing, t.udp),
        w(t.udp_stream, t.icmp),
        u64::from(t.other),
    );
}

/// The sweep of [`reclaim`] as a global function, which the verifier checks once on its own
/// (inline, it pushed `sg_ingress` past the verifier's limit). Arguments: the time, then the
/// interface's timeouts two to a word, in `CtTimeouts` order. Returns the flows deleted.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_ct_reclaim(now: u64, t01: u64, t23: u64, t45: u64, t6: u64) -> u64 {
    let (lo, hi) = (|w: u64| w as u32, |w: u64| (w >> 32) as u32);
    let mut r = Reap {
        now,
        timeouts: sg_common::conntrack::CtTimeouts {
            tcp_established: lo(t01),
            tcp_half_open: hi(t01),
            tcp_closing: lo(t23),
            udp: hi(t23),
            udp_stream: lo(t45),
            icmp: hi(t45),
            other: lo(t6),
            _pad: 0,
        },
        freed: 0,
    };
    // SAFETY: the map and the callback are this object's; the context lives for the call.
    unsafe {
        bpf_for_each_map_elem(
            core::ptr::addr_of!(SG_CT).cast_mut().cast(),
            reap_expired as *mut c_void,
            core::ptr::addr_of_mut!(r).cast(),
            0,
        );
    }
    r.freed
}

/// Deletes a flow the datapath ends; with flow logs on, its `EV_END` tells the daemon.
#[inline(always)]
fn end(cfg: &IfaceConfig, dir: Direction, map: &impl CtMap, key: &CtKey, e: &CtEntry, cause: u8) {
    if cfg.flags & CONFIG_FLOW_LOG != 0 {
        crate::flowlog::end_flow(dir, key, e, cause, || map.delete(key));
    } else {
        map.delete(key);
    }
}

/// Would the current policy allow this flow's first packet? `Some(rule slot)` if so.
#[inline(always)]
fn revalidate(key: &CtKey, e: &CtEntry, recheck: &impl Recheck) -> Result<Option<u32>, Reason> {
    let origin = if e.origin == Direction::Egress as u8 { Direction::Egress } else { Direction::Ingress };
    // The initiator and responder endpoints, from the normalised key.
    let (init, resp, resp_port) = if e.initiator_lo != 0 {
        (&key.addr_lo, &key.addr_hi, key.port_hi)
    } else {
        (&key.addr_hi, &key.addr_lo, key.port_lo)
    };
    // The remote end is the peer: the initiator of an ingress flow, the responder of an egress one.
    let peer = if origin == Direction::Ingress { init } else { resp };
    // The key of the flow's first packet: to the responder's port, or an echo request.
    let echo = if key.proto == IPPROTO_ICMP { ICMP_ECHO_REQUEST } else { ICMPV6_ECHO_REQUEST };
    let low16 = sg_common::policy::key_low16(key.family, key.proto, resp_port, echo, 0);
    recheck.allows(origin, key.family, key.proto, &addr_words(peer), low16)
}

/// The packet's TCP segment as conntrack reads it.
#[inline(always)]
fn tcp_seg(pkt: &PacketSummary) -> TcpSeg {
    TcpSeg {
        flags: pkt.tcp_flags,
        seq: pkt.tcp_seq,
        ack: pkt.tcp_ack,
        win: pkt.tcp_win,
        len: pkt.tcp_len,
        wscale: pkt.tcp_wscale,
    }
}

/// Does this allowed packet start a flow (and get tracked)?
#[inline(always)]
fn starts_flow(pkt: &PacketSummary) -> bool {
    match pkt.proto {
        IPPROTO_TCP => pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            matches!(pkt.icmp_type, ICMP_ECHO_REQUEST | ICMPV6_ECHO_REQUEST) && is_echo(pkt)
        }
        _ => true,
    }
}

/// Tracks a packet the policy allowed (`v`), if it starts a flow. A packet that does not
/// start a flow (TCP without SYN, echo reply...) passes untracked.
///
/// `acl_first`: the network ACL's allow of this packet (`CtEntry::acl_cache`, 0 for none), the
/// new entry's cache for the initiator's side.
#[inline(always)]
pub fn create(
    cfg: &IfaceConfig,
    dir: Direction,
    pkt: &PacketSummary,
    v: Verdict,
    bytes: u64,
    acl_first: u64,
) -> Verdict {
    if !starts_flow(pkt) {
        return v;
    }
    let Some((key, src_lo, slot)) = key_of(pkt) else { return v };
    if stage::stop_at(STAGE_NEW_KEYED) {
        return v;
    }
    let now = now_ns();
    let mut entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        packets: [1, 0],
        bytes: [bytes, 0],
        acl_cache: [acl_first, 0],
        rule: slot_rule(v.rule_slot),
        policy_seq: cfg.policy_seq as u32,
        state: if pkt.proto == IPPROTO_TCP { CT_TCP_SYN_SENT } else { CT_NEW },
        origin: dir as u8,
        initiator_lo: u8::from(src_lo),
        flags: 0,
        seq_end: [0; 2],
        max_win: [0; 2],
        wscale: [WSCALE_NONE; 2],
        seq_flags: 0,
        _pad: 0,
    };
    if pkt.proto == IPPROTO_TCP {
        // The initiator's SYN: its sequence space and window scale.
        tcp_seq_learn(&mut entry, 0, &tcp_seg(pkt));
    }
    match SG_CT_NEW.insert(key, entry, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            // After the insert, never before: a bank rebuild that zeroes this byte in between
            // still finds the flow in the table and marks it again.
            mark_tracked(slot);
            Verdict { new_flow: true, ..v }
        }
        // The tuple exists in the other direction's sense (see `track`): pass untracked, and
        // make sure the filter knows the flow.
        Err(EEXIST) => {
            mark_tracked(slot);
            v
        }
        Err(_) => Verdict::of(Reason::CtFull),
    }
}

/// A new TCP packet that is not a plain SYN.
#[inline(always)]
pub fn tcp_not_syn(pkt: &PacketSummary) -> bool {
    pkt.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN
}

#[inline(always)]
fn frag_key(pkt: &PacketSummary) -> FragKey {
    FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

/// A first fragment was accepted: admit the rest of its datagram for a short while.
#[inline(always)]
pub fn admit_fragments(pkt: &PacketSummary) {
    let e = FragEntry { expires_ns: now_ns() + FRAG_LIFETIME_NS };
    let _ = SG_FRAGS.insert(frag_key(pkt), e, 0);
}

/// A non-first fragment passes only when the first fragment of its datagram (source,
/// destination, protocol, id) was accepted, recently.
#[inline(always)]
pub fn later_fragment(pkt: &PacketSummary) -> Reason {
    match SG_FRAGS.get_ptr(frag_key(pkt)) {
        // SAFETY: valid map value pointer for this program run.
        Some(e) if unsafe { (*e).expires_ns } > now_ns() => Reason::FragmentAllowed,
        _ => Reason::FragmentNoFirst,
    }
}
