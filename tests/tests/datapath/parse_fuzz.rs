//! Differential parse fuzzer: random and mutated frames (valid corpus, bytes flipped, frames
//! cut, length fields lying) through the kernel programs and through the userspace reference
//! parser (`sg_tests::refparse`); both must agree: not IP, malformed for the same reason, or
//! the same parsed summary. At least 100,000 frames; replay with `SG_FUZZ_SEED=<seed>`.

use std::{fmt::Write as _, net::IpAddr};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sg_common::{Direction, PacketSummary, Reason};
use sg_tests::{
    packet::{Ext, Pkt, arp_frame, legal_chain},
    policy::recording_instance,
    refparse::{self, Outcome},
    require_bpf,
};

const FRAMES: usize = 110_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Valid frames of every shape the parser knows.
fn corpus() -> Vec<Vec<u8>> {
    let (a4, b4) = (ip("192.0.2.2"), ip("192.0.2.1"));
    let (a6, b6) = (ip("2001:db8::2"), ip("2001:db8::1"));
    let mut c = vec![arp_frame()];
    for (a, b) in [(a4, b4), (a6, b6)] {
        let v6 = a.is_ipv6();
        let (echo, err) = if v6 { (128, 1) } else { (8, 3) };
        c.push(Pkt::tcp(a, b, 40000, 80).syn().build());
        c.push(Pkt::tcp(a, b, 40000, 80).tcp_doff(8).payload(&[1; 40]).build());
        c.push(Pkt::udp(a, b, 5353, 53).payload(&[2; 30]).build());
        c.push(Pkt::icmp(a, b, echo, 0).payload(&[3; 20]).build());
        c.push(Pkt::icmp_error(a, b, err, 4, &Pkt::udp(b, a, 1000, 53).payload(&[4; 30]), 64).build());
        c.push(Pkt::icmp_error(a, b, err, 0, &Pkt::tcp(b, a, 1000, 80), 40).build());
        c.push(Pkt::raw(a, b, 47, &[5; 24]).build());
        c.push(Pkt::tcp(a, b, 1, 22).syn().vlan(5).build());
        c.push(Pkt::udp(a, b, 1, 53).vlan_ad(5).vlan(6).build());
        if v6 {
            c.push(legal_chain(Pkt::tcp(a, b, 1, 443).syn(), 6).build());
            c.push(legal_chain(Pkt::udp(a, b, 1, 53), 3).build());
            c.push(
                Pkt::udp(a, b, 1, 53)
                    .ext(Ext::Fragment { offset8: 0, more: true, id: 9 })
                    .payload(&[6; 40])
                    .build(),
            );
            c.push(
                Pkt::raw(a, b, 17, &[6; 40]).ext(Ext::Fragment { offset8: 3, more: false, id: 9 }).build(),
            );
            c.push(
                Pkt::tcp(a, b, 1, 80)
                    .syn()
                    .ext(Ext::DestOpts { len8: 1 })
                    .ext(Ext::HopByHop { len8: 0 })
                    .build(),
            );
            c.push(
                Pkt::tcp(a, b, 1, 80).syn().ext(Ext::Routing { rtype: 0, segments_left: 1, len8: 2 }).build(),
            );
        } else {
            c.push(Pkt::tcp(a, b, 1, 443).syn().ipv4_options(&[1; 40]).build());
            c.push(Pkt::udp(a, b, 1, 53).payload(&[7; 40]).ipv4_fragment(true, 0, 77).build());
            c.push(Pkt::raw(a, b, 6, &[7; 40]).ipv4_fragment(false, 1, 78).build());
            c.push(Pkt::raw(a, b, 17, &[7; 40]).ipv4_fragment(false, 9, 77).build());
        }
    }
    c
}

