//! Typed handles on an instance's maps, opened from an object just loaded or from the pins,
//! every map of the registry (`sg_common::maps::ALL`) that sgctl owns; and the map
//! table, rendered from the registry.

use std::{collections::HashMap as StdHashMap, fmt::Write as _, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
};
use sg_common::{
    Counter, Direction, IfaceConfig, PacketSummary, Reason,
    clock::ClockCache,
    conntrack::{CtEntry, CtKey, FragEntry, FragKey, SEEN_BANKS, SEEN_WORDS, key_seen_slot, seen_offset},
    flowlog::{FlowEnd, FlowEvent, FlowLogConfig, FlowLogStats, RateKey},
    layout::InstanceMeta,
    local::LocalAddr,
    maps::{self as reg, F_MMAPABLE, F_NO_COMMON_LRU, F_NO_PREALLOC, MapKind, MapSpec},
    policy::{
        LAYERS, PortSetRef, PrefixNode, PrefixRoot, PrefixTip, SEGMENTS_PER_GEN, Segment, acl_slot,
        pool_index, root_index, rule_slot,
    },
    reason::counter_index,
};

use crate::{
    error::{Context as _, Error, Result},
    failpoint,
    layer::Layer,
    rules::{compile::IfacePlan, prefix_table::Capacity},
};

pub use sg_common::maps::owned;

/// The maps of one instance (one interface, or a private test instance): every map of the
/// registry that sgctl owns.
pub struct InstanceMaps {
    config: Array<MapData, IfaceConfig>,
    meta: Array<MapData, InstanceMeta>,
    counters: PerCpuArray<MapData, Counter>,
    /// Held so that every map of the instance is open; the datapath's scratch space.
    _scratch: PerCpuArray<MapData, PacketSummary>,
    last_parse: Array<MapData, PacketSummary>,
    pfx_root: Array<MapData, PrefixRoot>,
    pfx_nodes: Array<MapData, PrefixNode>,
    pfx_tips: Array<MapData, PrefixTip>,
    port_sets: Array<MapData, PortSetRef>,
    segments: Array<MapData, Segment>,
    rule_hits: PerCpuArray<MapData, u64>,
    acl_hits: PerCpuArray<MapData, u64>,
    ct: HashMap<MapData, CtKey, CtEntry>,
    ct_new: HashMap<MapData, CtKey, CtEntry>,
    seen: SeenMap,
    frags: HashMap<MapData, FragKey, FragEntry>,
    local: HashMap<MapData, LocalAddr, u8>,
    flow_events: RingBuf<MapData>,
    flow_cfg: Array<MapData, FlowLogConfig>,
    /// Held so that every map of the instance is open; the datapath's per-source limits.
    _flow_rate: HashMap<MapData, RateKey, u64>,
    flow_stats: PerCpuArray<MapData, FlowLogStats>,
    /// Held so that every map of the instance is open; the datapath's clock cache.
    _clock: PerCpuArray<MapData, ClockCache>,
}

