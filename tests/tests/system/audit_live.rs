//! `sgctl audit --live`: the applied rules with their hits (zero_hits) on a real interface.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use sg_tests::{
    netns::{NetnsPair, Side},
    require_bpf, write_temp,
};

#[test]
fn live_audit_reports_rules_with_zero_hits() {
    if !require_bpf("live_audit_reports_rules_with_zero_hits") {
        return;
    }
    let pair = NetnsPair::new();
    let rules = format!(
        "[groups.svc]\ningress = [\n  {{ proto = \"udp\", ports = \"7000\", from = \"192.0.2.0/24\" }},\n  \
         {{ proto = \"udp\", ports = \"7001\", from = \"192.0.2.0/24\" }},\n]\n\
         egress = [ {{ proto = \"udp\", ports = \"53\", to = \"192.0.2.53/32\" }} ]\n\n[interfaces.{}]\ngroups = [\"svc\"]\n",
        pair.if_a
    );
    let file = write_temp("audit-live.toml", &rules);
    pair.sgctl_ok(Side::A, &["apply", file.to_str().unwrap()]);
    let dst = SocketAddr::new(pair.addr(Side::A, false), 7000);
    pair.run(Side::B, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.send_to(b"hit rule 0", dst).expect("send");
    });
    std::thread::sleep(Duration::from_millis(100));
    let out = pair.sgctl_ok(Side::A, &["audit", "--live", "--json", "--fail-on", "never"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    let zero: Vec<&str> =
        v.iter().filter(|f| f["check"] == "zero_hits").map(|f| f["rule"].as_str().unwrap()).collect();
    assert!(zero.iter().any(|r| r.contains("udp 7001")), "{out}");
    assert!(!zero.iter().any(|r| r.contains("udp 7000")), "rule 0 was hit: {out}");
    // Warnings fail the gate at --fail-on warn.
    assert!(!pair.sgctl(Side::A, &["audit", "--live", "--fail-on", "warn"]).status.success());
}
