//! A userspace reference parser, written from the parsing rules (README "Datapath" and
//! SECURITY.md), not from the eBPF code: the differential parse fuzzer runs every frame
//! through both and requires the same outcome: not IP, malformed for the same reason, or the
//! same parsed summary.

use sg_common::{
    PacketSummary, Reason,
    conntrack::{WSCALE_NONE, wscale_option},
    packet::{
        FAMILY_IPV4, FAMILY_IPV6, MAX_IPV6_EXT, MAX_VLAN_TAGS, PKT_FRAGMENT, PKT_HAS_L4, PKT_ICMP_ERROR,
        PKT_LATER_FRAGMENT,
    },
};

/// Headers must lie within this many bytes of the frame start.
const MAX_HDR: usize = 512;

/// What a frame is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not an IP frame (passes at L2).
    NotIp,
    /// Dropped as malformed, for this reason.
    Malformed(Reason),
    /// Parsed: the summary (seq, reason and rule zeroed).
    Parsed(PacketSummary),
}

struct Frame<'a> {
    b: &'a [u8],
}

impl Frame<'_> {
    /// `size` bytes at `off`: the header bound first, then the frame's end.
    fn get(&self, off: usize, size: usize, short: Reason) -> Result<&[u8], Reason> {
        if off + size > MAX_HDR {
            return Err(Reason::HeadersTooLong);
        }
        if off + size > self.b.len() {
            return Err(short);
        }
        Ok(&self.b[off..off + size])
    }
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A SYN's window scale option in the `len` option bytes at `off` (the walk itself is
/// `sg_common::conntrack::wscale_option`, unit-tested there; this checks what is handed to it).
fn wscale(f: &Frame<'_>, off: usize, len: usize) -> u8 {
    if len == 0 || len > 40 {
        return WSCALE_NONE;
    }
    let Ok(opts) = f.get(off, len, Reason::L4Truncated) else { return WSCALE_NONE };
    let mut b = [0u8; 40];
    b[..len].copy_from_slice(opts);
    let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    wscale_option(w(0), w(8), w(16), w(24), w(32))
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Parses a frame as the datapath must.
pub fn parse(bytes: &[u8]) -> Outcome {
    let mut s = PacketSummary::default();
    match parse_into(&Frame { b: bytes }, &mut s) {
        Ok(true) => Outcome::Parsed(s),
        Ok(false) => Outcome::NotIp,
        Err(r) => Outcome::Malformed(r),
    }
}

fn parse_into(f: &Frame<'_>, s: &mut PacketSummary) -> Result<bool, Reason> {
    let eth = f.get(0, 14, Reason::EthTruncated)?;
    let mut ethertype = be16(eth, 12);
    let mut off = 14;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if u32::from(s.vlan_depth) == MAX_VLAN_TAGS {
            return Err(Reason::VlanTooDeep);
        }
        let tag = f.get(off, 4, Reason::VlanTruncated)?;
        ethertype = be16(tag, 2);
        off += 4;
        s.vlan_depth += 1;
    }
    s.l3_off = off as u16;
    match ethertype {
        0x0800 => ipv4(f, off, s)?,
        0x86dd => ipv6(f, off, s)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn ipv4(f: &Frame<'_>, off: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let h = f.get(off, 20, Reason::Ipv4Truncated)?;
    s.family = FAMILY_IPV4;
    if h[0] >> 4 != 4 {
        return Err(Reason::IpBadVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 || off + ihl > f.b.len() {
        return Err(Reason::Ipv4BadIhl);
    }
    let total = usize::from(be16(h, 2));
    if total < ihl || off + total > f.b.len() {
        return Err(Reason::Ipv4BadLength);
    }
    s.proto = h[9];
    s.ttl = h[8];
    s.src[..4].copy_from_slice(&h[12..16]);
    s.dst[..4].copy_from_slice(&h[16..20]);
    let frags = be16(h, 6);
    let more = frags & 0x2000 != 0;
    s.frag_off = frags & 0x1fff;
    s.frag_id = u32::from(be16(h, 4));
    if more || s.frag_off != 0 {
        s.flags |= PKT_FRAGMENT;
    }
    s.l4_off = (off + ihl) as u16;
    if s.frag_off != 0 {
        s.flags |= PKT_LATER_FRAGMENT;
        return if s.frag_off == 1 && s.proto == 6 { Err(Reason::FragmentOverlap) } else { Ok(()) };
    }
    match l4(f, off + ihl, off + total, s) {
        Err(Reason::L4Truncated) if more => Err(Reason::TinyFragment),
        r => r,
    }
}

fn is_ext(h: u8) -> bool {
    // As Linux walks them: the Mobility Header (135) is an upper-layer protocol.
    matches!(h, 0 | 43 | 44 | 51 | 60)
}

fn ipv6(f: &Frame<'_>, off: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let h = f.get(off, 40, Reason::Ipv6Truncated)?;
    s.family = FAMILY_IPV6;
    if h[0] >> 4 != 6 {
        return Err(Reason::IpBadVersion);
    }
    let end = off + 40 + usize::from(be16(h, 4));
    if end > f.b.len() {
        return Err(Reason::Ipv6BadLength);
    }
    s.src.copy_from_slice(&h[8..24]);
    s.dst.copy_from_slice(&h[24..40]);
    s.ttl = h[7];
    let mut next = h[6];
    let mut cur = off + 40;
    let (mut routing, mut dstopts, mut fragments) = (0, 0, 0);
    // Once past a fragment header, a cut chain is RFC 7112's incomplete chain.
    let incomplete = |r: Reason, fragments: i32| {
        if fragments > 0 && matches!(r, Reason::Ipv6ExtTruncated | Reason::L4Truncated) {
            Reason::Ipv6IncompleteChain
        } else {
            r
        }
    };
    let mut later = false;
    for _ in 0..MAX_IPV6_EXT {
        if !is_ext(next) {
            break;
        }
        let len = match next {
            44 => {
                fragments += 1;
                if fragments > 1 {
                    return Err(Reason::Ipv6ExtBadOrder);
                }
                let fh = f.get(cur, 8, Reason::Ipv6ExtTruncated)?;
                next = fh[0];
                s.frag_off = be16(fh, 2) >> 3;
                s.frag_id = u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]);
                s.flags |= PKT_FRAGMENT;
                later = s.frag_off != 0;
                8
            }
            51 => {
                let ah = f.get(cur, 2, Reason::Ipv6ExtTruncated).map_err(|r| incomplete(r, fragments))?;
                next = ah[0];
                (usize::from(ah[1]) + 2) * 4
            }
            kind => {
                if kind == 0 && s.ext_count != 0 {
                    return Err(Reason::Ipv6ExtBadOrder);
                }
                routing += i32::from(kind == 43);
                dstopts += i32::from(kind == 60);
                if routing > 1 || dstopts > 2 {
                    return Err(Reason::Ipv6ExtBadOrder);
                }
                let eh = f.get(cur, 4, Reason::Ipv6ExtTruncated).map_err(|r| incomplete(r, fragments))?;
                if kind == 43 && eh[2] == 0 {
                    return Err(Reason::Ipv6RoutingType0);
                }
                next = eh[0];
                (usize::from(eh[1]) + 1) * 8
            }
        };
        if cur + len > end {
            return Err(incomplete(Reason::Ipv6ExtTruncated, fragments));
        }
        if cur + len > MAX_HDR {
            return Err(Reason::HeadersTooLong);
        }
        cur += len;
        s.ext_count += 1;
        if later {
            break;
        }
    }
    if !later && is_ext(next) {
        return Err(Reason::Ipv6ExtTooLong);
    }
    s.proto = next;
    s.l4_off = cur as u16;
    if later {
        s.flags |= PKT_LATER_FRAGMENT;
        return if s.frag_off == 1 && s.proto == 6 { Err(Reason::FragmentOverlap) } else { Ok(()) };
    }
    l4(f, cur, end, s).map_err(|r| incomplete(r, fragments))
}

fn l4(f: &Frame<'_>, off: usize, end: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    match s.proto {
        6 => {
            if off + 20 > end {
                return Err(Reason::L4Truncated);
            }
            let t = f.get(off, 20, Reason::L4Truncated)?;
            let doff = usize::from(t[12] >> 4) * 4;
            if doff < 20 || off + doff > end {
                return Err(Reason::TcpBadDoff);
            }
            s.sport = be16(t, 0);
            s.dport = be16(t, 2);
            s.tcp_flags = t[13];
            s.tcp_seq = be32(t, 4);
            s.tcp_ack = be32(t, 8);
            s.tcp_win = be16(t, 14);
            s.tcp_len = if s.flags & PKT_FRAGMENT != 0 { 0 } else { (end - off - doff) as u16 };
            s.tcp_wscale = if t[13] & 0x02 != 0 { wscale(f, off + 20, doff - 20) } else { WSCALE_NONE };
        }
        17 => {
            if off + 8 > end {
                return Err(Reason::L4Truncated);
            }
            let u = f.get(off, 8, Reason::L4Truncated)?;
            s.sport = be16(u, 0);
            s.dport = be16(u, 2);
            let len = usize::from(be16(u, 4));
            let ok = if s.flags & PKT_FRAGMENT != 0 { len >= 8 } else { len == end - off };
            if !ok {
                return Err(Reason::UdpBadLength);
            }
        }
        1 | 58 => {
            if off + 8 > end {
                return Err(Reason::L4Truncated);
            }
            let i = f.get(off, 8, Reason::L4Truncated)?;
            s.icmp_type = i[0];
            s.icmp_code = i[1];
            s.sport = be16(i, 4);
            let error = match (s.family, s.proto) {
                (FAMILY_IPV4, 1) => matches!(i[0], 3 | 11),
                (FAMILY_IPV6, 58) => matches!(i[0], 1..=3),
                _ => false,
            };
            if error {
                quoted(f, off + 8, end, s)?;
            }
        }
        _ => return Ok(()),
    }
    s.flags |= PKT_HAS_L4;
    Ok(())
}

fn quoted(f: &Frame<'_>, off: usize, end: usize, s: &mut PacketSummary) -> Result<(), Reason> {
    let cut = Reason::IcmpQuoteTruncated;
    let l4 = if s.family == FAMILY_IPV4 {
        if off + 20 > end {
            return Err(cut);
        }
        let h = f.get(off, 20, cut)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return Err(cut);
        }
        s.inner_proto = h[9];
        s.inner_src[..4].copy_from_slice(&h[12..16]);
        s.inner_dst[..4].copy_from_slice(&h[16..20]);
        off + ihl
    } else {
        if off + 40 > end {
            return Err(cut);
        }
        let h = f.get(off, 40, cut)?;
        s.inner_proto = h[6];
        s.inner_src.copy_from_slice(&h[8..24]);
        s.inner_dst.copy_from_slice(&h[24..40]);
        off + 40
    };
    match s.inner_proto {
        6 | 17 => {
            if l4 + 4 > end {
                return Err(cut);
            }
            let p = f.get(l4, 4, cut)?;
            s.inner_sport = be16(p, 0);
            s.inner_dport = be16(p, 2);
        }
        1 | 58 => {
            if l4 + 8 > end {
                return Err(cut);
            }
            let i = f.get(l4, 8, cut)?;
            // Only a quoted echo request makes the error a candidate for RELATED.
            if !matches!(i[0], 8 | 128) {
                return Ok(());
            }
            s.inner_sport = be16(i, 4);
            s.inner_dport = s.inner_sport;
        }
        _ => {}
    }
    s.flags |= PKT_ICMP_ERROR;
    Ok(())
}