/// `SG_CT_SEEN`, the conntrack presence filter, mapped into this process: one byte per slot
/// and bank, written with single-byte stores (the datapath stores bytes of the same words
/// concurrently; a read-modify-write of a word could erase one of its marks).
struct SeenMap {
    /// Keeps the map (and so the mapping's object) alive.
    _data: MapData,
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide shared memory, valid until `drop`; every access is a
// volatile single-byte load or store, or a zeroing the rebuild protocol allows (see
// `InstanceMaps::seen_rebuild`).
unsafe impl Send for SeenMap {}
// SAFETY: as above.
unsafe impl Sync for SeenMap {}

impl SeenMap {
    fn new(data: MapData) -> Result<Self> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let len = SEEN_WORDS as usize * 8;
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array of exactly `len` bytes, shared, at offset 0.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: format!("mapping {}", reg::CT_SEEN.name),
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Io {
            what: format!("mapping {}", reg::CT_SEEN.name),
            source: std::io::Error::other("null mapping"),
        })?;
        Ok(SeenMap { _data: data, ptr, len })
    }

    fn byte(&self, bank: u32, slot: u32) -> *mut u8 {
        let off = seen_offset(bank, slot) as usize;
        assert!(off < self.len);
        // SAFETY: in bounds (asserted).
        unsafe { self.ptr.as_ptr().add(off) }
    }

    fn mark(&self, bank: u32, slot: u32) {
        // SAFETY: a byte of the live mapping.
        unsafe { std::ptr::write_volatile(self.byte(bank, slot), 1) };
    }

    fn is_set(&self, bank: u32, slot: u32) -> bool {
        // SAFETY: a byte of the live mapping.
        unsafe { std::ptr::read_volatile(self.byte(bank, slot)) != 0 }
    }

    /// The map as words (page-aligned mapping of `SEEN_WORDS` words).
    fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        #[allow(clippy::cast_ptr_alignment, reason = "the mapping is page aligned")]
        let p = self.ptr.as_ptr().cast::<std::sync::atomic::AtomicU64>();
        // SAFETY: the mapping holds exactly `SEEN_WORDS` aligned words for the map's life; the
        // datapath writes single bytes of them, which atomic word operations do not tear.
        unsafe { std::slice::from_raw_parts(p, self.len / 8) }
    }

    /// The bits of a word that hold `bank`'s bytes (the banks interleave byte by byte).
    fn bank_mask(bank: u32) -> u64 {
        let mut bytes = [0u8; 8];
        for (i, b) in bytes.iter_mut().enumerate() {
            if i as u32 % SEEN_BANKS == bank {
                *b = 0xff;
            }
        }
        u64::from_ne_bytes(bytes)
    }

    fn zero_bank(&self, bank: u32) {
        // One atomic AND per word: the other bank's bytes, which the datapath may be setting
        // meanwhile, stay as they are. Marks of this bank set meanwhile may be lost; that is
        // what the rebuild protocol repairs.
        let keep = !Self::bank_mask(bank);
        for w in self.words() {
            w.fetch_and(keep, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Slots set in `bank` (a word at a time).
    fn filled(&self, bank: u32) -> u32 {
        let mask = Self::bank_mask(bank);
        self.words()
            .iter()
            .map(|w| {
                let v = w.load(std::sync::atomic::Ordering::Relaxed) & mask;
                v.to_ne_bytes().iter().filter(|b| **b != 0).count() as u32
            })
            .sum()
    }
}

impl Drop for SeenMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// What a presence-filter rebuild found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SeenStats {
    /// Flows marked (live entries of both tables).
    pub flows: usize,
    /// Slots set in each bank after the rebuild, of `SEEN_SLOTS`.
    pub filled: [u32; 2],
}

/// Counters of one (direction, reason), summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    pub direction: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// The open maps of an instance, by name, handed out once each with their types.
struct Opened(StdHashMap<&'static str, Map>);

impl Opened {
    fn take<T: TryFrom<Map, Error = MapError>>(&mut self, spec: &MapSpec) -> Result<T> {
        let map = self.0.remove(spec.name).ok_or(Error::MissingInObject(spec.name))?;
        T::try_from(map).context(|| spec.name.to_string())
    }
}

impl InstanceMaps {
    /// Takes the maps out of a freshly loaded object (pin them before, if wanted).
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        Self::open_with(|spec| ebpf.take_map(spec.name).ok_or(Error::MissingInObject(spec.name)))
    }

    /// Opens the maps pinned in an instance directory, after checking that they are of this
    /// build's layout, map by map against the kernel's description of each
    /// (`loader::layout::require_current`: aya would reuse a pin of another layout silently).
    pub fn from_pins(dir: &Path) -> Result<Self> {
        let iface =
            dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        crate::loader::layout::require_current(dir, &iface)?;
        Self::open_with(|spec| open_pinned(dir, spec.name))
    }

    fn open_with(mut open: impl FnMut(&'static MapSpec) -> Result<Map>) -> Result<Self> {
        let mut maps = Opened(owned().map(|s| Ok((s.name, open(s)?))).collect::<Result<_>>()?);
        let seen = match maps.0.remove(reg::CT_SEEN.name) {
            Some(Map::Array(data)) => SeenMap::new(data)?,
            Some(_) => return Err(Error::WrongMapKind { name: reg::CT_SEEN.name, expected: "an array" }),
            None => return Err(Error::MissingInObject(reg::CT_SEEN.name)),
        };
        Ok(Self {
            config: maps.take(&reg::CONFIG)?,
            meta: maps.take(&reg::META)?,
            counters: maps.take(&reg::COUNTERS)?,
            _scratch: maps.take(&reg::SCRATCH)?,
            last_parse: maps.take(&reg::LAST_PARSE)?,
            pfx_root: maps.take(&reg::PFX_ROOT)?,
            pfx_nodes: maps.take(&reg::PFX_NODES)?,
            pfx_tips: maps.take(&reg::PFX_TIPS)?,
            port_sets: maps.take(&reg::PORT_SETS)?,
            segments: maps.take(&reg::SEGMENTS)?,
            rule_hits: maps.take(&reg::RULE_HITS)?,
            acl_hits: maps.take(&reg::ACL_HITS)?,
            ct: maps.take(&reg::CT)?,
            // An LRU hash opens as a plain HashMap in aya 0.14.
            ct_new: maps.take(&reg::CT_NEW)?,
            seen,
            frags: maps.take(&reg::FRAGS)?,
            local: maps.take(&reg::LOCAL)?,
            flow_events: maps.take(&reg::FLOW_EVENTS)?,
            flow_cfg: maps.take(&reg::FLOW_CFG)?,
            _flow_rate: maps.take(&reg::FLOW_RATE)?,
            flow_stats: maps.take(&reg::FLOW_STATS)?,
            _clock: maps.take(&reg::CLOCK)?,
        })
    }

    pub fn config(&self) -> Result<IfaceConfig> {
        self.config.get(&0, 0).context(|| format!("reading {}", reg::CONFIG.name))
    }

    /// What the instance says about itself (`SG_META`).
    pub fn meta(&self) -> Result<InstanceMeta> {
        self.meta.get(&0, 0).context(|| format!("reading {}", reg::META.name))
    }

    /// Makes `SG_LOCAL` hold exactly `addrs` (the interface's own addresses); returns how many
    /// entries changed. New ones are inserted before stale ones go.
    pub fn set_local_addrs(&mut self, addrs: &[std::net::IpAddr]) -> Result<usize> {
        let want: Vec<LocalAddr> = addrs.iter().map(|a| local_addr(*a)).collect();
        let have: Vec<LocalAddr> = self.local.keys().filter_map(std::result::Result::ok).collect();
        let mut changed = 0;
        for k in want.iter().filter(|k| !have.contains(k)).take(reg::LOCAL.max_entries as usize) {
            self.local.insert(k, 1, 0).context(|| format!("writing {}", reg::LOCAL.name))?;
            changed += 1;
        }
        for k in have.iter().filter(|k| !want.contains(k)) {
            match self.local.remove(k) {
                Ok(()) | Err(MapError::KeyNotFound) => changed += 1,
                Err(e) => return Err(e).context(|| format!("writing {}", reg::LOCAL.name)),
            }
        }
        Ok(changed)
    }

    /// The addresses in `SG_LOCAL`.
    pub fn local_addrs(&self) -> Vec<std::net::IpAddr> {
        self.local
            .keys()
            .filter_map(std::result::Result::ok)
            .map(|k| {
                if k.family == sg_common::packet::FAMILY_IPV4 {
                    std::net::IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
                } else {
                    std::net::IpAddr::from(k.addr)
                }
            })
            .collect()
    }

    /// Ids of the maps no program uses (userspace keeps them with the instance): `SG_META`.
    pub fn unused_map_ids(&self) -> Result<Vec<u32>> {
        use aya::maps::IterableMap as _;
        let info = self.meta.map().info().context(|| format!("reading {}'s info", reg::META.name))?;
        Ok(vec![info.id()])
    }

    pub fn set_meta(&mut self, meta: &InstanceMeta) -> Result<()> {
        self.meta.set(0, meta, 0).context(|| format!("writing {}", reg::META.name))
    }

    /// Replaces the config entry in one map update (the datapath sees old or new, never a mix).
    pub fn set_config(&mut self, cfg: &IfaceConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context(|| format!("writing {}", reg::CONFIG.name))
    }

    /// Packets and bytes for one (direction, reason), summed over CPUs.
    pub fn counter(&self, dir: Direction, reason: Reason) -> Result<Counter> {
        let per_cpu = self
            .counters
            .get(&counter_index(dir, reason), 0)
            .context(|| format!("reading {}", reg::COUNTERS.name))?;
        Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    /// Every (direction, reason) counter, in direction then reason order.
    pub fn counters(&self) -> Result<Vec<ReasonCount>> {
        let mut rows = Vec::new();
        for dir in Direction::ALL {
            for &reason in Reason::ALL {
                let c = self.counter(dir, reason)?;
                rows.push(ReasonCount {
                    direction: dir.as_str(),
                    reason: reason.name(),
                    action: reason.action().as_str(),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
        }
        Ok(rows)
    }

    /// The summary of the last parsed packet (only written with `CONFIG_RECORD_PARSE`).
    pub fn last_parse(&self) -> Result<PacketSummary> {
        self.last_parse.get(&0, 0).context(|| format!("reading {}", reg::LAST_PARSE.name))
    }
}

impl InstanceMaps {
    /// Writes `plan` into generation `gen_` (which the datapath must not be reading): its
    /// segments, port sets, prefix tips, nodes and roots (every root slot is written, so no
    /// entry of the generation's previous plan stays reachable), and zeroes its rule hits.
    pub fn write_generation(&mut self, gen_: u8, plan: &IfacePlan) -> Result<()> {
        plan.tables.check(self.prefix_capacity()).map_err(|f| Error::PrefixTableFull {
            iface: plan.iface.clone(),
            what: f.what,
            n: f.n,
            max: f.max,
        })?;
        let g = u32::from(gen_ & 1);
        for (i, seg) in plan.segments.iter().enumerate() {
            self.segments
                .set(g * SEGMENTS_PER_GEN + i as u32, seg, 0)
                .context(|| format!("writing {}", reg::SEGMENTS.name))?;
        }
        // Test hook: fail or stall with the generation half written.
        failpoint::hit("write_generation")?;
        let t = &plan.tables;
        for (i, set) in t.sets.iter().enumerate() {
            self.port_sets
                .set(pool_index(gen_, i as u32), set, 0)
                .context(|| format!("writing {}", reg::PORT_SETS.name))?;
        }
        for (i, tip) in t.tips.iter().enumerate() {
            self.pfx_tips
                .set(pool_index(gen_, i as u32), tip, 0)
                .context(|| format!("writing {}", reg::PFX_TIPS.name))?;
        }
        for (i, node) in t.nodes.iter().enumerate() {
            self.pfx_nodes
                .set(pool_index(gen_, i as u32), node, 0)
                .context(|| format!("writing {}", reg::PFX_NODES.name))?;
        }
        // The ACL layer's roots only for a plan with an ACL: without one the datapath does
        // not read them (`CONFIG_ACL` is off).
        let layers = if plan.acl.is_some() { LAYERS } else { 1 };
        for (i, root) in t.roots.iter().enumerate().take((layers * 4) as usize) {
            // `prefix_table::table` is the index in generation 0.
            self.pfx_root
                .set(root_index(gen_, 0, 0, false) + i as u32, root.as_ref(), 0)
                .context(|| format!("writing {}", reg::PFX_ROOT.name))?;
        }
        self.zero_hits(Layer::Rules, gen_, plan.rules.len())?;
        self.zero_hits(Layer::Acl, gen_, plan.acl.as_ref().map_or(0, |a| a.entries.len()))?;
        Ok(())
    }

    /// Zeroes the counters of the first `n` items of `layer` in generation `gen_` (before the
    /// generation is written again: its counts start over).
    pub fn zero_hits(&mut self, layer: Layer, gen_: u8, n: usize) -> Result<()> {
        for id in 0..n as u32 {
            match layer {
                Layer::Rules => set_per_cpu(&mut self.rule_hits, &reg::RULE_HITS, rule_slot(gen_, id), 0)?,
                Layer::Acl => set_per_cpu(&mut self.acl_hits, &reg::ACL_HITS, acl_slot(gen_, id), 0)?,
            }
        }
        Ok(())
    }

    /// What item `id` of `layer` counted in generation `gen_`, summed over CPUs: packets a rule
    /// allowed (the first rule in file order that allows a packet counts it), packets an ACL
    /// entry decided.
    pub fn hits(&self, layer: Layer, gen_: u8, id: u32) -> Result<u64> {
        let (map, spec, slot) = match layer {
            Layer::Rules => (&self.rule_hits, &reg::RULE_HITS, rule_slot(gen_, id)),
            Layer::Acl => (&self.acl_hits, &reg::ACL_HITS, acl_slot(gen_, id)),
        };
        let v = map.get(&slot, 0).context(|| format!("reading {}", spec.name))?;
        Ok(v.iter().sum())
    }

    /// What the instance's prefix maps hold per generation (their sizes, set at attach).
    pub fn prefix_capacity(&self) -> Capacity {
        let half = |len: u32| len as usize / 2;
        Capacity {
            nodes: half(self.pfx_nodes.len()),
            tips: half(self.pfx_tips.len()),
            sets: half(self.port_sets.len()),
        }
    }
}

/// Sets slot `slot` of a per-CPU counter map (`spec`: `SG_RULE_HITS`, `SG_ACL_HITS`) to `n`,
/// on the first CPU.
fn set_per_cpu(map: &mut PerCpuArray<MapData, u64>, spec: &MapSpec, slot: u32, n: u64) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context(|| "counting CPUs".to_string())?;
    let mut vals = vec![0u64; cpus];
    vals[0] = n;
    let vals = PerCpuValues::try_from(vals).context(|| "per-CPU values".to_string())?;
    map.set(slot, vals, 0).context(|| format!("writing {}", spec.name))
}

/// Which conntrack table an entry is in (`established`, `new` in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtTable {
    /// `SG_CT`: both directions seen.
    Established,
    /// `SG_CT_NEW`: not answered yet (LRU).
    New,
}

impl InstanceMaps {
    fn ct_map(&self, t: CtTable) -> &HashMap<MapData, CtKey, CtEntry> {
        match t {
            CtTable::Established => &self.ct,
            CtTable::New => &self.ct_new,
        }
    }

    /// Every tracked flow (expired ones included), with its table.
    pub fn ct_entries(&self) -> Result<Vec<(CtTable, CtKey, CtEntry)>> {
        let mut out = Vec::new();
        for t in [CtTable::Established, CtTable::New] {
            for item in self.ct_map(t) {
                match item {
                    Ok((k, v)) => out.push((t, k, v)),
                    // An entry deleted while we iterate: skip it.
                    Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(e).context(|| "reading conntrack".to_string()),
                }
            }
        }
        Ok(out)
    }

    /// Removes one flow (absent is fine).
    pub fn ct_remove(&mut self, t: CtTable, key: &CtKey) -> Result<()> {
        let map = match t {
            CtTable::Established => &mut self.ct,
            CtTable::New => &mut self.ct_new,
        };
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context(|| "removing a conntrack entry".to_string()),
        }
    }

    /// Removes every flow from both tables, and every admitted fragmented datagram; returns
    /// how many flows.
    pub fn ct_flush(&mut self) -> Result<usize> {
        let all = self.ct_entries()?;
        for (t, k, _) in &all {
            self.ct_remove(*t, k)?;
        }
        // The presence filter keeps their slots (harmless: a set slot only means "look up");
        // `seen_rebuild` clears them.
        let frags: Vec<FragKey> = self.frags.keys().filter_map(std::result::Result::ok).collect();
        for k in frags {
            let _ = self.frags.remove(&k);
        }
        Ok(all.len())
    }

    /// Removes the flows expired at `now` (`ct_now_ns`) from both tables and returns them
    /// (their final counters: flow-end records).
    pub fn ct_gc(&mut self, now: u64) -> Result<Vec<(CtTable, CtKey, CtEntry)>> {
        let cfg = self.config()?;
        let mut removed = Vec::new();
        for (t, k, e) in self.ct_entries()? {
            if cfg.ct_timeouts.expired(k.proto, &e, now) {
                self.ct_remove(t, &k)?;
                removed.push((t, k, e));
            }
        }
        Ok(removed)
    }

    /// Every admitted fragmented datagram.
    pub fn frag_entries(&self) -> Result<Vec<(FragKey, FragEntry)>> {
        self.frags
            .iter()
            .filter(|r| !matches!(r, Err(MapError::KeyNotFound)))
            .collect::<std::result::Result<_, _>>()
            .context(|| format!("reading {}", reg::FRAGS.name))
    }

    /// Writes one admitted datagram (tests age entries this way).
    pub fn frag_put(&mut self, k: &FragKey, e: &FragEntry) -> Result<()> {
        self.frags.insert(k, e, 0).context(|| format!("writing {}", reg::FRAGS.name))
    }

    /// Writes one flow (tests age entries this way instead of sleeping).
    pub fn ct_put(&mut self, t: CtTable, key: &CtKey, e: &CtEntry) -> Result<()> {
        let map = match t {
            CtTable::Established => &mut self.ct,
            CtTable::New => &mut self.ct_new,
        };
        map.insert(key, e, 0).context(|| "writing a conntrack entry".to_string())?;
        // After the insert, as the datapath does (see `seen_rebuild`).
        let slot = key_seen_slot(key);
        for bank in 0..SEEN_BANKS {
            self.seen.mark(bank, slot);
        }
        Ok(())
    }

    /// Enters a flow unless its key is in `t` already (`BPF_NOEXIST`: an entry the datapath
    /// made meanwhile stays); `false` when it was there.
    pub fn ct_insert_new(&mut self, t: CtTable, key: &CtKey, e: &CtEntry) -> Result<bool> {
        const BPF_NOEXIST: u64 = 1;
        let map = match t {
            CtTable::Established => &mut self.ct,
            CtTable::New => &mut self.ct_new,
        };
        match map.insert(key, e, BPF_NOEXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::EEXIST) => {
                return Ok(false);
            }
            Err(e) => return Err(e).context(|| "writing a conntrack entry".to_string()),
        }
        let slot = key_seen_slot(key);
        for bank in 0..SEEN_BANKS {
            self.seen.mark(bank, slot);
        }
        Ok(true)
    }

    /// Is `key`'s flow marked in the presence filter (either bank)?
    pub fn seen_marked(&self, key: &CtKey) -> bool {
        let slot = key_seen_slot(key);
        (0..SEEN_BANKS).any(|bank| self.seen.is_set(bank, slot))
    }

    /// Is `key`'s flow marked in each bank of the presence filter?
    pub fn seen_banks(&self, key: &CtKey) -> [bool; SEEN_BANKS as usize] {
        let slot = key_seen_slot(key);
        std::array::from_fn(|bank| self.seen.is_set(bank as u32, slot))
    }

    /// Zeroes one bank of the presence filter, as the first step of a rebuild does (tests
    /// stop a rebuild half-way this way).
    pub fn seen_zero_bank(&mut self, bank: u32) {
        self.seen.zero_bank(bank);
    }

    /// Rebuilds the conntrack presence filter (`SG_CT_SEEN`) from the live tables, one bank at
    /// a time, so that a tracked flow is always marked in at least one bank: zero bank 1 (bank
    /// 0 still holds every flow), mark every flow of both tables in bank 1, then the same for
    /// bank 0. The datapath marks both banks after each insert; a mark it loses to a zeroing
    /// belongs to a flow already in its table, which the enumeration that follows marks again.
    /// Slots of flows that ended (expired, evicted, flushed) are cleared: the filter stays
    /// selective. `sgctl conntrack gc` runs this.
    pub fn seen_rebuild(&mut self) -> Result<SeenStats> {
        let mut flows = 0;
        for bank in [1, 0] {
            self.seen.zero_bank(bank);
            let entries = self.ct_entries()?;
            flows = entries.len();
            for (_, k, _) in &entries {
                self.seen.mark(bank, key_seen_slot(k));
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        }
        Ok(SeenStats { flows, filled: [self.seen.filled(0), self.seen.filled(1)] })
    }

    /// Capacity of a table (max entries).
    pub fn ct_capacity(&self, t: CtTable) -> u32 {
        use aya::maps::IterableMap as _;
        self.ct_map(t).map().info().map_or(0, |i| i.max_entries())
    }
}

/// `SG_LOCAL`'s key of an address.
fn local_addr(a: std::net::IpAddr) -> LocalAddr {
    let mut k = LocalAddr::default();
    match a {
        std::net::IpAddr::V4(v4) => {
            k.addr[..4].copy_from_slice(&v4.octets());
            k.family = sg_common::packet::FAMILY_IPV4;
        }
        std::net::IpAddr::V6(v6) => {
            k.addr = v6.octets();
            k.family = sg_common::packet::FAMILY_IPV6;
        }
    }
    k
}

/// Now, on the datapath's conntrack clock (CLOCK_MONOTONIC_COARSE), in ns.
pub fn ct_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// One item of `SG_FLOW_EVENTS`, told apart by its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowItem {
    /// `EV_ACCEPT` or `EV_REJECT`.
    Event(FlowEvent),
    /// `EV_END`: a flow the datapath deleted.
    End(FlowEnd),
}

impl FlowItem {
    pub fn parse(bytes: &[u8]) -> Option<FlowItem> {
        fn read<T: aya::Pod>(bytes: &[u8]) -> T {
            // SAFETY: the caller checked the length; T is plain data.
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
        }
        match bytes.len() {
            n if n == size_of::<FlowEvent>() => Some(FlowItem::Event(read(bytes))),
            n if n == size_of::<FlowEnd>() => Some(FlowItem::End(read(bytes))),
            _ => None,
        }
    }
}

fn open_pinned(dir: &Path, name: &str) -> Result<Map> {
    let path = dir.join(name);
    let data = MapData::from_pin(&path).context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).context(|| format!("opening {}", path.display()))
}

/// Flow logs: rate limits, events, the datapath's own counters.
impl InstanceMaps {
    /// Sets the flow-log rate limits (`SG_FLOW_CFG`).
    pub fn set_flow_limits(&mut self, cfg: &FlowLogConfig) -> Result<()> {
        self.flow_cfg.set(0, cfg, 0).context(|| format!("writing {}", reg::FLOW_CFG.name))
    }

    /// The next item of the flow-log ring buffer, if any (an item of neither size is skipped).
    pub fn next_flow_item(&mut self) -> Option<FlowItem> {
        loop {
            let item = self.flow_events.next()?;
            if let Some(it) = FlowItem::parse(&item) {
                return Some(it);
            }
        }
    }

    /// `SG_FLOW_STATS`, summed over CPUs (`cpu_tat` and `warn_tat` zero).
    pub fn flow_stats(&self) -> Result<FlowLogStats> {
        let per_cpu = self.flow_stats.get(&0, 0).context(|| format!("reading {}", reg::FLOW_STATS.name))?;
        Ok(per_cpu.iter().fold(FlowLogStats::default(), |a, c| FlowLogStats {
            emitted: a.emitted + c.emitted,
            rate_limited: a.rate_limited + c.rate_limited,
            cpu_limited: a.cpu_limited + c.cpu_limited,
            ring_full: a.ring_full + c.ring_full,
            cpu_tat: 0,
            warn_tat: 0,
        }))
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The documentation's map table (Markdown), rendered from the registry.
pub fn markdown_table() -> String {
    let mut out = String::from("| map | kind | key -> value | entries | purpose |\n|---|---|---|---|---|\n");
    for m in reg::ALL {
        let mut kind = m.kind.as_str().to_string();
        if m.flags & F_NO_PREALLOC != 0 {
            kind.push_str(", no prealloc");
        }
        if m.flags & F_NO_COMMON_LRU != 0 {
            kind.push_str(", per-CPU LRU lists");
        }
        if m.flags & F_MMAPABLE != 0 {
            kind.push_str(", mmapable");
        }
        let kv = if m.kind == MapKind::RingBuf {
            format!("`{}`", m.value)
        } else {
            format!("`{}` -> `{}`", m.key, m.value)
        };
        let mut entries = thousands(m.max_entries);
        if !m.size_note.is_empty() {
            entries = format!("{entries} ({})", m.size_note);
        }
        let _ = writeln!(out, "| `{}` | {kind} | {kv} | {entries} | {} |", m.name, m.purpose);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1), "1");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(262_144), "262,144");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// The map table of docs/datapath.md is the registry's: edit `sg_common::maps`, then paste
    /// this test's expected table into the page.
    #[test]
    fn docs_map_table_is_the_registry() {
        let page = include_str!("../../docs/datapath.md");
        let table = markdown_table();
        assert!(
            page.contains(&table),
            "docs/datapath.md's map table differs from the registry; it should be:\n{table}"
        );
    }
}
