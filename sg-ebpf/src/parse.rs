//! The one bounds-checked way to read packets.
//!
//! Every read goes through [`load`], which checks the read against the end of the packet and
//! against [`MAX_HDR_BYTES`] (so the verifier sees a bounded offset). The parser walks
//! Ethernet, up to `MAX_VLAN_TAGS` VLAN tags, IPv4 (options via IHL) or IPv6 (up to
//! `MAX_IPV6_EXT` extension headers), then TCP/UDP ports or ICMP type/code. Anything it cannot
//! read is an error reason: the caller drops the packet.

use aya_ebpf::{
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sg_common::{
    IfaceConfig, PacketSummary, Reason,
    conntrack::{TCP_SYN, WSCALE_NONE, wscale_option},
    packet::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_AH,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING,
        IPPROTO_TCP, IPPROTO_UDP, MAX_IPV6_EXT, MAX_VLAN_TAGS, PKT_FRAGMENT, PKT_HAS_L4, PKT_ICMP_ERROR,
        PKT_LATER_FRAGMENT,
    },
};

use crate::maps::{SG_CONFIG, SG_SCRATCH};

/// Headers must lie within the first `MAX_HDR_BYTES` of the frame (egress pulls this much
/// into the linear area). Longer header chains are dropped as `headers_too_long`.
pub const MAX_HDR_BYTES: usize = 512;

/// A packet buffer the parser can read: XDP frames and TC skbs.
pub trait Packet {
    /// Start of the directly readable bytes.
    fn start(&self) -> usize;
    /// End of the directly readable bytes.
    fn end(&self) -> usize;
    /// Length of the whole packet (for TC, including any non-linear part).
    fn len(&self) -> usize;
    /// Copies `len` bytes (1..=40) at `off` into `buf` through the kernel's bounded copy
    /// helper (`bpf_xdp_load_bytes`, `bpf_skb_load_bytes`); false when they are not all in
    /// the packet. For the one variable-length read: a SYN's TCP options.
    fn copy_options(&self, off: usize, buf: &mut [u8; 40], len: u32) -> bool;
}

impl Packet for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    /// Reads `data_end` again with a volatile load: LLVM must not derive the pointer bounds
    /// checks in [`load`] from length checks (the verifier only trusts pointer comparisons).
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: ctx points to the xdp_md the kernel passed to the program.
        let end = unsafe { core::ptr::read_volatile(&raw const (*self.ctx).data_end) };
        (end as usize).wrapping_sub(self.data())
    }
    #[inline(always)]
    fn copy_options(&self, off: usize, buf: &mut [u8; 40], len: u32) -> bool {
        // SAFETY: the helper writes at most `len` (<= 40) bytes into `buf`.
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, buf.as_mut_ptr().cast(), len) == 0 }
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn copy_options(&self, off: usize, buf: &mut [u8; 40], len: u32) -> bool {
        // SAFETY: the helper writes at most `len` (<= 40) bytes into `buf`.
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), off as u32, buf.as_mut_ptr().cast(), len) == 0 }
    }
}

/// The skb of the TCX ingress program (`sg_ingress_tc`): a type of its own, so that each TC
/// program gets its own instance of every generic step. Sharing `TcContext` with `sg_egress`
/// made LLVM outline aya-log's record writer (`log::ct_full`) into a subprogram both programs
/// call, and the verifier's work on `sg_egress` grew from 405k to 711k instructions.
pub struct IngressSkb<'a>(pub &'a TcContext);

impl Packet for IngressSkb<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        self.0.start()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.0.end()
    }
    #[inline(always)]
    fn len(&self) -> usize {
        Packet::len(self.0)
    }
    #[inline(always)]
    fn copy_options(&self, off: usize, buf: &mut [u8; 40], len: u32) -> bool {
        self.0.copy_options(off, buf, len)
    }
}

impl aya_ebpf::EbpfContext for IngressSkb<'_> {
    #[inline(always)]
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.0.as_ptr()
    }
}

