//! Kernel memory of sgctl's maps (`bytes_memlock` as bpftool reports it: the kernel's own
//! accounting of each map, which for the no-prealloc conntrack table grows with what it
//! holds; the prefix tables are preallocated arrays). Measured on a private instance with generated rule sets, then with
//! both conntrack tables filled to their default sizes (`SG_CT` 262,144 and `SG_CT_NEW`
//! 65,536 flows).

use std::process::Command;

use anyhow::{Context as _, Result};
use sg_common::{
    IfaceConfig, Posture,
    conntrack::{CtEntry, CtKey},
};
use sg_userspace::{
    loader::PrivateInstance,
    maps::{CtTable, ct_now_ns},
    rules::compile,
};

use super::{Bench, rulegen};

/// (map name, bytes) of every map of `inst`.
fn maps(inst: &PrivateInstance) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for id in inst.map_ids()? {
        let o = Command::new("bpftool").args(["map", "show", "id", &id.to_string(), "-j"]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("bpftool map show -j")?;
        let name = v["name"].as_str().unwrap_or("?").to_string();
        out.push((name, v["bytes_memlock"].as_u64().context("bytes_memlock")?));
    }
    Ok(out)
}

fn record(b: &mut Bench, config: &str, list: &[(String, u64)]) {
    let mut total = 0;
    for (name, bytes) in list {
        total += bytes;
        b.record(
            "memory",
            vec![("config", config.to_string()), ("map", name.clone())],
            *bytes as f64,
            "bytes",
        );
    }
    b.record(
        "memory",
        vec![("config", config.to_string()), ("map", "total".to_string())],
        total as f64,
        "bytes",
    );
}

fn fill(inst: &mut PrivateInstance, t: CtTable, n: u32) -> Result<()> {
    let now = ct_now_ns();
    for i in 0..n {
        let mut key = CtKey { proto: 17, family: 4, port_lo: 5201, ..CtKey::default() };
        key.addr_lo[..4].copy_from_slice(&[192, 0, 2, 1]);
        // Documentation addresses only (198.51.100.0/24): the flows differ by address and port.
        key.addr_hi[..4].copy_from_slice(&[198, 51, 100, i as u8]);
        key.port_hi = (i >> 8) as u16;
        let e = CtEntry { created_ns: now, last_seen_ns: now, ..CtEntry::default() };
        inst.maps_mut().ct_put(t, &key, &e)?;
    }
    Ok(())
}

fn one(b: &mut Bench, n: usize, full: bool) -> Result<()> {
    let rs = sg_tests::policy::ruleset(&rulegen::rules_toml(n, 42 + n as u64));
    let plan = compile::compile_iface(&rs, rulegen::IFACE)?;
    let mut inst = PrivateInstance::load(&IfaceConfig {
        ingress_posture: Posture::Deny as u8,
        egress_posture: Posture::Allow as u8,
        ..IfaceConfig::default()
    })?;
    inst.apply_plan(&plan, 1)?;
    let config = if full {
        for t in [CtTable::Established, CtTable::New] {
            let cap = inst.maps().ct_capacity(t);
            fill(&mut inst, t, cap)?;
        }
        format!("{n} rules, conntrack full")
    } else {
        format!("{n} rules")
    };
    let list = maps(&inst)?;
    record(b, &config, &list);
    Ok(())
}

pub fn run(b: &mut Bench) {
    for (n, full) in [(1, false), (1_000, false), (10_000, false), (1_000, true)] {
        b.progress("memory", &format!("{n} rules{}", if full { ", conntrack full" } else { "" }));
        if let Err(e) = one(b, n, full) {
            b.fail(format!("memory {n} rules: {e:#}"));
        }
    }
}
