//! A small frame builder for verdict tables: Ethernet, VLAN tags, IPv4 (with options and
//! fragment fields) or IPv6 (with any chain of extension headers, legal or not), then TCP,
//! UDP, ICMP/ICMPv6 or raw payload. Checksums are computed where cheap (IPv4 header); the
//! datapath does not verify them. Hostile frames are made by building and then mutating bytes.

use std::net::IpAddr;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// An IPv6 extension header in the chain, in the order given.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop options, `len8` units of 8 bytes beyond the first 8 (Hdr Ext Len).
    HopByHop { len8: u8 },
    /// Destination options.
    DestOpts { len8: u8 },
    /// Routing header of type `rtype` with `segments_left`.
    Routing { rtype: u8, segments_left: u8, len8: u8 },
    /// Fragment header.
    Fragment { offset8: u16, more: bool, id: u32 },
    /// Authentication header (12 bytes: no ICV).
    Ah,
}

impl Ext {
    fn proto(&self) -> u8 {
        match self {
            Ext::HopByHop { .. } => 0,
            Ext::Routing { .. } => 43,
            Ext::Fragment { .. } => 44,
            Ext::DestOpts { .. } => 60,
            Ext::Ah => 51,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        match *self {
            Ext::HopByHop { len8 } | Ext::DestOpts { len8 } => {
                out.extend([next, len8]);
                // PadN option filling the rest.
                let rest = usize::from(len8) * 8 + 6;
                out.extend([1u8, (rest - 2) as u8]);
                out.extend(std::iter::repeat_n(0u8, rest - 2));
            }
            Ext::Routing { rtype, segments_left, len8 } => {
                out.extend([next, len8, rtype, segments_left]);
                out.extend(std::iter::repeat_n(0u8, usize::from(len8) * 8 + 4));
            }
            Ext::Fragment { offset8, more, id } => {
                let off_flags = (offset8 << 3) | u16::from(more);
                out.extend([next, 0]);
                out.extend(off_flags.to_be_bytes());
                out.extend(id.to_be_bytes());
            }
            Ext::Ah => {
                // Payload length in 4-byte units minus 2: 12 bytes -> 1.
                out.extend([next, 1, 0, 0]);
                out.extend(0x1000u32.to_be_bytes());
                out.extend(1u32.to_be_bytes());
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        doff_words: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6), chosen by the address family.
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
    },
    /// Any other protocol number with raw bytes.
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
    /// An ICMP/ICMPv6 error quoting a packet (its IP header onwards); `extra` is the 4-byte
    /// field after the checksum (next-hop MTU of frag-needed, MTU of packet-too-big).
    IcmpError {
        icmp_type: u8,
        code: u8,
        extra: u32,
        quoted: Vec<u8>,
    },
}

impl L4 {
    fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } | L4::IcmpError { .. } if v6 => 58,
            L4::Icmp { .. } | L4::IcmpError { .. } => 1,
            L4::Raw { proto, .. } => *proto,
        }
    }
}

/// A frame under construction. `Pkt::tcp(..).vlan(10).syn().build()`.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    pub ipv4_options: Vec<u8>,
    /// IPv4 (more fragments, offset in 8-byte units, identification).
    pub ipv4_frag: (bool, u16, u16),
    pub ipv6_ext: Vec<Ext>,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// TCP sequence and acknowledgment numbers (default 1000, and 2000 with ACK), window.
    pub tcp_seq: u32,
    pub tcp_ack: Option<u32>,
    pub tcp_window: u16,
    /// TCP options (padded to a multiple of 4 with EOL; they set the data offset).
    pub tcp_options: Vec<u8>,
}

