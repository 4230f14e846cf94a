//! Connection tracking: key and entry layouts, the TCP state machine and idle timeouts.
//! Pure logic shared by the datapath and userspace, unit-tested on the host.
//!
//! A flow is stored once, under a *normalised* key: its two endpoints (address, port) in a
//! fixed order (lower first), so one lookup finds the flow from either direction (cilium's
//! reply-then-forward lookups collapsed into one probe). The entry records which endpoint
//! initiated the flow and in which direction (ingress or egress) it started: a packet from the
//! initiator must travel in that direction, a packet from the responder in the other.
//!
//! Two maps hold flows (one instance per interface, so the interface is implicit):
//! `SG_CT_NEW`, an LRU hash, for flows that have not seen a reply (TCP handshakes, UDP and
//! other protocols one way, ICMP echo); `SG_CT`, a plain hash without preallocation and without
//! eviction, for flows that saw both directions (TCP established or closing, UDP streams).
//! A flood of new flows can only churn the LRU; established flows are never evicted, and when
//! `SG_CT` is full a flow that would join it is dropped (`ct_full`) instead.

/// Key of a flow. `lo`/`hi` are the endpoints in normalised order (see [`ct_key`]). For ICMP
/// echo both ports are the echo identifier; for protocols without ports both are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub addr_lo: [u8; 16],
    pub addr_hi: [u8; 16],
    pub port_lo: u16,
    pub port_hi: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<CtKey>() == 40);

/// A tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) at creation.
    pub created_ns: u64,
    /// Same clock, last packet of the flow.
    pub last_seen_ns: u64,
    /// Packets from the initiator (`[0]`) and from the responder (`[1]`).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// The network ACL's last allow of each side's packets (`[0]` the initiator's, `[1]` the
    /// responder's), for TCP and UDP flows: [`acl_cache`] of the ACL epoch and the allowing
    /// entry's slot, 0 for none. A side's packets all have the same peer address, protocol and
    /// destination port, which is all an ACL entry matches, so the allow holds while the ACL
    /// epoch (`IfaceConfig::acl_epoch`, new with every generation flip) stays: the side's later
    /// packets count on the entry without the ACL's lookup.
    pub acl_cache: [u64; 2],
    /// Rule id that allowed the flow (in rule set `policy_seq`), or `policy::NO_RULE`.
    pub rule: u32,
    /// Rule set that allowed (or last re-validated) the flow; compared with
    /// `IfaceConfig::revoke_seq` to end flows an apply with `--revoke` no longer allows.
    pub policy_seq: u32,
    /// `CT_*` state.
    pub state: u8,
    /// `Direction` (as u8) of the flow's first packet.
    pub origin: u8,
    /// 1 when the initiator is the key's `lo` endpoint.
    pub initiator_lo: u8,
    /// `CT_F_*` bits.
    pub flags: u8,
    /// TCP: per side (`[0]` the initiator), the end of the sequence space that side has sent
    /// (the highest sequence number plus length, SYN and FIN counting one), once
    /// `CT_SEQ_KNOWN[side]` is set.
    pub seq_end: [u32; 2],
    /// TCP: per side, the largest receive window that side advertised, scaled.
    pub max_win: [u32; 2],
    /// TCP: per side, the window scale of its SYN (`WSCALE_NONE`: none seen).
    pub wscale: [u8; 2],
    /// `CT_SEQ_*` bits.
    pub seq_flags: u8,
    pub _pad: u8,
}

const _: () = assert!(size_of::<CtEntry>() == 96);

/// `CtEntry::acl_cache`: the low word holds an allow (the slot is below this bit).
pub const ACL_CACHED: u64 = 1 << 31;

/// `CtEntry::acl_cache` for an allow by the ACL entry with slot `slot` (`policy::acl_slot`)
/// under ACL epoch `epoch`.
#[inline(always)]
pub const fn acl_cache(epoch: u32, slot: u32) -> u64 {
    ((epoch as u64) << 32) | ACL_CACHED | (slot as u64 & (ACL_CACHED - 1))
}

/// The ACL slot of the allow `cache` holds, if it was made under ACL epoch `epoch` by an
/// entry of generation `gen_` (the slot names its generation, `policy::acl_slot`).
///
/// The datapath reads the config by reference while userspace may be rewriting it, so the
/// epoch and the generation a program read can come from two configs. Stamping the epoch and
/// checking the slot's generation against the one the lookup used makes such an allow one
/// that no config matches: the configs with the newer epoch have the newer generation, and an
/// epoch never comes back (see `IfaceConfig::acl_epoch`).
#[inline(always)]
pub const fn acl_cached(cache: u64, epoch: u32, gen_: u8) -> Option<u32> {
    let slot = (cache & (ACL_CACHED - 1)) as u32;
    if cache >> 32 == epoch as u64
        && cache & ACL_CACHED != 0
        && slot / crate::policy::MAX_ACL_ENTRIES == gen_ as u32 & 1
    {
        Some(slot)
    } else {
        None
    }
}

