//! The map registry (`sg_common::maps`) is the object's truth: every map of a loaded instance
//! is in the registry with the kind, key and value sizes, entries and flags the kernel reports,
//! and every registry entry is in the object.

use sg_common::{IfaceConfig, maps, maps::PROG_INGRESS_TC};
use sg_tests::require_bpf;
use sg_userspace::loader::{IngressHook, PrivateInstance, Sizes};

#[test]
fn every_map_of_the_object_is_its_registry_entry() {
    if !require_bpf("every_map_of_the_object_is_its_registry_entry") {
        return;
    }
    let inst = PrivateInstance::load(&IfaceConfig::default()).expect("load a private instance");
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for id in inst.map_ids().expect("map ids") {
        let info = aya::maps::MapInfo::from_id(id).expect("map info");
        let name = info.name_as_str().expect("map name").to_string();
        let Some(spec) = maps::spec(&name) else {
            // aya's own maps for globals (.rodata, .bss, .data) are not the registry's.
            assert!(name.starts_with('.'), "map {name} of the object is not in the registry");
            continue;
        };
        let kind = info.map_type().expect("map type") as u32;
        let got = (kind, info.key_size(), info.value_size(), info.max_entries(), info.map_flags());
        let want = (spec.kind.bpf_type(), spec.key_size, spec.value_size, spec.max_entries, spec.flags);
        if got != want {
            wrong.push(format!(
                "{name}: kernel (type, key, value, entries, flags) {got:?}, registry {want:?}"
            ));
        }
        seen.push(name);
    }
    assert!(wrong.is_empty(), "maps differ from the registry:\n  {}", wrong.join("\n  "));
    for spec in maps::ALL {
        assert!(seen.iter().any(|n| n == spec.name), "registry entry {} is not in the object", spec.name);
    }
    println!("map registry: {} maps of the object match their entries", seen.len());
}

/// The verifier's work per program (`verified_insns`), per kernel, as committed in
/// `tests/fixtures/verified_insns.toml` (as cilium keeps complexity records): a change that
/// makes a program more than 10% more complex than its record fails here, long before the
/// verifier's limit of 1,000,000 instructions does (`sg_egress` reached it once). A kernel
/// without a record of its own is held to the newest one recorded. Record new figures when a
/// change is meant to cost more (the failure prints them).
#[test]
fn verifier_work_stays_within_ten_percent_of_its_record() {
    if !require_bpf("verifier_work_stays_within_ten_percent_of_its_record") {
        return;
    }
    let inst = PrivateInstance::load(&IfaceConfig::default()).expect("load a private instance");
    let mut got = inst.verified_insns().expect("verified_insns");
    // The TCX ingress program (`--ingress-hook tcx`), loaded only by instances that use it.
    let tcx = PrivateInstance::load_hooked(&IfaceConfig::default(), Sizes::default(), IngressHook::Tcx)
        .expect("load a private instance with TCX ingress");
    got.extend(
        tcx.verified_insns().expect("verified_insns").into_iter().filter(|(p, _)| *p == PROG_INGRESS_TC),
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let kernel: String = release.trim().split('.').take(2).collect::<Vec<_>>().join(".");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/verified_insns.toml"))
        .expect("tests/fixtures/verified_insns.toml");
    let records: toml::Table = text.parse().expect("verified_insns.toml is TOML");
    let version = |k: &str| k.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    let (recorded_for, record) = records
        .get(&kernel)
        .map(|r| (kernel.clone(), r))
        .or_else(|| records.iter().max_by_key(|(k, _)| version(k)).map(|(k, r)| (k.clone(), r)))
        .expect("at least one kernel recorded");
    let figures: Vec<String> = got.iter().map(|(p, n)| format!("{p} = {n}")).collect();
    println!("verified_insns on {kernel} (record: {recorded_for}): {}", figures.join(", "));
    for (prog, n) in &got {
        assert!(*n > 0, "{prog}: the kernel reported no verified_insns");
        let want = record.get(*prog).and_then(toml::Value::as_integer).unwrap_or_else(|| {
            panic!("no record for {prog} on {recorded_for}: add [\"{kernel}\"] {}", figures.join(", "))
        });
        let limit = want + want / 10;
        assert!(
            i64::from(*n) <= limit,
            "{prog}: the verifier processed {n} instructions, more than 10% over the record {want} for {recorded_for}; \
             if that is meant, record [\"{kernel}\"] {} in tests/fixtures/verified_insns.toml",
            figures.join(", ")
        );
        assert!(*n < 900_000, "{prog}: {n} instructions, within 10% of the verifier's limit of 1,000,000");
    }
}
