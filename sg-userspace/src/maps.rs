//! Typed handles on an instance's maps, opened from an object just loaded or from the pins.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray},
};
use sg_common::{
    Counter, Direction, IfaceConfig, PacketSummary, Reason,
    maps::{MAP_CONFIG, MAP_COUNTERS, MAP_LAST_PARSE},
    reason::counter_index,
};

use crate::error::{Context as _, Error, Result};

/// The maps of one instance (one interface, or a private test instance).
pub struct InstanceMaps {
    config: Array<MapData, IfaceConfig>,
    counters: PerCpuArray<MapData, Counter>,
    last_parse: Array<MapData, PacketSummary>,
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

impl InstanceMaps {
    /// Takes the maps out of a freshly loaded object (pin them before, if wanted).
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingInObject(name));
        let config = take(MAP_CONFIG)?;
        let counters = take(MAP_COUNTERS)?;
        let last_parse = take(MAP_LAST_PARSE)?;
        Self::from_maps(config, counters, last_parse)
    }

    /// Opens the maps pinned in an instance directory.
    pub fn from_pins(dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).context(|| format!("opening {}", path.display()))?;
            Map::from_map_data(data).context(|| format!("opening {}", path.display()))
        };
        Self::from_maps(open(MAP_CONFIG)?, open(MAP_COUNTERS)?, open(MAP_LAST_PARSE)?)
    }

    fn from_maps(config: Map, counters: Map, last_parse: Map) -> Result<Self> {
        Ok(Self {
            config: Array::try_from(config).context(|| MAP_CONFIG.to_string())?,
            counters: PerCpuArray::try_from(counters).context(|| MAP_COUNTERS.to_string())?,
            last_parse: Array::try_from(last_parse).context(|| MAP_LAST_PARSE.to_string())?,
        })
    }

    pub fn config(&self) -> Result<IfaceConfig> {
        self.config.get(&0, 0).context(|| format!("reading {MAP_CONFIG}"))
    }

    /// Replaces the config entry in one map update (the datapath sees old or new, never a mix).
    pub fn set_config(&mut self, cfg: &IfaceConfig) -> Result<()> {
        self.config.set(0, cfg, 0).context(|| format!("writing {MAP_CONFIG}"))
    }

    /// Packets and bytes for one (direction, reason), summed over CPUs.
    pub fn counter(&self, dir: Direction, reason: Reason) -> Result<Counter> {
        let per_cpu = self
            .counters
            .get(&counter_index(dir, reason), 0)
            .context(|| format!("reading {MAP_COUNTERS}"))?;
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
        self.last_parse.get(&0, 0).context(|| format!("reading {MAP_LAST_PARSE}"))
    }
}
