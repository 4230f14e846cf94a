//! `sgctl top --json`: rates per reason, the busiest rules and the busiest network ACL entries
//! move with real traffic.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sg_tests::{
    group_rules,
    netns::{NetnsPair, Side},
    require_bpf,
};

#[test]
fn top_json_shows_rates_and_busiest_rules() {
    if !require_bpf("top_json_shows_rates_and_busiest_rules") {
        return;
    }
    let pair = NetnsPair::new();
    // A network ACL that lets everything through: its ingress entry decides every datagram.
    let acl = "acl = \"edge\"\n[acls.edge]\ningress = [{ rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }]\negress = [{ rule = 100, action = \"allow\", proto = \"all\", cidr = \"0.0.0.0/0\" }]\n";
    let file = group_rules("top.toml", &pair.if_a, &["udp 7000"], acl);
    pair.sgctl_ok(Side::A, &["apply", &file.display().to_string()]);

    // B sends for at most 4 s: a new flow (fresh socket) to the allowed port every 2 ms, and a
    // datagram to a denied port.
    let dst = pair.addr(Side::A, false);
    let sender = pair.run_spawn(Side::B, move || {
        let start = Instant::now();
        let mut sent = 0u32;
        while start.elapsed() < Duration::from_secs(4) && sent < 2000 {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let _ = s.send_to(b"allowed", SocketAddr::new(dst, 7000));
            let _ = s.send_to(b"denied", SocketAddr::new(dst, 7001));
            sent += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = pair.sgctl_ok(Side::A, &["top", "--json", "--count", "2", "--interval", "0.5"]);
    let sent = sender.join().expect("sender");
    assert!(sent > 100, "sender sent only {sent}");

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one line per sample: {out}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert!(v["interval"].as_f64().expect("interval") >= 0.4, "{line}");
        let iface = v["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .find(|i| i["iface"] == pair.if_a.as_str())
            .unwrap_or_else(|| panic!("no {} in {line}", pair.if_a))
            .clone();
        assert!(iface["ingress_pps"].as_f64().unwrap() > 50.0, "{line}");
        assert!(iface["ingress_bps"].as_f64().unwrap() > 0.0, "{line}");
        let rate = |reason: &str| {
            iface["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["direction"] == "ingress" && r["reason"] == reason)
                .map(|r| r["pps"].as_f64().unwrap())
                .sum::<f64>()
        };
        assert!(rate("rule_allow") > 50.0, "allowed new flows move: {line}");
        assert!(rate("no_rule") > 50.0, "denied datagrams move: {line}");
        let top = iface["top_rules"].as_array().expect("top_rules");
        assert_eq!(
            (&top[0]["direction"], &top[0]["index"]),
            (&"ingress".into(), &0.into()),
            "#0 is the busiest: {line}"
        );
        assert!(top[0]["rule"].as_str().unwrap().starts_with("udp 7000"), "{line}");
        assert!(top[0]["hits_per_s"].as_f64().unwrap() > 50.0, "{line}");
        let acl = iface["top_acl_entries"].as_array().expect("top_acl_entries");
        assert_eq!((&acl[0]["acl"], &acl[0]["direction"]), (&"edge".into(), &"ingress".into()), "{line}");
        assert!(acl[0]["rule"].as_str().unwrap().starts_with("100 allow all"), "{line}");
        assert!(
            acl[0]["hits_per_s"].as_f64().unwrap() > top[0]["hits_per_s"].as_f64().unwrap(),
            "every datagram, allowed or denied by the groups, meets the ACL: {line}"
        );
    }
}
