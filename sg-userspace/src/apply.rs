//! Hot apply of a rule set to the live interfaces, all or nothing.
//!
//! 1. Compile every interface's plan (pure; any error: nothing touched).
//! 2. Take the apply lock; diff against the applied state.
//! 3. Phase one: for each attached interface write the *inactive* generation of its maps;
//!    attach interfaces new to the file with their policy already written. Any failure
//!    detaches what this apply attached and leaves every active generation as it was.
//! 4. Save the new state (seq + 1), then phase two: flip each interface's `active_gen` (one
//!    map update each; the datapath sees the old or the new policy, never a mix).
//! 5. Detach interfaces the new file no longer lists.
//!
//! Rule hit counts of rules that stay (same group, direction and content) carry over: after
//! the flip the old generation's final counts are added to a per-rule base kept in the state
//! file (the datapath's counters are never written while live).

use std::collections::HashMap;

use sg_common::{
    IfaceConfig,
    config::{CONFIG_IMPLICIT_MASK, POLICY_GROUPS},
};

use crate::{
    error::{Error, Result},
    loader::{self, ModeRequest},
    maps::InstanceMaps,
    pins,
    rules::{
        RuleRef, RuleSet,
        compile::{self, IfacePlan},
        diff::{Diff, diff},
    },
    state::{self, State},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Compute and report the diff only.
    pub dry_run: bool,
    /// XDP mode for interfaces this apply attaches.
    pub mode: Option<ModeRequest>,
    /// End tracked flows the new rules do not allow (AWS keeps them). Checked lazily: each
    /// flow is re-validated against the new rules on its next packet.
    pub revoke: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ApplyReport {
    pub diff: Diff,
    pub applied: bool,
    pub seq: u64,
    /// Interfaces now enforcing this rule set.
    pub interfaces: Vec<String>,
    /// Interfaces detached because the file no longer lists them.
    pub detached: Vec<String>,
    /// Problems detaching dropped interfaces (the new policy is applied regardless).
    pub warnings: Vec<String>,
}

/// Identity of a rule across applies, for carrying hit counts over.
fn identity(r: &RuleRef) -> (String, crate::rules::Dir, String) {
    (r.group.clone(), r.dir, format!("{:?}", r.rule.identity()))
}

/// New per-rule hit bases of `iface`: for each new rule, the total (base + final count of the
/// old generation) of the same rule in the old set, matched in order.
fn carried_bases(
    old: Option<&State>,
    iface: &str,
    old_gen: Option<(&InstanceMaps, u8)>,
    new_rules: &[RuleRef],
) -> Vec<u64> {
    let mut totals: HashMap<_, Vec<u64>> = HashMap::new();
    if let (Some(old), Some((maps, gen_))) = (old, old_gen) {
        for (id, r) in old.ruleset.iface_rules(iface).iter().enumerate() {
            let live = maps.rule_hits(gen_, id as u32).unwrap_or(0);
            totals.entry(identity(r)).or_default().push(old.base_hits(iface, id) + live);
        }
    }
    new_rules
        .iter()
        .map(|r| match totals.get_mut(&identity(r)) {
            Some(list) if !list.is_empty() => list.remove(0),
            _ => 0,
        })
        .collect()
}

struct Staged {
    attached: loader::Attached,
    /// The config to write (flip); `old_gen`: the generation active before, if groups mode.
    cfg: IfaceConfig,
    old_gen: Option<u8>,
}

/// Applies `rs` (see the module documentation). With `dry_run`, only the diff.
pub fn apply(rs: &RuleSet, opts: ApplyOptions) -> Result<ApplyReport> {
    pins::check_root()?;
    pins::check_bpffs()?;
    let plans = compile::compile(rs)?;
    let _lock = state::lock()?;
    let old = current_state()?;
    let d = diff(old.as_ref().map(|s| &s.ruleset), rs);
    let seq = old.as_ref().map_or(0, |s| s.seq) + 1;
    let mut report = ApplyReport {
        diff: d,
        applied: false,
        seq,
        interfaces: plans.iter().map(|p| p.iface.clone()).collect(),
        detached: Vec::new(),
        warnings: Vec::new(),
    };
    if opts.dry_run {
        return Ok(report);
    }
    let mut newly: Vec<String> = Vec::new();
    let mut staged = match stage(&plans, seq, opts, &mut newly) {
        Ok(s) => s,
        Err(e) => {
            rollback(&newly);
            return Err(e);
        }
    };
    let mut new_state = State { seq, ruleset: rs.clone(), hit_base: Default::default() };
    if let Err(e) = state::save_new(&new_state) {
        rollback(&newly);
        return Err(e);
    }
    failpoint("apply", "pause-before-flip");
    for s in &mut staged {
        s.attached.maps.set_config(&s.cfg)?;
    }
    report.applied = true;
    // The old generations are no longer read: their counts are final. Carry them over.
    for s in &staged {
        let iface = &s.attached.iface;
        let new_rules = rs.iface_rules(iface);
        let old_gen = s.old_gen.map(|g| (&s.attached.maps, g));
        new_state.hit_base.insert(iface.clone(), carried_bases(old.as_ref(), iface, old_gen, &new_rules));
    }
    if let Err(e) = state::save(&new_state) {
        report.warnings.push(format!("saving carried-over hit counts: {e}"));
    }
    for iface in report.diff.detach.clone() {
        match loader::detach(&iface) {
            Ok(_) => report.detached.push(iface),
            Err(Error::NotAttached { .. }) => report.detached.push(iface),
            Err(e) => report.warnings.push(format!("detaching {iface}: {e}")),
        }
    }
    Ok(report)
}

/// Phase one: write inactive generations, attach new interfaces.
fn stage(plans: &[IfacePlan], seq: u64, opts: ApplyOptions, newly: &mut Vec<String>) -> Result<Vec<Staged>> {
    let mut staged = Vec::new();
    for plan in plans {
        match loader::open_attached(&plan.iface)? {
            Some(mut attached) => {
                let cfg = attached.maps.config()?;
                let old_gen = (cfg.policy_mode == POLICY_GROUPS).then_some(cfg.active_gen & 1);
                let gen_ = (cfg.active_gen & 1) ^ 1;
                attached.maps.write_generation(gen_, plan)?;
                let revoke_seq = if opts.revoke { seq } else { cfg.revoke_seq };
                let cfg = IfaceConfig {
                    policy_mode: POLICY_GROUPS,
                    active_gen: gen_,
                    policy_seq: seq,
                    revoke_seq,
                    ct_timeouts: plan.timeouts,
                    flags: sg_common::config::with_monitor(
                        (cfg.flags & !CONFIG_IMPLICIT_MASK) | plan.no_implicit,
                        plan.monitor,
                    ),
                    ..cfg
                };
                staged.push(Staged { attached, cfg, old_gen });
            }
            None => {
                loader::attach_with_policy(&plan.iface, opts.mode.unwrap_or(ModeRequest::Auto), plan, seq)?;
                newly.push(plan.iface.clone());
            }
        }
    }
    Ok(staged)
}

fn rollback(newly: &[String]) {
    for iface in newly {
        if let Err(e) = loader::detach(iface) {
            log::error!("rollback: detaching {iface}: {e}");
        }
    }
}

/// The rule-set number the datapath enforces on the first attached interface of `s`.
fn live_seq(s: &State) -> Result<Option<u64>> {
    for b in &s.ruleset.interfaces {
        if let Ok(Some(a)) = loader::open_attached(&b.iface) {
            let cfg = a.maps.config()?;
            if cfg.policy_mode == POLICY_GROUPS {
                return Ok(Some(cfg.policy_seq));
            }
        }
    }
    Ok(None)
}

/// The applied state that matches the datapath: after an apply that died between saving its
/// state and flipping, that is the previous state.
pub fn current_state() -> Result<Option<State>> {
    let Some(s) = state::load()? else { return Ok(None) };
    if let Some(seq) = live_seq(&s)?
        && seq != s.seq
        && let Some(prev) = state::load_prev()?
        && prev.seq == seq
    {
        log::warn!("rule set #{} was saved but never applied (interrupted apply): using #{seq}", s.seq);
        return Ok(Some(prev));
    }
    Ok(Some(s))
}

/// Test hook: `SGCTL_FAILPOINT=<site>=<action>` makes the named site fail (`fail`) or sleep
/// (`pause:<ms>`), to show that a failed or killed apply leaves the old policy whole. Inert
/// unless the variable is set.
pub fn failpoint(site: &str, when: &str) -> Option<Error> {
    let spec = std::env::var("SGCTL_FAILPOINT").ok()?;
    let (s, action) = spec.split_once('=')?;
    let (w, arg) = action.split_once(':').unwrap_or((action, ""));
    if s != site || !w.ends_with(when) && w != when {
        return None;
    }
    if w.starts_with("pause") {
        let ms = arg.parse().unwrap_or(5000);
        eprintln!("sgctl: failpoint {site}={w}: pausing {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
        return None;
    }
    Some(Error::Usage { what: format!("failpoint {site}={w}"), detail: "injected failure".into() })
}

/// The applied rule set, or an error saying there is none.
pub fn applied() -> Result<State> {
    current_state()?.ok_or_else(|| Error::Usage {
        what: "no rule set applied in this network namespace".into(),
        detail: "run `sgctl apply FILE` first".into(),
    })
}
