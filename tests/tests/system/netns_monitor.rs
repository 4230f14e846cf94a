//! Monitor mode: with `attach --monitor on`, traffic the rules deny still flows and the drop
//! reasons' counters move (what would have been dropped); `--monitor off` enforces again.

use sg_tests::{
    group_rules,
    netns::{NetnsPair, Side},
    reason_count, require_bpf,
};

fn no_rule(pair: &NetnsPair) -> u64 {
    let st = pair.status_json();
    let iface = st["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["iface"] == pair.if_a.as_str())
        .unwrap()
        .clone();
    reason_count(&iface, "ingress", "no_rule", "packets")
}

#[test]
fn monitor_mode_counts_but_does_not_drop() {
    if !require_bpf("monitor_mode_counts_but_does_not_drop") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("monitor.toml", &pair.if_a, &["tcp 7000"], "");
    pair.sgctl_ok(Side::A, &["apply", file.to_str().unwrap()]);

    // Enforcing: UDP 7001 is denied.
    let before = no_rule(&pair);
    assert_eq!(pair.udp_delivered(7001, 20), 0, "enforcing: the denied datagrams are dropped");
    assert!(no_rule(&pair) >= before + 20);

    // Monitor: the same datagrams arrive, and are counted as no_rule.
    let out = pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--monitor", "on"]);
    assert!(out.contains("already attached"), "{out}");
    assert!(out.contains("monitor mode on: verdicts counted, nothing dropped"), "confirmed: {out}");
    let st = pair.status_json();
    assert_eq!(st["interfaces"][0]["monitor"], true, "{st}");
    assert_eq!(st["interfaces"][0]["policy"], "groups", "the rules stay applied");
    let before = no_rule(&pair);
    assert_eq!(pair.udp_delivered(7001, 20), 20, "monitor: nothing is dropped");
    assert!(no_rule(&pair) >= before + 20, "monitor: the would-drop counter moved");
    let text = pair.sgctl_ok(Side::A, &["status"]);
    assert!(text.contains("MONITOR MODE"), "{text}");

    // Enforce again.
    let out = pair.sgctl_ok(Side::A, &["attach", &pair.if_a, "--monitor", "off"]);
    assert!(out.contains("monitor mode off: enforcing"), "confirmed: {out}");
    assert_eq!(pair.status_json()["interfaces"][0]["monitor"], false);
    assert_eq!(pair.udp_delivered(7001, 20), 0, "enforcing again");
}

/// `monitor = true|false` in the rules file sets the mode at apply; a file without the key
/// leaves it as it is (so `attach --monitor` and a file without the key do not fight).
#[test]
fn rules_file_sets_monitor_mode() {
    if !require_bpf("rules_file_sets_monitor_mode") {
        return;
    }
    let pair = NetnsPair::new();
    let file = |monitor: &str| {
        group_rules(&format!("monitor-{}.toml", monitor.len()), &pair.if_a, &["tcp 7000"], monitor)
            .display()
            .to_string()
    };
    let monitor = || pair.status_json()["interfaces"][0]["monitor"].as_bool().expect("monitor");
    pair.sgctl_ok(Side::A, &["apply", &file("monitor = true\n")]);
    assert!(monitor(), "a new interface starts in the file's mode");
    assert_eq!(pair.udp_delivered(7001, 10), 10, "monitor: nothing is dropped");
    pair.sgctl_ok(Side::A, &["apply", &file("")]);
    assert!(monitor(), "a file without the key keeps the mode");
    pair.sgctl_ok(Side::A, &["apply", &file("monitor = false\n")]);
    assert!(!monitor());
    assert_eq!(pair.udp_delivered(7001, 10), 0, "enforcing");
}
