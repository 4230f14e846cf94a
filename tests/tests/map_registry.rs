//! The map registry (`sg_common::maps`) is the object's truth: every map of a loaded instance
//! is in the registry with the kind, key and value sizes, entries and flags the kernel reports,
//! and every registry entry is in the object.

use sg_common::{IfaceConfig, maps};
use sg_tests::require_bpf;
use sg_userspace::loader::PrivateInstance;

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