/// One to three mutations: flipped bytes, a cut, a lying length field, random tails.
fn mutate(rng: &mut StdRng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=3) {
        match rng.random_range(0..8) {
            0 | 1 => {
                // Flip bytes, mostly in the headers.
                for _ in 0..rng.random_range(1..4) {
                    let hi = f.len().min(if rng.random_bool(0.8) { 100 } else { f.len() });
                    if hi > 0 {
                        let i = rng.random_range(0..hi);
                        f[i] ^= 1 << rng.random_range(0..8);
                    }
                }
            }
            2 => {
                let n = rng.random_range(0..=f.len());
                f.truncate(n);
            }
            3 => {
                // EtherType (possibly behind VLAN tags).
                let at = *[12usize, 16, 20].choose(rng).unwrap();
                if f.len() >= at + 2 {
                    let v: u16 =
                        *[0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806, rng.random()].choose(rng).unwrap();
                    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            4 | 5 => {
                // A 16-bit length field somewhere in the first 80 bytes gets a lie.
                if f.len() > 20 {
                    let i = rng.random_range(14..f.len().min(80) - 1);
                    let v: u16 =
                        *[0u16, 1, 7, 8, 19, 20, 40, 0xffff, rng.random_range(0..200)].choose(rng).unwrap();
                    f[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            6 => {
                // IHL / data offset / extension length nibbles and bytes.
                if f.len() > 20 {
                    let i = rng.random_range(14..f.len().min(90));
                    f[i] = rng.random();
                }
            }
            _ => {
                let n = rng.random_range(0..64);
                f.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
    f
}

/// The kernel's outcome for the frame just run, from the recorded summary.
fn kernel_outcome(s: &PacketSummary) -> Outcome {
    match Reason::from_u32(s.reason) {
        Some(Reason::PassNonIp) => Outcome::NotIp,
        Some(r) if r.is_malformed() => Outcome::Malformed(r),
        _ => Outcome::Parsed(PacketSummary { seq: 0, reason: 0, rule: 0, ..*s }),
    }
}

#[test]
fn kernel_parser_agrees_with_the_reference_parser() {
    if !require_bpf("kernel_parser_agrees_with_the_reference_parser") {
        return;
    }
    let seed: u64 = std::env::var("SG_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("parse fuzz seed {seed} (replay: SG_FUZZ_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let corpus = corpus();
    let mut inst = recording_instance();
    let (mut compared, mut skipped) = (0usize, 0usize);
    let mut by_outcome = [0usize; 3];
    for n in 0..FRAMES {
        let frame = match rng.random_range(0..10) {
            0 => {
                let n = rng.random_range(0..200);
                (0..n).map(|_| rng.random::<u8>()).collect()
            }
            1 => corpus.choose(&mut rng).unwrap().clone(),
            _ => {
                let base = corpus.choose(&mut rng).unwrap().clone();
                mutate(&mut rng, base)
            }
        };
        let dir = if rng.random_bool(0.8) { Direction::Ingress } else { Direction::Egress };
        let before = inst.maps().last_parse().unwrap().seq;
        // The kernel's test harness refuses some frames (shorter than Ethernet; for TC, an IP
        // header cut short): those cannot be compared.
        if inst.run(dir, &frame).is_err() {
            skipped += 1;
            continue;
        }
        let got = inst.maps().last_parse().unwrap();
        assert_eq!(got.seq, before + 1, "frame {n} not recorded");
        let kernel = kernel_outcome(&got);
        let reference = refparse::parse(&frame);
        assert!(
            kernel == reference,
            "seed {seed} (SG_FUZZ_SEED={seed}), frame {n} ({} bytes, {}):\n  kernel:    {kernel:?}\n  reference: {reference:?}\n  frame: {}",
            frame.len(),
            dir.as_str(),
            frame.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        );
        by_outcome[match kernel {
            Outcome::NotIp => 0,
            Outcome::Malformed(_) => 1,
            Outcome::Parsed(_) => 2,
        }] += 1;
        compared += 1;
        if n % 5000 == 0 {
            inst.maps_mut().ct_flush().unwrap();
        }
    }
    println!(
        "parse fuzz: {compared} frames agree ({} not IP, {} malformed, {} parsed), {skipped} refused by the test harness",
        by_outcome[0], by_outcome[1], by_outcome[2]
    );
    assert!(compared >= 100_000, "at least 100,000 frames compared: {compared} ({skipped} skipped)");
    assert!(
        by_outcome.iter().all(|&n| n > FRAMES / 50),
        "the generator must reach every outcome: {by_outcome:?}"
    );
}