/// `CtEntry::flags`: a packet from the responder was seen.
pub const CT_F_SEEN_REPLY: u8 = 1 << 0;
/// `CtEntry::flags`: the flow existed before sgctl was enabled on the interface and was taken
/// over from the kernel's socket table (`sgctl` adopts it; see `sg_userspace::adopt`).
pub const CT_F_ADOPTED: u8 = 1 << 1;
/// `CtEntry::flags`: carried over from an older datapath's table by an upgrade.
pub const CT_F_MIGRATED: u8 = 1 << 2;

/// `CtEntry::seq_flags`: the initiator's (`[0]`) sequence space is known.
pub const CT_SEQ_KNOWN_INIT: u8 = 1 << 0;
/// `CtEntry::seq_flags`: the responder's (`[1]`) sequence space is known.
pub const CT_SEQ_KNOWN_RESP: u8 = 1 << 1;
/// `CtEntry::seq_flags`: the initiator's SYN was seen (its window scale recorded).
pub const CT_SEQ_SYN_INIT: u8 = 1 << 2;
/// `CtEntry::seq_flags`: the responder's SYN (its SYN-ACK) was seen.
pub const CT_SEQ_SYN_RESP: u8 = 1 << 3;
/// `CtEntry::wscale`, `PacketSummary::tcp_wscale`: no window scale option.
pub const WSCALE_NONE: u8 = 0xff;
/// The largest window scale shift (RFC 7323 2.3).
pub const WSCALE_MAX: u8 = 14;

/// What conntrack reads of a TCP segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeg {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// The advertised window as sent (unscaled).
    pub win: u16,
    /// Payload bytes.
    pub len: u16,
    /// A SYN's window scale option (`WSCALE_NONE`: none).
    pub wscale: u8,
}

#[inline(always)]
const fn known_bit(side: usize) -> u8 {
    if side == 0 { CT_SEQ_KNOWN_INIT } else { CT_SEQ_KNOWN_RESP }
}

#[inline(always)]
const fn syn_bit(side: usize) -> u8 {
    if side == 0 { CT_SEQ_SYN_INIT } else { CT_SEQ_SYN_RESP }
}

/// The shift of `side`'s advertised windows after the handshake: its own scale when both
/// SYNs offered the option, none when one did not (RFC 7323), and the largest when the
/// handshake was not seen (a flow adopted or carried over: its windows are learned liberally,
/// as nf_conntrack does for connections it picks up).
#[inline(always)]
pub const fn win_shift(e: &CtEntry, side: usize) -> u8 {
    let both = CT_SEQ_SYN_INIT | CT_SEQ_SYN_RESP;
    if e.seq_flags & both != both {
        return WSCALE_MAX;
    }
    if e.wscale[0] == WSCALE_NONE || e.wscale[1] == WSCALE_NONE {
        return 0;
    }
    let w = e.wscale[side & 1];
    if w > WSCALE_MAX { WSCALE_MAX } else { w }
}

/// Is this segment from `side` (`0`: the initiator) one the flow's state may follow? RSTs and
/// FINs must lie in the sender's sequence space (RFC 5961 for RSTs: a blind reset must guess
/// the sequence number): within the receiver's largest window of where the sender's sequence
/// space ends. During the handshake an RST must be the responder's refusal acknowledging the
/// initiator's SYN, or the initiator's own at its next sequence number. Other segments, and a
/// side whose sequence space is not known yet (a flow adopted or carried over, until its first
/// segment from that side), are accepted.
#[inline(always)]
pub const fn tcp_seq_acceptable(e: &CtEntry, side: usize, seg: &TcpSeg) -> bool {
    if seg.flags & (TCP_RST | TCP_FIN) == 0 {
        return true;
    }
    let side = side & 1;
    if e.state == CT_TCP_SYN_SENT && seg.flags & TCP_RST != 0 {
        return if side == 1 {
            seg.flags & TCP_ACK != 0 && e.seq_flags & CT_SEQ_KNOWN_INIT != 0 && seg.ack == e.seq_end[0]
        } else {
            e.seq_flags & CT_SEQ_KNOWN_INIT == 0 || seg.seq == e.seq_end[0]
        };
    }
    if e.seq_flags & known_bit(side) == 0 {
        return true;
    }
    let win = match e.max_win[side ^ 1] {
        0 => 65_535,
        w => w,
    };
    let d = seg.seq.wrapping_sub(e.seq_end[side]) as i32;
    d.unsigned_abs() <= win
}

/// Learns from a segment of `side` the flow followed: the end of the sender's sequence space,
/// its window scale (SYN) and its largest window. An RST teaches nothing (the flow ends).
#[inline(always)]
pub fn tcp_seq_learn(e: &mut CtEntry, side: usize, seg: &TcpSeg) {
    if seg.flags & TCP_RST != 0 {
        return;
    }
    let side = side & 1;
    let syn = seg.flags & TCP_SYN != 0;
    let end = seg
        .seq
        .wrapping_add(u32::from(seg.len))
        .wrapping_add(u32::from(syn))
        .wrapping_add(u32::from(seg.flags & TCP_FIN != 0));
    if syn {
        e.wscale[side] = seg.wscale;
        e.seq_flags |= syn_bit(side);
    }
    if e.seq_flags & known_bit(side) == 0 || (end.wrapping_sub(e.seq_end[side]) as i32) > 0 {
        e.seq_end[side] = end;
        e.seq_flags |= known_bit(side);
    }
    // A SYN's own window is never scaled.
    let shift = if syn { 0 } else { win_shift(e, side) };
    let win = u32::from(seg.win) << shift;
    if win > e.max_win[side] {
        e.max_win[side] = win;
    }
}