impl Pkt {
    fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        assert_eq!(src.is_ipv6(), dst.is_ipv6(), "mixed address families");
        Pkt {
            src,
            dst,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_frag: (false, 0, 0x1234),
            ipv6_ext: Vec::new(),
            l4,
            payload: Vec::new(),
            ttl: 64,
            tcp_seq: 1000,
            tcp_ack: None,
            tcp_window: 64240,
            tcp_options: Vec::new(),
        }
    }

    /// TCP sequence number.
    pub fn seq(mut self, seq: u32) -> Self {
        self.tcp_seq = seq;
        self
    }

    /// TCP acknowledgment number.
    pub fn ack(mut self, ack: u32) -> Self {
        self.tcp_ack = Some(ack);
        self
    }

    /// TCP window (as sent).
    pub fn window(mut self, w: u16) -> Self {
        self.tcp_window = w;
        self
    }

    /// TCP options: `[2, 4, 5, 180, 1, 3, 3, 7]` is MSS 1460, NOP, window scale 7.
    pub fn tcp_options(mut self, opts: &[u8]) -> Self {
        self.tcp_options = opts.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        let words = 5 + (self.tcp_options.len() / 4) as u8;
        self.tcp_doff(words)
    }

    /// A TCP segment with the ACK flag (change with [`Pkt::flags`]).
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, L4::Tcp { sport, dport, flags: TCP_ACK, doff_words: 5 })
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    /// ICMP (v4) or ICMPv6 (v6) message.
    pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8) -> Self {
        Self::new(src, dst, L4::Icmp { icmp_type, code, id: 0x4242 })
    }

    /// An ICMP (v4) or ICMPv6 error from `src` to `dst` quoting `quoted` (as sent, from its IP
    /// header on), cut to `quote_len` bytes.
    pub fn icmp_error(
        src: IpAddr,
        dst: IpAddr,
        icmp_type: u8,
        code: u8,
        quoted: &Pkt,
        quote_len: usize,
    ) -> Self {
        let full = quoted.build();
        let ip = &full[quoted.l3_offset()..];
        let quoted = ip[..quote_len.min(ip.len())].to_vec();
        Self::new(src, dst, L4::IcmpError { icmp_type, code, extra: 1280, quoted })
    }

    pub fn raw(src: IpAddr, dst: IpAddr, proto: u8, bytes: &[u8]) -> Self {
        Self::new(src, dst, L4::Raw { proto, bytes: bytes.to_vec() })
    }

    /// Adds an 802.1Q tag (inside any tag already added).
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push((0x8100, vid));
        self
    }

    /// Adds an 802.1ad (QinQ service) tag.
    pub fn vlan_ad(mut self, vid: u16) -> Self {
        self.vlans.push((0x88a8, vid));
        self
    }

    pub fn flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { flags: f, .. } = &mut self.l4 {
            *f = flags;
        }
        self
    }

    pub fn syn(self) -> Self {
        self.flags(TCP_SYN)
    }

    /// TCP data offset in 32-bit words (5 = no options); options are zero bytes.
    pub fn tcp_doff(mut self, words: u8) -> Self {
        if let L4::Tcp { doff_words, .. } = &mut self.l4 {
            *doff_words = words;
        }
        self
    }

    /// IPv4 options (padded to a multiple of 4 with End-of-Options).
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        self.ipv4_options = opts.to_vec();
        while !self.ipv4_options.len().is_multiple_of(4) {
            self.ipv4_options.push(0);
        }
        self
    }

    pub fn ipv4_fragment(mut self, more: bool, offset8: u16, id: u16) -> Self {
        self.ipv4_frag = (more, offset8, id);
        self
    }

    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_ext.push(ext);
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.l4 {
            L4::Tcp { sport, dport, flags, doff_words } => {
                out.extend(sport.to_be_bytes());
                out.extend(dport.to_be_bytes());
                out.extend(self.tcp_seq.to_be_bytes());
                let ack = self.tcp_ack.unwrap_or(if flags & TCP_ACK != 0 { 2000 } else { 0 });
                out.extend(ack.to_be_bytes());
                out.push(doff_words << 4);
                out.push(*flags);
                out.extend(self.tcp_window.to_be_bytes());
                out.extend([0, 0, 0, 0]); // checksum, urgent
                let opt_len = usize::from(*doff_words).saturating_sub(5) * 4;
                let opts = self.tcp_options.iter().copied().chain(std::iter::repeat(0u8));
                out.extend(opts.take(opt_len));
            }
            L4::Udp { sport, dport } => {
                out.extend(sport.to_be_bytes());
                out.extend(dport.to_be_bytes());
                out.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                out.extend([0, 0]);
            }
            L4::Icmp { icmp_type, code, id } => {
                out.extend([*icmp_type, *code, 0, 0]);
                out.extend(id.to_be_bytes());
                out.extend(1u16.to_be_bytes());
            }
            L4::Raw { bytes, .. } => out.extend(bytes),
            L4::IcmpError { icmp_type, code, extra, quoted } => {
                out.extend([*icmp_type, *code, 0, 0]);
                out.extend(extra.to_be_bytes());
                out.extend(quoted);
            }
        }
        out.extend(&self.payload);
        out
    }

    /// The frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend(MAC_A);
        f.extend(MAC_B);
        for (tpid, vid) in &self.vlans {
            f.extend(tpid.to_be_bytes());
            f.extend(vid.to_be_bytes());
        }
        let body = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                f.extend(0x0800u16.to_be_bytes());
                let ihl = 20 + self.ipv4_options.len();
                let mut h = Vec::with_capacity(ihl);
                h.push(0x40 | (ihl / 4) as u8);
                h.push(0);
                h.extend(((ihl + body.len()) as u16).to_be_bytes());
                h.extend(self.ipv4_frag.2.to_be_bytes());
                let frag = (u16::from(self.ipv4_frag.0) << 13) | self.ipv4_frag.1;
                h.extend(frag.to_be_bytes());
                h.push(self.ttl);
                h.push(self.l4.proto(false));
                h.extend([0, 0]);
                h.extend(src.octets());
                h.extend(dst.octets());
                h.extend(&self.ipv4_options);
                let sum = checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend(h);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                f.extend(0x86ddu16.to_be_bytes());
                let mut ext = Vec::new();
                for (i, e) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).map_or(self.l4.proto(true), Ext::proto);
                    e.write(next, &mut ext);
                }
                let first = self.ipv6_ext.first().map_or(self.l4.proto(true), Ext::proto);
                f.extend([0x60, 0, 0, 0]);
                f.extend(((ext.len() + body.len()) as u16).to_be_bytes());
                f.push(first);
                f.push(self.ttl);
                f.extend(src.octets());
                f.extend(dst.octets());
                f.extend(ext);
            }
            _ => unreachable!("checked in Pkt::new"),
        }
        f.extend(body);
        f
    }

    /// Offset of the IP header in the built frame.
    pub fn l3_offset(&self) -> usize {
        14 + 4 * self.vlans.len()
    }
}