/// Reads a `T` at `off` bytes from the start of the packet, or `Err(short)` when it does not
/// fit. The only function that dereferences packet memory.
#[inline(always)]
pub fn load<T: Copy>(pkt: &impl Packet, off: usize, short: Reason) -> Result<T, Reason> {
    let size = size_of::<T>();
    if off > MAX_HDR_BYTES - size {
        return Err(Reason::HeadersTooLong);
    }
    let start = pkt.start();
    if start + off + size > pkt.end() {
        return Err(short);
    }
    // SAFETY: [start+off, start+off+size) lies inside the packet (checked just above).
    Ok(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// The interface's config entry, or `no_config` (fail closed).
#[inline(always)]
pub fn config() -> Result<&'static IfaceConfig, Reason> {
    // A reference into the map value, not a copy: 80 bytes of BPF stack saved (the ACL reads
    // its epoch and generation once, see `pipeline::Acl::drop`).
    match SG_CONFIG.get(0) {
        Some(cfg) if cfg.is_valid() => Ok(cfg),
        _ => Err(Reason::NoConfig),
    }
}

/// The summary's source address as two words (see `sg_common::policy::addr_byte`).
#[inline(always)]
pub fn src_words(pkt: &PacketSummary) -> [u64; 2] {
    aligned_words(&pkt.src)
}

/// The summary's destination address as two words.
#[inline(always)]
pub fn dst_words(pkt: &PacketSummary) -> [u64; 2] {
    aligned_words(&pkt.dst)
}

/// Two plain loads, where an address on the stack would need byte loads. Only for the
/// summary's `src` and `dst`.
#[inline(always)]
fn aligned_words(a: &[u8; 16]) -> [u64; 2] {
    #[allow(clippy::cast_ptr_alignment, reason = "8-byte aligned fields of the summary, see below")]
    let p = a.as_ptr().cast::<u64>();
    // SAFETY: `src` and `dst` sit at offsets 24 and 40 of the 8-byte aligned summary
    // (asserted in sg-common), so both words are aligned and in bounds.
    unsafe { [core::ptr::read(p), core::ptr::read(p.add(1))] }
}

/// Parses the packet into the per-CPU scratch summary (which `verdict::exit` may record).
/// `Ok(None)`: not an IP frame.
#[inline(always)]
pub fn parse_packet<'a>(pkt: &impl Packet) -> Result<Option<&'a PacketSummary>, Reason> {
    let s = match SG_SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU map value, used by this program run only (no preemption in BPF).
        Some(p) => unsafe { &mut *p },
        None => return Err(Reason::InternalError),
    };
    clear(s);
    // Opaque to LLVM from here: it must not carry the zeroes into the parser as constants
    // (with them, per-path constants multiplied the verifier's states past its limit).
    let s = core::hint::black_box(s);
    if parse(pkt, s)? { Ok(Some(s)) } else { Ok(None) }
}

/// Zeroes what the parser fills: words 0..7 (header fields and addresses) and 9..16 (the
/// quoted packet of ICMP errors, the TCP sequence fields); `seq`, `reason` and `rule` (words
/// 7..9) are written when a summary is recorded. One word store each: LLVM turns `*s = PacketSummary::default()`, and
/// even plain stores of zeroes, into a call of compiler_builtins' byte-at-a-time `memset`
/// (112 loop iterations, more than half the cost of a denied packet); volatile stores stay
/// stores.
/// Word index of `PacketSummary::src` (`dst` follows it).
const SUMMARY_SRC_WORD: usize = 3;

/// Stores word `i` of the summary (volatile, for the reason given at [`clear`]).
#[inline(always)]
fn put_word(s: &mut PacketSummary, i: usize, w: u64) {
    if i < size_of::<PacketSummary>() / 8 {
        // SAFETY: in bounds (checked), and the summary is 8-byte aligned.
        unsafe { core::ptr::write_volatile(core::ptr::from_mut(s).cast::<u64>().add(i), w) };
    }
}