/// The window scale option in 40 bytes of TCP options, given as five little-endian words (bytes
/// past the options must be zero: they end the walk as EOL); `WSCALE_NONE` without one.
#[inline(always)]
pub fn wscale_option(w0: u64, w1: u64, w2: u64, w3: u64, w4: u64) -> u8 {
    const EOL: u8 = 0;
    const NOP: u8 = 1;
    const WSCALE: u8 = 3;
    const LEN: usize = 40;
    // A match, not an array: the verifier refuses variable-offset reads of the stack.
    let byte = |i: usize| -> u8 {
        let w = match i / 8 {
            0 => w0,
            1 => w1,
            2 => w2,
            3 => w3,
            4 => w4,
            _ => return EOL,
        };
        (w >> ((i % 8) * 8)) as u8
    };
    let mut i = 0;
    while i < LEN {
        match byte(i) {
            EOL => break,
            NOP => i += 1,
            kind => {
                let len = byte(i + 1) as usize;
                if kind == WSCALE && len == 3 && i + 2 < LEN {
                    return byte(i + 2);
                }
                if len < 2 {
                    break;
                }
                i += len;
            }
        }
    }
    WSCALE_NONE
}

/// ICMP echo: is a packet of `icmp_type` from the initiator (or the responder) one the flow
/// may carry? Only requests from the side that pinged and replies from the pinged one: a
/// peer's own echo request with the same identifier is not a reply to the host's.
#[inline(always)]
pub const fn echo_fits(icmp_type: u8, from_initiator: bool) -> bool {
    let request = matches!(icmp_type, 8 | 128);
    let reply = matches!(icmp_type, 0 | 129);
    if from_initiator { request } else { reply }
}

// States. TCP follows the handshake; other protocols use `CT_NEW` then `CT_STREAM`.
pub const CT_NEW: u8 = 0;
/// UDP / other protocols: traffic seen both ways.
pub const CT_STREAM: u8 = 1;
pub const CT_TCP_SYN_SENT: u8 = 2;
pub const CT_TCP_SYN_RECV: u8 = 3;
pub const CT_TCP_ESTABLISHED: u8 = 4;
/// The initiator sent FIN.
pub const CT_TCP_FIN_ORIG: u8 = 5;
/// The responder sent FIN.
pub const CT_TCP_FIN_REPLY: u8 = 6;
/// Both sent FIN.
pub const CT_TCP_CLOSING: u8 = 7;
/// RST seen.
pub const CT_TCP_CLOSED: u8 = 8;

pub const fn state_name(s: u8) -> &'static str {
    match s {
        CT_NEW => "new",
        CT_STREAM => "stream",
        CT_TCP_SYN_SENT => "syn_sent",
        CT_TCP_SYN_RECV => "syn_recv",
        CT_TCP_ESTABLISHED => "established",
        CT_TCP_FIN_ORIG => "fin_initiator",
        CT_TCP_FIN_REPLY => "fin_responder",
        CT_TCP_CLOSING => "closing",
        CT_TCP_CLOSED => "closed",
        _ => "unknown",
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Next TCP state after a packet with `flags`, from the initiator (`reply == false`) or the
/// responder. Unknown combinations keep the state (the datapath drops flag abuse earlier).
pub const fn tcp_next(state: u8, reply: bool, flags: u8) -> u8 {
    if flags & TCP_RST != 0 {
        return CT_TCP_CLOSED;
    }
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    let fin = flags & TCP_FIN != 0;
    match state {
        CT_TCP_SYN_SENT => {
            if reply && syn {
                // SYN-ACK, or a bare SYN of a simultaneous open.
                CT_TCP_SYN_RECV
            } else {
                CT_TCP_SYN_SENT
            }
        }
        CT_TCP_SYN_RECV => {
            if !reply && ack && !syn {
                if fin { CT_TCP_FIN_ORIG } else { CT_TCP_ESTABLISHED }
            } else if reply && ack && !syn && !fin {
                // Simultaneous open: the responder's ACK completes it too.
                CT_TCP_ESTABLISHED
            } else {
                CT_TCP_SYN_RECV
            }
        }
        CT_TCP_ESTABLISHED => {
            if fin {
                if reply { CT_TCP_FIN_REPLY } else { CT_TCP_FIN_ORIG }
            } else {
                CT_TCP_ESTABLISHED
            }
        }
        CT_TCP_FIN_ORIG => {
            if fin && reply {
                CT_TCP_CLOSING
            } else {
                CT_TCP_FIN_ORIG
            }
        }
        CT_TCP_FIN_REPLY => {
            if fin && !reply {
                CT_TCP_CLOSING
            } else {
                CT_TCP_FIN_REPLY
            }
        }
        s => s,
    }
}

/// `true` for states that belong in `SG_CT` (both directions seen, no eviction).
pub const fn is_established(state: u8) -> bool {
    matches!(
        state,
        CT_STREAM | CT_TCP_ESTABLISHED | CT_TCP_FIN_ORIG | CT_TCP_FIN_REPLY | CT_TCP_CLOSING | CT_TCP_CLOSED
    )
}

/// Does a flow of `SG_CT_NEW` in `state` with `flags` move to `SG_CT`, the table that is never
/// evicted? Only once its responder answered (a SYN-ACK, a UDP reply, an echo reply) and while
/// it lives: a flow that ends before (SYN then RST, from either side) or one-sided traffic
/// stays evictable, so that no flood without real answers fills `SG_CT`.
pub const fn joins_established(state: u8, flags: u8) -> bool {
    flags & CT_F_SEEN_REPLY != 0 && is_established(state) && state != CT_TCP_CLOSED
}

/// Idle timeouts in seconds, per interface (`IfaceConfig::ct_timeouts`). Defaults and ranges
/// as AWS where AWS has them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    /// TCP after the handshake (and half-closed). AWS: 432000, 60..=432000.
    pub tcp_established: u32,
    /// TCP handshake in progress (SYN seen, not completed). 60, 10..=120.
    pub tcp_half_open: u32,
    /// TCP after FIN both ways or RST. 10, 1..=120.
    pub tcp_closing: u32,
    /// UDP one way. AWS: 30, 30..=60.
    pub udp: u32,
    /// UDP both ways. AWS: 180, 60..=180.
    pub udp_stream: u32,
    /// ICMP echo. AWS: 30, 10..=60.
    pub icmp: u32,
    /// Other protocols. AWS: 600, 60..=600.
    pub other: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<CtTimeouts>() == 32);