/// An ARP request frame (non-IP: passes unfiltered).
pub fn arp_frame() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend([0xff; 6]);
    f.extend(MAC_B);
    f.extend(0x0806u16.to_be_bytes());
    f.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(MAC_B);
    f.extend([192, 0, 2, 2]);
    f.extend([0; 6]);
    f.extend([192, 0, 2, 1]);
    f
}

/// Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A legal chain of `n` (at most 7) IPv6 extension headers: hop-by-hop, destination options,
/// routing type 2, AH, destination options, then AHs.
pub fn legal_chain(mut p: Pkt, n: usize) -> Pkt {
    let order = [
        Ext::HopByHop { len8: 0 },
        Ext::DestOpts { len8: 0 },
        Ext::Routing { rtype: 2, segments_left: 0, len8: 2 },
        Ext::Ah,
        Ext::DestOpts { len8: 0 },
        Ext::Ah,
        Ext::Ah,
    ];
    for e in order.iter().take(n) {
        p = p.ext(e.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a4() -> IpAddr {
        "192.0.2.2".parse().unwrap()
    }
    fn b4() -> IpAddr {
        "192.0.2.1".parse().unwrap()
    }

    #[test]
    fn ipv4_tcp_layout() {
        let f = Pkt::tcp(a4(), b4(), 40000, 80).syn().build();
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40);
        assert_eq!(f[23], 6);
        assert_eq!(checksum(&f[14..34]), 0, "header checksum must verify");
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 80);
        assert_eq!(f[47], TCP_SYN);
    }

    #[test]
    fn vlan_and_options_shift_the_ports() {
        let p = Pkt::udp(a4(), b4(), 5353, 53).vlan_ad(10).vlan(20).ipv4_options(&[0x94, 4, 0, 0]);
        let f = p.build();
        assert_eq!(p.l3_offset(), 22);
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert_eq!(&f[16..18], &[0x81, 0x00]);
        assert_eq!(f[22], 0x46);
        assert_eq!(u16::from_be_bytes([f[22 + 24 + 2], f[22 + 24 + 3]]), 53);
    }

    #[test]
    fn ipv6_chain_links_next_headers() {
        let v6a: IpAddr = "2001:db8::2".parse().unwrap();
        let v6b: IpAddr = "2001:db8::1".parse().unwrap();
        let f = Pkt::tcp(v6a, v6b, 1, 2)
            .ext(Ext::HopByHop { len8: 0 })
            .ext(Ext::Fragment { offset8: 0, more: true, id: 7 })
            .build();
        assert_eq!(f[20], 0, "first next header: hop-by-hop");
        assert_eq!(f[54], 44, "hop-by-hop -> fragment");
        assert_eq!(f[62], 6, "fragment -> tcp");
        assert_eq!(u16::from_be_bytes([f[18], f[19]]) as usize, f.len() - 54);
    }
}