#[inline(always)]
fn clear(s: &mut PacketSummary) {
    let p = core::ptr::from_mut(s).cast::<u64>();
    // PacketSummary is 8-byte aligned and 128 bytes long (asserted in sg-common): words 0..7
    // and 9..16 lie inside it.
    for i in (0..7).chain(9..16) {
        // SAFETY: as above. Volatile: plain stores are merged back into a memset call.
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// Fills `s`. `Ok(false)` for a non-IP frame, `Ok(true)` for a parsed IP packet.
#[inline(always)]
fn parse(pkt: &impl Packet, s: &mut PacketSummary) -> Result<bool, Reason> {
    let eth: EthHdr = load(pkt, 0, Reason::EthTruncated)?;
    let mut proto = u16::from_be(eth.ether_type);
    let mut off = EthHdr::LEN;
    // Counters live in locals, written to the summary as they change.
    let mut vlan_depth = 0u8;
    // One more round than MAX_VLAN_TAGS, so that a tag beyond the bound is seen and refused.
    for _ in 0..=MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        if u32::from(vlan_depth) == MAX_VLAN_TAGS {
            return Err(Reason::VlanTooDeep);
        }
        let tag: VlanHdr = load(pkt, off, Reason::VlanTruncated)?;
        proto = u16::from_be(tag.ether_type);
        off += VlanHdr::LEN;
        vlan_depth += 1;
        s.vlan_depth = vlan_depth;
    }
    s.l3_off = off as u16;
    match proto {
        ETH_P_IP => parse_ipv4(pkt, off, s)?,
        ETH_P_IPV6 => parse_ipv6(pkt, off, s)?,
        _ => return Ok(false),
    }
    Ok(true)
}

#[inline(always)]
fn parse_ipv4(pkt: &impl Packet, off: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let ip: Ipv4Hdr = load(pkt, off, Reason::Ipv4Truncated)?;
    s.family = FAMILY_IPV4;
    if ip.vihl >> 4 != 4 {
        return Err(Reason::IpBadVersion);
    }
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN || off + ihl > pkt.len() {
        return Err(Reason::Ipv4BadIhl);
    }
    let total = usize::from(u16::from_be_bytes(ip.tot_len));
    if total < ihl || off + total > pkt.len() {
        return Err(Reason::Ipv4BadLength);
    }
    s.proto = ip.proto;
    s.ttl = ip.ttl;
    s.src[..4].copy_from_slice(&ip.src_addr);
    s.dst[..4].copy_from_slice(&ip.dst_addr);
    let frags = u16::from_be_bytes(ip.frags);
    let more_fragments = frags & 0x2000 != 0;
    s.frag_off = frags & 0x1fff;
    s.frag_id = u32::from(u16::from_be_bytes(ip.id));
    if more_fragments || s.frag_off != 0 {
        s.flags |= PKT_FRAGMENT;
    }
    let l4 = off + ihl;
    s.l4_off = l4 as u16;
    if s.frag_off != 0 {
        s.flags |= PKT_LATER_FRAGMENT;
        if s.frag_off == 1 && s.proto == IPPROTO_TCP {
            // Offset 8 bytes lands on the TCP flags of the first fragment (RFC 1858).
            return Err(Reason::FragmentOverlap);
        }
        return Ok(());
    }
    let res = parse_l4(pkt, l4, off + total, s);
    if more_fragments && res == Err(Reason::L4Truncated) {
        // A first fragment that does not hold the whole transport header (RFC 1858).
        return Err(Reason::TinyFragment);
    }
    res
}

/// A generic IPv6 extension header start: next header and length.
#[derive(Clone, Copy)]
#[repr(C)]
struct Ipv6ExtHdr {
    next_hdr: u8,
    hdr_len: u8,
}

/// IPv6 fragment header (RFC 8200 4.5).
#[derive(Clone, Copy)]
#[repr(C)]
struct Ipv6FragHdr {
    next_hdr: u8,
    _reserved: u8,
    off_flags: [u8; 2],
    id: [u8; 4],
}

#[inline(always)]
fn parse_ipv6(pkt: &impl Packet, off: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let ip: Ipv6Hdr = load(pkt, off, Reason::Ipv6Truncated)?;
    s.family = FAMILY_IPV6;
    if ip.vcf[0] >> 4 != 6 {
        return Err(Reason::IpBadVersion);
    }
    let payload = usize::from(u16::from_be_bytes(ip.payload_len));
    let end = off + Ipv6Hdr::LEN + payload;
    if end > pkt.len() {
        return Err(Reason::Ipv6BadLength);
    }
    // Addresses as four words straight from the packet into the summary (an array assignment
    // from the loaded header is a call of a byte-at-a-time `memmove`).
    for word in 0..4 {
        let w: u64 = load(pkt, off + 8 + 8 * word, Reason::Ipv6Truncated)?;
        put_word(s, SUMMARY_SRC_WORD + word, w);
    }
    s.ttl = ip.hop_limit;
    let mut next = ip.next_hdr;
    let mut cur = off + Ipv6Hdr::LEN;
    // Headers seen, to refuse illegal orders and repeats (RFC 8200 4.1).
    let (mut routing, mut fragment, mut dstopts) = (0u8, 0u8, 0u8);
    let mut later = false;
    let mut ext_count = 0u8;
    // The headers Linux walks as extension headers (`ipv6_ext_hdr`): hop-by-hop, routing,
    // fragment, AH, destination options. Everything else (ESP, the Mobility Header, HIP,
    // Shim6, ...) is the upper-layer protocol, judged as itself, as the host delivers it.
    for _ in 0..MAX_IPV6_EXT {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                match next {
                    IPPROTO_HOPOPTS if ext_count != 0 => return Err(Reason::Ipv6ExtBadOrder),
                    IPPROTO_ROUTING => routing += 1,
                    IPPROTO_DSTOPTS => dstopts += 1,
                    _ => {}
                }
                if routing > 1 || dstopts > 2 {
                    return Err(Reason::Ipv6ExtBadOrder);
                }
                let h: Ipv6RoutingHdr =
                    load(pkt, cur, Reason::Ipv6ExtTruncated).map_err(|r| chain_error(r, fragment))?;
                if next == IPPROTO_ROUTING && h.routing_type == 0 {
                    return Err(Reason::Ipv6RoutingType0);
                }
                next = h.next_hdr;
                (usize::from(h.hdr_len) + 1) * 8
            }
            IPPROTO_AH => {
                let h: Ipv6ExtHdr =
                    load(pkt, cur, Reason::Ipv6ExtTruncated).map_err(|r| chain_error(r, fragment))?;
                next = h.next_hdr;
                (usize::from(h.hdr_len) + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                fragment += 1;
                if fragment > 1 {
                    return Err(Reason::Ipv6ExtBadOrder);
                }
                let h: Ipv6FragHdr = load(pkt, cur, Reason::Ipv6ExtTruncated)?;
                next = h.next_hdr;
                let off_flags = u16::from_be_bytes(h.off_flags);
                s.frag_off = off_flags >> 3;
                s.frag_id = u32::from_be_bytes(h.id);
                s.flags |= PKT_FRAGMENT;
                // After the fragment header of a later fragment come data, not headers.
                later = s.frag_off != 0;
                8
            }
            _ => break,
        };
        if cur + len > end {
            return Err(chain_error(Reason::Ipv6ExtTruncated, fragment));
        }
        if cur + len > MAX_HDR_BYTES {
            return Err(Reason::HeadersTooLong);
        }
        cur += len;
        ext_count += 1;
        s.ext_count = ext_count;
        if later {
            break;
        }
    }
    if !later
        && matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT)
    {
        return Err(Reason::Ipv6ExtTooLong);
    }
    s.proto = next;
    s.l4_off = cur as u16;
    if later {
        s.flags |= PKT_LATER_FRAGMENT;
        if s.frag_off == 1 && s.proto == IPPROTO_TCP {
            return Err(Reason::FragmentOverlap);
        }
        return Ok(());
    }
    parse_l4(pkt, cur, end, s).map_err(|r| chain_error(r, fragment))
}