impl CtTimeouts {
    pub const AWS_DEFAULTS: CtTimeouts = CtTimeouts {
        tcp_established: 432_000,
        tcp_half_open: 60,
        tcp_closing: 10,
        udp: 30,
        udp_stream: 180,
        icmp: 30,
        other: 600,
        _pad: 0,
    };

    /// Accepted range of each field, in field order: (name, min, max).
    pub const RANGES: [(&'static str, u32, u32); 7] = [
        ("tcp_established", 60, 432_000),
        ("tcp_half_open", 10, 120),
        ("tcp_closing", 1, 120),
        ("udp", 30, 60),
        ("udp_stream", 60, 180),
        ("icmp", 10, 60),
        ("other", 60, 600),
    ];

    /// Idle timeout (ns) of a flow of `proto` in `state`. A zero field (a config written
    /// without timeouts) counts as the AWS default, never as "expire at once".
    pub const fn timeout_ns(&self, proto: u8, state: u8) -> u64 {
        const fn pick(set: u32, default: u32) -> u32 {
            if set == 0 { default } else { set }
        }
        let d = Self::AWS_DEFAULTS;
        let secs = match proto {
            6 => match state {
                CT_TCP_SYN_SENT | CT_TCP_SYN_RECV => pick(self.tcp_half_open, d.tcp_half_open),
                CT_TCP_CLOSING | CT_TCP_CLOSED => pick(self.tcp_closing, d.tcp_closing),
                _ => pick(self.tcp_established, d.tcp_established),
            },
            17 => {
                if state == CT_STREAM {
                    pick(self.udp_stream, d.udp_stream)
                } else {
                    pick(self.udp, d.udp)
                }
            }
            1 | 58 => pick(self.icmp, d.icmp),
            _ => pick(self.other, d.other),
        };
        secs as u64 * 1_000_000_000
    }

    /// Is `e` (of protocol `proto`) idle beyond its timeout at `now_ns`?
    pub const fn expired(&self, proto: u8, e: &CtEntry, now_ns: u64) -> bool {
        now_ns > e.last_seen_ns && now_ns - e.last_seen_ns > self.timeout_ns(proto, e.state)
    }
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self::AWS_DEFAULTS
    }
}

