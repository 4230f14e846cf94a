//! Private instances: loaded, attached nowhere; packets reach them only through
//! BPF_PROG_TEST_RUN. The verdict tables, the benchmark and `sgctl replay` run the real
//! programs and maps this way, with policies written by the same generation flip as a live
//! apply.

use std::time::Duration;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use sg_common::{
    Direction, IfaceConfig,
    config::{CONFIG_FLOW_LOG, CONFIG_VALID},
    flowlog::FlowLogConfig,
    maps::{PROG_EGRESS, PROG_INGRESS},
};

use super::load::{
    IngressHook, Sizes, load_object_hooked, load_object_staged, tc_ingress_mut, tc_mut, xdp_mut,
};
use crate::{
    error::{Context as _, Error, Result},
    generation,
    maps::{FlowItem, InstanceMaps},
    rules::compile::IfacePlan,
};

/// A loaded instance that is attached nowhere.
pub struct PrivateInstance {
    ebpf: Ebpf,
    maps: InstanceMaps,
    /// Which ingress program was loaded (and runs ingress packets).
    hook: IngressHook,
}

impl PrivateInstance {
    /// Loads a fresh instance (its own maps) and writes `cfg` (marked valid).
    pub fn load(cfg: &IfaceConfig) -> Result<Self> {
        Self::load_sized(cfg, Sizes::default())
    }

    /// As [`Self::load`], with conntrack tables of the given sizes.
    pub fn load_sized(cfg: &IfaceConfig, sizes: Sizes) -> Result<Self> {
        Self::load_hooked(cfg, sizes, IngressHook::Xdp)
    }

    /// As [`Self::load_sized`], with the ingress program of `hook` (the TC one for `Tcx`).
    pub fn load_hooked(cfg: &IfaceConfig, sizes: Sizes, hook: IngressHook) -> Result<Self> {
        Self::with_object(cfg, load_object_hooked(sizes, hook)?, hook)
    }

    /// As [`Self::load_sized`], from `object`, the benchmark's staged build of the datapath,
    /// with a stage stop (`sg_common::stage`).
    pub fn load_staged(object: &[u8], cfg: &IfaceConfig, sizes: Sizes, stop: u32) -> Result<Self> {
        Self::load_staged_at(object, cfg, sizes, stop, IngressHook::Xdp)
    }

    /// As [`Self::load_staged`], with the ingress program of `hook`.
    pub fn load_staged_at(
        object: &[u8],
        cfg: &IfaceConfig,
        sizes: Sizes,
        stop: u32,
        hook: IngressHook,
    ) -> Result<Self> {
        Self::with_object(cfg, load_object_staged(object, sizes, stop, hook)?, hook)
    }

    fn with_object(cfg: &IfaceConfig, mut ebpf: Ebpf, hook: IngressHook) -> Result<Self> {
        let mut maps = InstanceMaps::take_from(&mut ebpf)?;
        maps.set_config(&IfaceConfig { flags: cfg.flags | CONFIG_VALID, ..*cfg })?;
        Ok(Self { ebpf, maps, hook })
    }

    /// Which ingress program runs ingress packets.
    pub fn ingress_hook(&self) -> IngressHook {
        self.hook
    }

    pub fn maps(&self) -> &InstanceMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut InstanceMaps {
        &mut self.maps
    }

    /// Writes `plan` into the inactive generation and flips to it, switching the instance to
    /// security groups: `generation::apply`, as `sgctl apply` does on a live interface.
    pub fn apply_plan(&mut self, plan: &IfacePlan, seq: u64) -> Result<()> {
        self.apply_plan_with(plan, seq, false)
    }

    /// As [`Self::apply_plan`]; with `revoke`, tracked flows the new rules do not allow end
    /// (on their next packet), as `sgctl apply --revoke`.
    pub fn apply_plan_with(&mut self, plan: &IfacePlan, seq: u64, revoke: bool) -> Result<()> {
        generation::apply(&mut self.maps, plan, seq, revoke).map(|_| ())
    }

    /// Turns flow-log events on (`CONFIG_FLOW_LOG`) with the given rate limits, as
    /// `sgctl daemon --flow-log` does on an attached interface (nothing reads the events).
    pub fn set_flow_log(&mut self, limits: &FlowLogConfig) -> Result<()> {
        self.maps.set_flow_limits(limits)?;
        let cfg = self.maps.config()?;
        self.maps.set_config(&IfaceConfig { flags: cfg.flags | CONFIG_FLOW_LOG, ..cfg })
    }

    /// Every item waiting in the flow-log ring buffer (tests read what the datapath emitted).
    pub fn flow_items(&mut self) -> Vec<FlowItem> {
        std::iter::from_fn(|| self.maps.next_flow_item()).collect()
    }

    /// Runs `frame` through the program of `dir` once; returns the program's return value
    /// (XDP action for ingress, TC action as u32 for egress and for ingress at TCX).
    pub fn run(&mut self, dir: Direction, frame: &[u8]) -> Result<u32> {
        Ok(self.run_timed(dir, frame, 1)?.0)
    }

    /// Ids of every map of the instance (those either program uses, and `SG_META`), for memory
    /// accounting.
    pub fn map_ids(&self) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for name in [self.hook.program(), PROG_EGRESS] {
            let prog = self.ebpf.program(name).ok_or(Error::MissingInObject(name))?;
            let info = prog.info().context(|| format!("{name}: program info"))?;
            ids.extend(info.map_ids().context(|| format!("{name}: map ids"))?.unwrap_or_default());
        }
        // The maps the programs do not use (userspace's own): `SG_META`.
        ids.extend(self.maps.unused_map_ids()?);
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// How many instructions the kernel's verifier processed for each program (its global
    /// functions included), as the kernel reports it (`verified_insns`, Linux 5.16+): the
    /// programs' complexity, which must stay well below the verifier's 1,000,000.
    pub fn verified_insns(&self) -> Result<Vec<(&'static str, u32)>> {
        let mut out = Vec::new();
        for name in [self.hook.program(), PROG_EGRESS] {
            let prog = self.ebpf.program(name).ok_or(Error::MissingInObject(name))?;
            let info = prog.info().context(|| format!("{name}: program info"))?;
            out.push((name, info.verified_instruction_count().unwrap_or(0)));
        }
        Ok(out)
    }

    /// The ingress program's fd (for the benchmark, which puts it behind a tail call).
    pub fn ingress_fd(&mut self) -> Result<&aya::programs::ProgramFd> {
        xdp_mut(&mut self.ebpf)?.fd().context(|| format!("{PROG_INGRESS}: fd"))
    }

    /// Runs `frame` through the program of `dir` `repeat` times in one BPF_PROG_TEST_RUN call;
    /// returns the last return value and the kernel's average time per run.
    pub fn run_timed(&mut self, dir: Direction, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::default() };
        let res = match dir {
            Direction::Ingress if self.hook == IngressHook::Tcx => {
                tc_ingress_mut(&mut self.ebpf)?.test_run(opts)
            }
            Direction::Ingress => xdp_mut(&mut self.ebpf)?.test_run(opts),
            Direction::Egress => tc_mut(&mut self.ebpf)?.test_run(opts),
        };
        let res = res.context(|| format!("BPF_PROG_TEST_RUN on {} program", dir.as_str()))?;
        Ok((res.return_value, res.duration))
    }
}
