//! `sgctl replay`: a capture written here (an allowed TCP flow with its replies, denied probes,
//! an unsolicited "reply", an allowed egress DNS query and its answer) run through the real
//! programs with the candidate rules gives the expected per-rule hits and drop list; the live
//! interface's counters do not move.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use sg_tests::{
    netns::{NetnsPair, Side},
    packet::{Pkt, TCP_ACK, TCP_PSH, TCP_SYN},
    require_bpf, write_temp,
};

fn capture(name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let path = write_temp(name, "");
    let f = std::fs::File::create(&path).unwrap();
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(f, header).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(Duration::from_millis(i as u64), fr.len() as u32, fr)).unwrap();
    }
    path
}

#[test]
fn replay_reports_rule_hits_and_drops_and_leaves_live_counters_alone() {
    if !require_bpf("replay_reports_rule_hits_and_drops_and_leaves_live_counters_alone") {
        return;
    }
    let pair = NetnsPair::new();
    let (a, b): (IpAddr, IpAddr) = (pair.addr(Side::A, false), pair.addr(Side::B, false));
    let rules = write_temp(
        "replay.toml",
        &format!(
            "[groups.g]\ningress = [\n  {{ proto = \"tcp\", ports = \"7000\", from = \"192.0.2.0/24\" }},\n  \
             {{ proto = \"udp\", ports = \"5000\", from = \"192.0.2.0/24\" }},\n]\n\
             egress = [ {{ proto = \"udp\", ports = \"53\", to = \"192.0.2.0/24\" }} ]\n\n\
             [interfaces.{}]\ngroups = [\"g\"]\n",
            pair.if_a
        ),
    );
    pair.sgctl_ok(Side::A, &["apply", rules.to_str().unwrap()]);

    let frames = vec![
        Pkt::tcp(b, a, 40000, 7000).syn().build(), // 1 allowed: rule 0
        Pkt::tcp(a, b, 7000, 40000).flags(TCP_SYN | TCP_ACK).build(), // 2 reply
        Pkt::tcp(b, a, 40000, 7000).build(),       // 3 established
        Pkt::tcp(b, a, 40000, 7000).flags(TCP_ACK | TCP_PSH).payload(b"x").build(), // 4
        Pkt::tcp(b, a, 40001, 22).syn().build(),   // 5 denied probe
        Pkt::udp(b, a, 5353, 53).payload(b"q").build(), // 6 denied
        Pkt::udp(b, a, 5353, 53).payload(b"q").build(), // 7 same flow
        Pkt::tcp(b, a, 80, 40002).flags(TCP_SYN | TCP_ACK).build(), // 8 unsolicited reply
        Pkt::udp(a, b, 40003, 53).payload(b"q").build(), // 9 egress: rule 2
        Pkt::udp(b, a, 53, 40003).payload(b"a").build(), // 10 its answer
        Pkt::udp(b, a, 40004, 5000).build(),       // 11 allowed: rule 1
        Pkt::udp(b, a, 40004, 5000).build(),       // 12 tracked
    ];
    let cap = capture("replay.pcap", &frames);
    let before = pair.status_json();
    let stats_before = pair.sgctl_ok(Side::A, &["stats", "--json"]);

    // `sgctl replay CAPTURE --rules FILE ARGS` in A.
    let replay = |args: &[&str]| {
        let (c, r) = (cap.to_str().unwrap(), rules.to_str().unwrap());
        pair.sgctl(Side::A, &[&["replay", c, "--rules", r], args].concat())
    };
    let ok = |args: &[&str]| {
        let out = replay(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = ok(&["--local", "192.0.2.1/32", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["packets"], 12, "{r}");
    assert_eq!(r["dropped"], 4, "{r}");
    let hits: Vec<u64> =
        r["rules_hits"].as_array().unwrap().iter().map(|h| h["hits"].as_u64().unwrap()).collect();
    assert_eq!(hits, [1, 1, 1], "one flow start per rule: {r}");
    let drops: Vec<(u64, &str, &str, u64, u64, &str, u64)> = r["drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["first_packet"].as_u64().unwrap(),
                d["direction"].as_str().unwrap(),
                d["proto"].as_str().unwrap(),
                d["sport"].as_u64().unwrap(),
                d["dport"].as_u64().unwrap(),
                d["reason"].as_str().unwrap(),
                d["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        drops,
        [
            (5, "ingress", "tcp", 40001, 22, "no_rule", 1),
            (6, "ingress", "udp", 5353, 53, "no_rule", 2),
            (8, "ingress", "tcp", 80, 40002, "tcp_not_syn", 1),
        ],
        "{r}"
    );
    assert_eq!(r["drops"][0]["src"], b.to_string());
    let verdict = |dir: &str, reason: &str| {
        r["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["direction"] == dir && v["reason"] == reason)
            .map_or(0, |v| v["packets"].as_u64().unwrap())
    };
    assert_eq!(verdict("egress", "ct_reply"), 1, "the SYN-ACK is a reply of the tracked flow: {r}");
    assert_eq!(verdict("ingress", "ct_reply"), 1, "the DNS answer: {r}");
    assert_eq!(verdict("egress", "rule_allow"), 1, "{r}");

    // The human report says the same.
    let text = ok(&["--local", "192.0.2.1/32"]);
    assert!(text.contains("12 packets") && text.contains("tcp_not_syn"), "{text}");
    // --fail-on-drop gates.
    let gated = replay(&["--local", "192.0.2.1/32", "--fail-on-drop"]);
    assert!(!gated.status.success());

    // Nothing live moved (but the kernel's own neighbour discovery on the live link).
    let live = |st: &serde_json::Value| -> Vec<(String, u64)> {
        st["interfaces"][0]["counters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["reason"] != "implicit_ndp")
            .map(|c| (format!("{}/{}", c["direction"], c["reason"]), c["packets"].as_u64().unwrap()))
            .collect()
    };
    let live_before = live(&before);
    assert!(live_before.len() > 40, "{live_before:?}");
    assert_eq!(live(&pair.status_json()), live_before);
    assert_eq!(pair.sgctl_ok(Side::A, &["stats", "--json"]), stats_before);

    // Without --local every packet is ingress (--iface-role): the egress query is then an
    // ingress packet to port 53 (denied), and its answer starts nothing.
    let out = ok(&["--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["dropped"].as_u64().unwrap() > 4, "{r}");

    // Candidate rules with a network ACL whose rule 10 denies udp 5000: both datagrams of
    // that flow are dropped by the ACL (stateless: the second one as well), the rest as before.
    let text = std::fs::read_to_string(&rules).unwrap()
        + "acl = \"edge\"\n[acls.edge]\ningress = [\n  { rule = 10, action = \"deny\", proto = \"udp\", ports = \"5000\", cidr = \"192.0.2.0/24\" },\n  { rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" },\n]\negress = [{ rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }]\n";
    let with_acl = write_temp("replay-acl.toml", &text);
    let out = pair.sgctl(
        Side::A,
        &[
            "replay",
            cap.to_str().unwrap(),
            "--rules",
            with_acl.to_str().unwrap(),
            "--local",
            "192.0.2.1/32",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["dropped"], 6, "{r}");
    let acl_drop =
        r["drops"].as_array().unwrap().iter().find(|d| d["reason"] == "acl_deny").expect("an ACL drop");
    assert_eq!((acl_drop["dport"].as_u64(), acl_drop["packets"].as_u64()), (Some(5000), Some(2)), "{r}");
    // The ACL's entries with the packets each decided: rule 10 the two it denied.
    let acl_hits = r["acl_hits"].as_array().expect("acl_hits");
    let deny = acl_hits.iter().find(|h| h["number"] == 10).expect("entry 10");
    assert_eq!(
        (&deny["acl"], &deny["direction"], &deny["hits"]),
        (&"edge".into(), &"ingress".into(), &2.into()),
        "{r}"
    );
    let allow =
        acl_hits.iter().find(|h| h["number"] == 100 && h["direction"] == "ingress").expect("entry 100");
    assert!(allow["hits"].as_u64().is_some_and(|n| n > 0), "every other ingress packet: {r}");
}
