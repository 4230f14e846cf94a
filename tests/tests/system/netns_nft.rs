//! `sgctl export nft`: the exported ruleset, loaded into a namespace's nftables (no sgctl
//! attached), enforces the same security group: an allowed TCP port connects, another does
//! not, and the drop is counted.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use sg_tests::{
    group_rules,
    netns::{NetnsPair, Side},
    require_bpf, write_temp,
};

fn connects(pair: &NetnsPair, port: u16) -> bool {
    let addr = SocketAddr::new(pair.addr(Side::A, false), port);
    pair.run(Side::B, move || TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok())
}

#[test]
fn exported_ruleset_enforces_the_group_in_nftables() {
    if !require_bpf("exported_ruleset_enforces_the_group_in_nftables") {
        return;
    }
    let pair = NetnsPair::new();
    let file = group_rules("nft-rules.toml", &pair.if_a, &["tcp 7000"], "");
    // Export from the file: nothing is attached or applied.
    let script = pair.sgctl_ok(Side::A, &["export", "nft", &file.display().to_string()]);
    assert!(pair.status_json()["interfaces"].as_array().unwrap().is_empty(), "export attached nothing");
    let nft_file = write_temp("exported.nft", &script);
    let out = pair.cmd(Side::A, "nft", &["-f", &nft_file.display().to_string()]);
    assert!(out.status.success(), "nft -f: {}", String::from_utf8_lossy(&out.stderr));

    let listeners: Vec<TcpListener> = [7000u16, 7001]
        .iter()
        .map(|p| {
            let addr = SocketAddr::new(pair.addr(Side::A, false), *p);
            pair.run(Side::A, move || TcpListener::bind(addr).expect("bind"))
        })
        .collect();
    assert!(connects(&pair, 7000), "tcp 7000 is allowed by the group");
    assert!(!connects(&pair, 7001), "tcp 7001 is not");
    drop(listeners);

    let listing = pair.cmd(Side::A, "nft", &["-j", "list", "table", "inet", "sgctl"]);
    let v: serde_json::Value = serde_json::from_slice(&listing.stdout).expect("nft -j");
    let dropped: u64 = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["rule"]["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum();
    assert!(dropped >= 1, "the SYN to 7001 was counted as dropped");
    // The namespace's ruleset goes with the namespace when the pair drops.
}