/// In an IPv6 first fragment, a header chain or transport header cut short is RFC 7112's
/// incomplete chain.
#[inline(always)]
fn chain_error(r: Reason, fragment: u8) -> Reason {
    if fragment != 0 && matches!(r, Reason::Ipv6ExtTruncated | Reason::L4Truncated) {
        Reason::Ipv6IncompleteChain
    } else {
        r
    }
}

/// The first 4 bytes of a routing (or any TLV-style) extension header.
#[derive(Clone, Copy)]
#[repr(C)]
struct Ipv6RoutingHdr {
    next_hdr: u8,
    hdr_len: u8,
    routing_type: u8,
    _segments_left: u8,
}

/// ICMP and ICMPv6 share the first 8 bytes: type, code, checksum, identifier, sequence.
#[derive(Clone, Copy)]
#[repr(C)]
struct IcmpHdr {
    icmp_type: u8,
    code: u8,
    _check: [u8; 2],
    id: [u8; 2],
    _seq: [u8; 2],
}

/// Reads ports or ICMP type/code at `off`; `end` is the end of the IP datagram.
#[inline(always)]
fn parse_l4(pkt: &impl Packet, off: usize, end: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    match s.proto {
        IPPROTO_TCP => {
            if off + TcpHdr::LEN > end {
                return Err(Reason::L4Truncated);
            }
            let tcp: TcpHdr = load(pkt, off, Reason::L4Truncated)?;
            let doff = usize::from(tcp.doff()) * 4;
            if doff < TcpHdr::LEN || off + doff > end {
                return Err(Reason::TcpBadDoff);
            }
            s.sport = u16::from_be_bytes(tcp.source);
            s.dport = u16::from_be_bytes(tcp.dest);
            // Byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN.
            let flags: [u8; 14] = load(pkt, off, Reason::L4Truncated)?;
            s.tcp_flags = flags[13];
            s.tcp_seq = u32::from_be_bytes(tcp.seq);
            s.tcp_ack = u32::from_be_bytes(tcp.ack_seq);
            s.tcp_win = u16::from_be_bytes(tcp.window);
            // A fragment's payload runs on in the next fragments: no sequence space end.
            s.tcp_len = if s.flags & PKT_FRAGMENT != 0 { 0 } else { (end - off - doff) as u16 };
            s.tcp_wscale = if s.tcp_flags & TCP_SYN != 0 {
                wscale(pkt, off + TcpHdr::LEN, doff - TcpHdr::LEN)
            } else {
                WSCALE_NONE
            };
        }
        IPPROTO_UDP => {
            if off + UdpHdr::LEN > end {
                return Err(Reason::L4Truncated);
            }
            let udp: UdpHdr = load(pkt, off, Reason::L4Truncated)?;
            s.sport = u16::from_be_bytes(udp.src);
            s.dport = u16::from_be_bytes(udp.dst);
            let len = usize::from(u16::from_be_bytes(udp.len));
            // A fragment's UDP length covers the whole datagram, beyond this fragment.
            let fits = if s.flags & PKT_FRAGMENT != 0 { len >= UdpHdr::LEN } else { len == end - off };
            if !fits {
                return Err(Reason::UdpBadLength);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if off + size_of::<IcmpHdr>() > end {
                return Err(Reason::L4Truncated);
            }
            let icmp: IcmpHdr = load(pkt, off, Reason::L4Truncated)?;
            s.icmp_type = icmp.icmp_type;
            s.icmp_code = icmp.code;
            s.sport = u16::from_be_bytes(icmp.id);
            let error = match (s.family, s.proto) {
                (FAMILY_IPV4, IPPROTO_ICMP) => {
                    matches!(icmp.icmp_type, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED)
                }
                (FAMILY_IPV6, IPPROTO_ICMPV6) => {
                    matches!(icmp.icmp_type, ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOOBIG | ICMPV6_TIME_EXCEEDED)
                }
                _ => false,
            };
            if error {
                parse_quoted(pkt, off + size_of::<IcmpHdr>(), end, s)?;
            }
        }
        _ => return Ok(()),
    }
    s.flags |= PKT_HAS_L4;
    Ok(())
}

/// Bytes of TCP options at most (a data offset of 15 words).
const MAX_TCP_OPTIONS: usize = 40;

/// The window scale option of a SYN whose options are the `len` bytes at `off`
/// (`WSCALE_NONE` without one). The options are copied once (the kernel's bounded copy) and
/// walked by [`sg_tcp_wscale`], which the verifier checks once on its own: walked inline,
/// the loop multiplied the egress program's paths past the verifier's limit.
#[inline(always)]
fn wscale(pkt: &impl Packet, off: usize, len: usize) -> u8 {
    if len == 0 || len > MAX_TCP_OPTIONS {
        return WSCALE_NONE;
    }
    let mut buf = [0u8; MAX_TCP_OPTIONS];
    if !pkt.copy_options(off, &mut buf, len as u32) {
        return WSCALE_NONE;
    }
    let w = |i: usize| {
        u64::from_le_bytes([
            buf[i],
            buf[i + 1],
            buf[i + 2],
            buf[i + 3],
            buf[i + 4],
            buf[i + 5],
            buf[i + 6],
            buf[i + 7],
        ])
    };
    sg_tcp_wscale(w(0), w(8), w(16), w(24), w(32)) as u8
}

/// `sg_common::conntrack::wscale_option` as a global function: the verifier checks the walk
/// once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sg_tcp_wscale(w0: u64, w1: u64, w2: u64, w3: u64, w4: u64) -> u64 {
    u64::from(wscale_option(w0, w1, w2, w3, w4))
}

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// The packet quoted by an ICMP error at `off` (its IP header and the first 8 bytes of its
/// transport header, RFC 792 / RFC 4443). A quote too short for the addresses and ports is
/// `icmp_quote_truncated`.
#[inline(always)]
fn parse_quoted(pkt: &impl Packet, off: usize, end: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let l4 = if s.family == FAMILY_IPV4 {
        if off + Ipv4Hdr::LEN > end {
            return Err(Reason::IcmpQuoteTruncated);
        }
        let ip: Ipv4Hdr = load(pkt, off, Reason::IcmpQuoteTruncated)?;
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return Err(Reason::IcmpQuoteTruncated);
        }
        s.inner_proto = ip.proto;
        s.inner_src[..4].copy_from_slice(&ip.src_addr);
        s.inner_dst[..4].copy_from_slice(&ip.dst_addr);
        off + ihl
    } else {
        if off + Ipv6Hdr::LEN > end {
            return Err(Reason::IcmpQuoteTruncated);
        }
        let ip: Ipv6Hdr = load(pkt, off, Reason::IcmpQuoteTruncated)?;
        s.inner_proto = ip.next_hdr;
        s.inner_src = ip.src_addr;
        s.inner_dst = ip.dst_addr;
        off + Ipv6Hdr::LEN
    };
    match s.inner_proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if l4 + 4 > end {
                return Err(Reason::IcmpQuoteTruncated);
            }
            let ports: [u8; 4] = load(pkt, l4, Reason::IcmpQuoteTruncated)?;
            s.inner_sport = u16::from_be_bytes([ports[0], ports[1]]);
            s.inner_dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if l4 + size_of::<IcmpHdr>() > end {
                return Err(Reason::IcmpQuoteTruncated);
            }
            let icmp: IcmpHdr = load(pkt, l4, Reason::IcmpQuoteTruncated)?;
            // Tracked ICMP flows are echo exchanges, keyed by the identifier on both sides; an
            // error about anything else of ICMP (an error about an error above all, RFC 1122
            // 3.2.2) is not related to a flow: judged as a plain ICMP packet.
            if !matches!(icmp.icmp_type, ICMP_ECHO_REQUEST | ICMPV6_ECHO_REQUEST) {
                return Ok(());
            }
            let id = u16::from_be_bytes(icmp.id);
            s.inner_sport = id;
            s.inner_dport = id;
        }
        _ => {}
    }
    s.flags |= PKT_ICMP_ERROR;
    Ok(())
}