#[inline(always)]
fn endpoint_lt(a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> bool {
    // Any fixed total order works; compare as two native u64 halves, then the port.
    let a0 = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let b0 = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if a0 != b0 {
        return a0 < b0;
    }
    let a1 = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let b1 = u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    if a1 != b1 {
        return a1 < b1;
    }
    ap < bp
}

/// The normalised key of a packet `src:sport -> dst:dport`, and whether `src` is the key's
/// `lo` endpoint.
#[inline(always)]
pub fn ct_key(
    family: u8,
    proto: u8,
    src: &[u8; 16],
    sport: u16,
    dst: &[u8; 16],
    dport: u16,
) -> (CtKey, bool) {
    let src_lo = !endpoint_lt(dst, dport, src, sport);
    let (addr_lo, port_lo, addr_hi, port_hi) =
        if src_lo { (*src, sport, *dst, dport) } else { (*dst, dport, *src, sport) };
    (CtKey { addr_lo, addr_hi, port_lo, port_hi, proto, family, _pad: [0; 2] }, src_lo)
}

/// Presence filter of the conntrack tables (`SG_CT_SEEN`): log2 of its slots per bank.
pub const SEEN_BITS: u32 = 20;
/// Slots (bytes) per bank: 1 MiB.
pub const SEEN_SLOTS: u32 = 1 << SEEN_BITS;
/// Banks: the datapath marks both and checks either; `conntrack gc` rebuilds one at a time.
pub const SEEN_BANKS: u32 = 2;
/// `u64` words of the map (its element type): both banks.
pub const SEEN_WORDS: u32 = SEEN_BANKS * SEEN_SLOTS / 8;

/// The byte offset in `SG_CT_SEEN` of `slot` in `bank`. The banks interleave: a slot's two
/// bytes are neighbours, so a packet's check reads one cache line, not two (a new flow's
/// check is a cache miss: one instead of two).
#[inline(always)]
pub const fn seen_offset(bank: u32, slot: u32) -> u32 {
    (slot & (SEEN_SLOTS - 1)) * SEEN_BANKS + (bank & 1)
}

/// Presence-filter slot of a flow from its two endpoints (address as two native-endian
/// words, port). Symmetric in the endpoints, so either direction's packet finds the flow's
/// slot without normalising; the datapath reads the words straight from the packet summary.
#[inline(always)]
pub fn seen_slot(proto: u8, a: [u64; 2], ap: u16, b: [u64; 2], bp: u16) -> u32 {
    #[inline(always)]
    fn end(w: [u64; 2], p: u16) -> u64 {
        (w[0] ^ w[1].rotate_left(31) ^ u64::from(p)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    let h = end(a, ap)
        .wrapping_add(end(b, bp))
        .wrapping_add(u64::from(proto))
        .wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    (h >> (64 - SEEN_BITS)) as u32
}

/// An address as two native-endian words.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

/// Presence-filter slot of a tracked flow's key (the same as [`seen_slot`] of either of its
/// packets).
pub fn key_seen_slot(k: &CtKey) -> u32 {
    seen_slot(k.proto, addr_words(&k.addr_lo), k.port_lo, addr_words(&k.addr_hi), k.port_hi)
}

crate::impl_pod!(CtKey, CtEntry, CtTimeouts);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u8 = TCP_SYN;
    const SA: u8 = TCP_SYN | TCP_ACK;
    const A: u8 = TCP_ACK;
    const FA: u8 = TCP_FIN | TCP_ACK;
    const R: u8 = TCP_RST;
    const RA: u8 = TCP_RST | TCP_ACK;

    #[test]
    fn an_acl_allow_is_cached_only_under_its_epoch_and_generation() {
        use crate::policy::acl_slot;
        let c = acl_cache(7, acl_slot(1, 6));
        assert_eq!(acl_cached(c, 7, 1), Some(acl_slot(1, 6)));
        assert_eq!(acl_cached(c, 7, 3), Some(acl_slot(1, 6)), "the generation's low bit");
        assert_eq!(acl_cached(c, 8, 1), None, "another epoch");
        assert_eq!(acl_cached(c, 6, 1), None);
        assert_eq!(acl_cached(c, 7, 0), None, "an entry of the other generation (a torn config read)");
        assert_eq!(acl_cached(0, 0, 0), None, "an empty cache holds nothing, also under epoch 0");
        assert_eq!(acl_cached(acl_cache(0, 0), 0, 0), Some(0));
        let last = acl_slot(1, crate::policy::MAX_ACL_ENTRIES - 1);
        assert_eq!(acl_cached(acl_cache(u32::MAX, last), u32::MAX, 1), Some(last));
    }

    /// Runs a sequence of (from responder?, flags) from SYN_SENT.
    fn run(steps: &[(bool, u8)]) -> Vec<u8> {
        let mut s = CT_TCP_SYN_SENT;
        steps
            .iter()
            .map(|&(reply, f)| {
                s = tcp_next(s, reply, f);
                s
            })
            .collect()
    }

    fn seg(flags: u8, seq: u32, ack: u32, win: u16, len: u16) -> TcpSeg {
        TcpSeg { flags, seq, ack, win, len, wscale: WSCALE_NONE }
    }

    /// A flow after a handshake: the initiator's ISN 1000 (window scale 7), the responder's
    /// 5000 (scale 2), windows 512 (x128 = 65,536) and 1024 (x4 = 4,096).
    fn handshake() -> CtEntry {
        let mut e = CtEntry { state: CT_TCP_SYN_SENT, wscale: [WSCALE_NONE; 2], ..CtEntry::default() };
        tcp_seq_learn(&mut e, 0, &TcpSeg { wscale: 7, ..seg(S, 1000, 0, 64_240, 0) });
        e.state = CT_TCP_SYN_RECV;
        tcp_seq_learn(&mut e, 1, &TcpSeg { wscale: 2, ..seg(SA, 5000, 1001, 65_160, 0) });
        tcp_seq_learn(&mut e, 0, &seg(A, 1001, 5001, 512, 0));
        tcp_seq_learn(&mut e, 1, &seg(A, 5001, 1001, 1024, 0));
        e.state = CT_TCP_ESTABLISHED;
        e
    }

    #[test]
    fn sequence_spaces_and_scaled_windows_are_learned() {
        let mut e = handshake();
        assert_eq!(e.seq_end, [1001, 5001]);
        assert_eq!(e.wscale, [7, 2]);
        assert_eq!(win_shift(&e, 0), 7);
        // The largest window: the SYN's (unscaled) or a later one, scaled.
        assert_eq!(e.max_win, [65_536, 65_160]);
        tcp_seq_learn(&mut e, 0, &seg(A, 1001, 5001, 600, 1448));
        assert_eq!(e.seq_end[0], 2449);
        // A retransmission of older data does not move the end back.
        tcp_seq_learn(&mut e, 0, &seg(A, 1001, 5001, 600, 100));
        assert_eq!(e.seq_end[0], 2449);
        assert_eq!(e.max_win[0], 600 << 7);
        // Wrapping around 2^32.
        let mut w = CtEntry { seq_end: [u32::MAX - 10, 0], seq_flags: CT_SEQ_KNOWN_INIT, ..handshake() };
        tcp_seq_learn(&mut w, 0, &seg(A, u32::MAX - 10, 0, 1, 100));
        assert_eq!(w.seq_end[0], 89);
        // Without the option on both SYNs, no scaling.
        let mut n = handshake();
        n.wscale[1] = WSCALE_NONE;
        assert_eq!(win_shift(&n, 0), 0);
    }

    #[test]
    fn a_blind_rst_or_fin_is_refused_and_one_in_the_window_accepted() {
        let e = handshake();
        // The responder's window for the initiator's RSTs: 65,160 (the SYN-ACK's, unscaled).
        assert!(tcp_seq_acceptable(&e, 0, &seg(R, 1001, 0, 0, 0)), "at the next sequence number");
        assert!(tcp_seq_acceptable(&e, 0, &seg(R, 1001 + 60_000, 0, 0, 0)), "inside the window");
        assert!(!tcp_seq_acceptable(&e, 0, &seg(R, 1001 + 70_000, 0, 0, 0)), "beyond the window");
        assert!(!tcp_seq_acceptable(&e, 0, &seg(RA, 123_456_789, 0, 0, 0)), "a blind guess");
        assert!(!tcp_seq_acceptable(&e, 1, &seg(FA, 999_999, 0, 0, 0)), "a blind FIN");
        assert!(tcp_seq_acceptable(&e, 1, &seg(FA, 5001, 1001, 0, 0)));
        // Data is not checked (the host's TCP judges it).
        assert!(tcp_seq_acceptable(&e, 1, &seg(A, 999_999, 0, 0, 10)));
        // Not learned yet (an adopted flow): accepted.
        let adopted = CtEntry { state: CT_TCP_ESTABLISHED, ..CtEntry::default() };
        assert!(tcp_seq_acceptable(&adopted, 0, &seg(R, 42, 0, 0, 0)));
    }

    #[test]
    fn during_the_handshake_only_a_refusal_of_the_syn_resets() {
        let mut e = CtEntry { state: CT_TCP_SYN_SENT, wscale: [WSCALE_NONE; 2], ..CtEntry::default() };
        tcp_seq_learn(&mut e, 0, &seg(S, 1000, 0, 64_240, 0));
        assert!(tcp_seq_acceptable(&e, 1, &seg(RA, 0, 1001, 0, 0)), "connection refused");
        assert!(!tcp_seq_acceptable(&e, 1, &seg(RA, 0, 77, 0, 0)), "wrong acknowledgment");
        assert!(!tcp_seq_acceptable(&e, 1, &seg(R, 0, 1001, 0, 0)), "no ACK flag");
        assert!(tcp_seq_acceptable(&e, 0, &seg(R, 1001, 0, 0, 0)), "the initiator's abort");
        assert!(!tcp_seq_acceptable(&e, 0, &seg(R, 5, 0, 0, 0)), "a forged abort");
    }

    #[test]
    fn only_answered_live_flows_join_the_table_that_is_never_evicted() {
        assert!(joins_established(CT_TCP_ESTABLISHED, CT_F_SEEN_REPLY));
        assert!(joins_established(CT_STREAM, CT_F_SEEN_REPLY));
        assert!(!joins_established(CT_TCP_CLOSED, 0), "SYN then RST from the same side");
        assert!(!joins_established(CT_TCP_CLOSED, CT_F_SEEN_REPLY), "refused or reset before it lived");
        assert!(!joins_established(CT_TCP_SYN_RECV, CT_F_SEEN_REPLY));
        assert!(!joins_established(CT_STREAM, 0), "never answered");
    }

    fn options(bytes: &[u8]) -> u8 {
        let mut b = [0u8; 40];
        b[..bytes.len()].copy_from_slice(bytes);
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        wscale_option(w(0), w(8), w(16), w(24), w(32))
    }

    #[test]
    fn the_window_scale_option_is_found_where_stacks_put_it() {
        // Linux: MSS, SACK permitted, timestamps, NOP, window scale 7.
        let linux = [2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        assert_eq!(options(&linux), 7);
        // Windows-like: MSS, NOP, WS 8, NOP, NOP, SACK permitted.
        assert_eq!(options(&[2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2]), 8);
        assert_eq!(options(&[2, 4, 5, 180, 4, 2]), WSCALE_NONE, "no option");
        assert_eq!(options(&[]), WSCALE_NONE);
        assert_eq!(options(&[0, 3, 3, 7]), WSCALE_NONE, "after EOL");
        assert_eq!(options(&[2, 0, 3, 3, 7]), WSCALE_NONE, "a zero length ends the walk");
        assert_eq!(options(&[3, 4, 7, 0]), WSCALE_NONE, "a window scale of the wrong length");
        let mut tail = [1u8; 40];
        tail[37..40].copy_from_slice(&[3, 3, 9]);
        assert_eq!(options(&tail), 9, "at the very end of 40 bytes");
    }

    #[test]
    fn an_echo_flow_carries_requests_one_way_and_replies_the_other() {
        for (req, rep) in [(8, 0), (128, 129)] {
            assert!(echo_fits(req, true));
            assert!(echo_fits(rep, false));
            assert!(!echo_fits(req, false), "the peer's own request is not a reply");
            assert!(!echo_fits(rep, true));
        }
    }

    #[test]
    fn seen_slot_is_the_same_from_both_directions_and_from_the_key() {
        let a = {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&[192, 0, 2, 1]);
            x
        };
        let b = {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&[198, 51, 100, 7]);
            x
        };
        let fwd = seen_slot(6, addr_words(&a), 40000, addr_words(&b), 443);
        let rev = seen_slot(6, addr_words(&b), 443, addr_words(&a), 40000);
        assert_eq!(fwd, rev);
        assert!(fwd < SEEN_SLOTS);
        for (src, sp, dst, dp) in [(&a, 40000, &b, 443), (&b, 443, &a, 40000)] {
            let (key, _) = ct_key(4, 6, src, sp, dst, dp);
            assert_eq!(key_seen_slot(&key), fwd);
        }
        // Other flows mostly land elsewhere.
        let others: std::collections::BTreeSet<u32> =
            (0..1000u16).map(|p| seen_slot(6, addr_words(&a), 30000 + p, addr_words(&b), 443)).collect();
        assert!(others.len() > 990, "{} distinct slots of 1000", others.len());
    }

    #[test]
    fn three_way_handshake_then_close_from_initiator() {
        let states = run(&[
            (true, SA),
            (false, A),
            (false, A),
            (true, A),
            (false, FA),
            (true, A),
            (true, FA),
            (false, A),
        ]);
        assert_eq!(
            states,
            vec![
                CT_TCP_SYN_RECV,
                CT_TCP_ESTABLISHED,
                CT_TCP_ESTABLISHED,
                CT_TCP_ESTABLISHED,
                CT_TCP_FIN_ORIG,
                CT_TCP_FIN_ORIG,
                CT_TCP_CLOSING,
                CT_TCP_CLOSING
            ]
        );
    }

    #[test]
    fn close_from_responder() {
        let states = run(&[(true, SA), (false, A), (true, FA), (false, A), (false, FA)]);
        assert_eq!(states[2..], [CT_TCP_FIN_REPLY, CT_TCP_FIN_REPLY, CT_TCP_CLOSING]);
    }

    #[test]
    fn simultaneous_close() {
        let states = run(&[(true, SA), (false, A), (false, FA), (true, FA), (false, A), (true, A)]);
        assert_eq!(states[2..], [CT_TCP_FIN_ORIG, CT_TCP_CLOSING, CT_TCP_CLOSING, CT_TCP_CLOSING]);
    }

    #[test]
    fn simultaneous_open() {
        // Both sides send SYN; each answers with SYN-ACK; the ACKs complete it.
        let states = run(&[(true, S), (false, SA), (true, A)]);
        assert_eq!(states, vec![CT_TCP_SYN_RECV, CT_TCP_SYN_RECV, CT_TCP_ESTABLISHED]);
    }

    #[test]
    fn rst_closes_from_any_state_and_either_side() {
        for start in [
            CT_TCP_SYN_SENT,
            CT_TCP_SYN_RECV,
            CT_TCP_ESTABLISHED,
            CT_TCP_FIN_ORIG,
            CT_TCP_FIN_REPLY,
            CT_TCP_CLOSING,
            CT_TCP_CLOSED,
        ] {
            for reply in [false, true] {
                for f in [R, RA] {
                    assert_eq!(
                        tcp_next(start, reply, f),
                        CT_TCP_CLOSED,
                        "{} {reply} {f:#x}",
                        state_name(start)
                    );
                }
            }
        }
    }

    #[test]
    fn handshake_is_not_skipped() {
        // Retransmitted SYN, a stray ACK from the responder, data before the SYN-ACK.
        assert_eq!(tcp_next(CT_TCP_SYN_SENT, false, S), CT_TCP_SYN_SENT);
        assert_eq!(tcp_next(CT_TCP_SYN_SENT, true, A), CT_TCP_SYN_SENT);
        assert_eq!(tcp_next(CT_TCP_SYN_SENT, false, A), CT_TCP_SYN_SENT);
        // SYN-ACK retransmitted, initiator's ACK with FIN (data + close in one segment).
        assert_eq!(tcp_next(CT_TCP_SYN_RECV, true, SA), CT_TCP_SYN_RECV);
        assert_eq!(tcp_next(CT_TCP_SYN_RECV, false, FA), CT_TCP_FIN_ORIG);
        // A FIN from the side that already sent one does not close.
        assert_eq!(tcp_next(CT_TCP_FIN_ORIG, false, FA), CT_TCP_FIN_ORIG);
        assert_eq!(tcp_next(CT_TCP_FIN_REPLY, true, FA), CT_TCP_FIN_REPLY);
        // Closed stays closed (a new SYN is handled as a new flow by the datapath).
        assert_eq!(tcp_next(CT_TCP_CLOSED, false, S), CT_TCP_CLOSED);
    }

    #[test]
    fn timeouts_by_protocol_and_state() {
        let t = CtTimeouts::AWS_DEFAULTS;
        let s = 1_000_000_000;
        assert_eq!(t.timeout_ns(6, CT_TCP_SYN_SENT), 60 * s);
        assert_eq!(t.timeout_ns(6, CT_TCP_ESTABLISHED), 432_000 * s);
        assert_eq!(t.timeout_ns(6, CT_TCP_FIN_ORIG), 432_000 * s);
        assert_eq!(t.timeout_ns(6, CT_TCP_CLOSING), 10 * s);
        assert_eq!(t.timeout_ns(6, CT_TCP_CLOSED), 10 * s);
        assert_eq!(t.timeout_ns(17, CT_NEW), 30 * s);
        assert_eq!(t.timeout_ns(17, CT_STREAM), 180 * s);
        assert_eq!(t.timeout_ns(1, CT_NEW), 30 * s);
        assert_eq!(t.timeout_ns(58, CT_NEW), 30 * s);
        assert_eq!(t.timeout_ns(47, CT_STREAM), 600 * s);
        let e = CtEntry { last_seen_ns: 100 * s, state: CT_NEW, ..CtEntry::default() };
        assert!(!t.expired(17, &e, 130 * s));
        assert!(t.expired(17, &e, 130 * s + 1));
        assert!(!t.expired(17, &e, 50 * s), "a clock before last_seen is not expiry");
        for (i, (_, lo, hi)) in CtTimeouts::RANGES.iter().enumerate() {
            let v =
                [t.tcp_established, t.tcp_half_open, t.tcp_closing, t.udp, t.udp_stream, t.icmp, t.other][i];
            assert!((lo..=hi).contains(&&v), "default of field {i} outside its range");
        }
    }

    #[test]
    fn abusive_flag_combinations() {
        for f in [0u8, S | TCP_FIN, S | R, TCP_FIN, TCP_FIN | R | A, 0x29, 0x3f, 0xff] {
            assert!(tcp_flags_abusive(f), "{f:#x}");
        }
        for f in [S, SA, A, FA, R, RA, A | 0x08, FA | 0x08] {
            assert!(!tcp_flags_abusive(f), "{f:#x}");
        }
    }

    #[test]
    fn keys_are_the_same_from_both_directions() {
        let a = [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b = [192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (k1, a_lo) = ct_key(4, 6, &a, 40000, &b, 80);
        let (k2, b_lo) = ct_key(4, 6, &b, 80, &a, 40000);
        assert_eq!(k1, k2);
        assert_ne!(a_lo, b_lo);
        // Same addresses, different ports: different flows; same address both ends: ports decide.
        assert_ne!(ct_key(4, 6, &a, 40000, &b, 81).0, k1);
        let (k3, lo3) = ct_key(4, 17, &a, 5, &a, 6);
        let (k4, lo4) = ct_key(4, 17, &a, 6, &a, 5);
        assert_eq!(k3, k4);
        assert_ne!(lo3, lo4);
        assert_ne!(ct_key(4, 17, &a, 40000, &b, 80).0, k1, "protocol is part of the key");
    }
}

/// Key of a fragmented datagram (RFC 791 / 8200: source, destination, protocol, id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<FragKey>() == 40);

/// A datagram whose first fragment was accepted: its other fragments may pass until `expires_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub expires_ns: u64,
}

const _: () = assert!(size_of::<FragEntry>() == 8);

/// How long the other fragments of an accepted first fragment may follow it.
pub const FRAG_LIFETIME_NS: u64 = 10_000_000_000;

/// TCP flag combinations no connection sends, refused on packets of no tracked flow:
/// SYN+FIN, SYN+RST, FIN+RST, no flag at all, FIN without ACK, and the "XMAS" FIN+PSH+URG.
pub const fn tcp_flags_abusive(flags: u8) -> bool {
    const URG: u8 = 0x20;
    const PSH: u8 = 0x08;
    let f = flags & 0x3f;
    f == 0
        || f & (TCP_SYN | TCP_FIN) == (TCP_SYN | TCP_FIN)
        || f & (TCP_SYN | TCP_RST) == (TCP_SYN | TCP_RST)
        || f & (TCP_FIN | TCP_RST) == (TCP_FIN | TCP_RST)
        || f & (TCP_FIN | TCP_ACK) == TCP_FIN
        || f & (TCP_FIN | PSH | URG) == (TCP_FIN | PSH | URG)
}

crate::impl_pod!(FragKey, FragEntry);
