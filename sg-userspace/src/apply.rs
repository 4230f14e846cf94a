//! Hot apply of a rule set to the live interfaces, all or nothing.
//!
//! 1. Compile every interface's plan (pure; any error: nothing touched).
//! 2. Take the apply lock; diff against the applied state.
//! 3. Phase one ([`stage`]): for each attached interface write the *inactive* generation of its
//!    maps (`generation::stage`); attach interfaces new to the file with their policy already
//!    written. Any failure detaches what this apply attached and leaves every active
//!    generation as it was.
//! 4. Save the new state (seq + 1), then phase two ([`flip_all`]): flip each interface's
//!    `active_gen` (one map update each; the datapath sees the old or the new policy, never a
//!    mix). If flipping interface N fails, interfaces 1..N-1 are flipped back, the state
//!    file is restored and the interfaces this apply attached are detached: every interface
//!    enforces the old rule set again.
//! 5. Detach interfaces the new file no longer lists.
//!
//! Rule hit counts of rules that stay (same group, direction and content) carry over, and so
//! do those of network ACL entries that stay (same ACL, direction, number and content): after
//! the flip the old generation's final counts are added to a per-rule (per-entry) base kept in
//! the state file (the datapath's counters are never written while live).

use std::collections::{BTreeMap, HashMap};

use crate::{
    adopt::{self, AdoptReport},
    confirm,
    error::{Error, Result},
    failpoint,
    generation::{self, Flip},
    hits,
    layer::Layer,
    loader::{self, Placement},
    pins,
    rules::{
        RuleSet,
        compile::{self, IfacePlan},
        diff::{Diff, diff},
    },
    state::{self, State},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions<'a> {
    /// Compute and report the diff only.
    pub dry_run: bool,
    /// Where the programs of interfaces this apply attaches go (XDP mode, ingress hook).
    pub placement: Placement,
    /// End tracked flows the new rules do not allow (AWS keeps them). Checked lazily: each
    /// flow is re-validated against the new rules on its next packet.
    pub revoke: bool,
    /// Allow a rule set that binds no interface: it detaches every interface enforcing one
    /// (refused otherwise: an empty file, a file cut short or AWS JSON without `--bind` must
    /// not open the host).
    pub allow_empty: bool,
    /// Roll the apply back by itself after this many seconds unless `sgctl confirm` comes
    /// first (`confirm`); interfaces the file dropped are detached only on confirmation.
    pub confirm: Option<u64>,
    /// Where the rule set comes from (`State::source`), for `sgctl status`.
    pub source: Option<&'a str>,
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
    /// Interfaces this apply attached, with the existing connections each adopted.
    pub adopted: BTreeMap<String, AdoptReport>,
    /// With `--confirm`: unix seconds at which it rolls back unless confirmed.
    pub confirm_deadline: Option<u64>,
}

/// For each of `new` (identities), the total of the same item in `old` (identity, total),
/// matched in order; 0 for an item the old set did not have.
fn carry(old: Vec<(String, u64)>, new: Vec<String>) -> Vec<u64> {
    let mut totals: HashMap<String, std::collections::VecDeque<u64>> = HashMap::new();
    for (id, total) in old {
        totals.entry(id).or_default().push_back(total);
    }
    new.into_iter()
        .map(|id| totals.get_mut(&id).and_then(std::collections::VecDeque::pop_front).unwrap_or(0))
        .collect()
}

/// New hit bases of `iface` under `new`, per layer: for each item, the total of the same one
/// in the old set (its hits in the generation `old_gen` held).
fn carried_bases(
    layer: Layer,
    old: Option<&State>,
    iface: &str,
    old_gen: Option<(&loader::Attached, u8)>,
    new: &RuleSet,
) -> Vec<u64> {
    let mut was = Vec::new();
    if let (Some(old), Some((attached, gen_))) = (old, old_gen) {
        let ids = layer.identities(&old.ruleset, iface);
        let counts = hits::totals(layer, old, iface, &attached.maps, gen_).unwrap_or_else(|e| {
            log::warn!("{iface}: reading {} hits: {e}; their counts restart", layer.item());
            vec![0; ids.len()]
        });
        was = ids.into_iter().zip(counts).collect();
    }
    carry(was, layer.identities(new, iface))
}

/// An attached interface with its next generation written.
struct Staged {
    attached: loader::Attached,
    flip: Flip,
}

/// Applies `rs` (see the module documentation). With `dry_run`, only the diff.
pub fn apply(rs: &RuleSet, opts: ApplyOptions<'_>) -> Result<ApplyReport> {
    if rs.interfaces.is_empty() && !rs.hosts.is_empty() {
        let hosts: Vec<&str> = rs.hosts.iter().map(|h| h.host.as_str()).collect();
        return Err(Error::HostsOnly { hosts: hosts.join(", ") });
    }
    pins::check_root()?;
    pins::check_bpffs()?;
    // An interface that does not exist is the file's error (a dry run says so too).
    for b in &rs.interfaces {
        if crate::iface::ifindex(&b.iface).is_err() {
            return Err(Error::NoSuchInterfaceAt { loc: b.loc.to_string(), iface: b.iface.clone() });
        }
    }
    let plans = compile::compile(rs)?;
    let _lock = state::lock()?;
    let old = state::current_state()?;
    if rs.interfaces.is_empty() && !opts.allow_empty {
        let enforcing: Vec<String> = old
            .as_ref()
            .map(|s| s.ruleset.interfaces.iter().map(|b| b.iface.clone()).collect())
            .unwrap_or_default();
        return Err(Error::BindsNothing { enforcing: enforcing.join(", ") });
    }
    let mut d = diff(old.as_ref().map(|s| &s.ruleset), rs);
    // An interface the saved rule set has but nothing enforces (detached by hand): the diff of
    // the rules does not show that this apply attaches it again; say it.
    if let Some(o) = &old {
        for b in rs.interfaces.iter().filter(|b| o.ruleset.binding(&b.iface).is_some()) {
            if matches!(loader::open_attached(&b.iface), Ok(None)) {
                d.lines.push(format!(
                    "~ interface {}: not attached (detached by hand?): attached again",
                    b.iface
                ));
            }
        }
    }
    let seq = old.as_ref().map_or(0, |s| s.seq) + 1;
    let mut report = ApplyReport {
        diff: d,
        applied: false,
        seq,
        interfaces: plans.iter().map(|p| p.iface.clone()).collect(),
        detached: Vec::new(),
        warnings: Vec::new(),
        adopted: BTreeMap::new(),
        confirm_deadline: None,
    };
    if opts.dry_run {
        return Ok(report);
    }
    if let Some(p) = confirm::pending()? {
        return Err(Error::AwaitingConfirm { seq: p.seq, deadline: p.deadline });
    }
    let mut newly: Vec<(String, AdoptReport)> = Vec::new();
    let mut staged = match stage(rs, &plans, seq, opts, &mut newly) {
        Ok(s) => s,
        Err(e) => {
            detach_all(&newly);
            return Err(e);
        }
    };
    let mut new_state = State {
        seq,
        ruleset: rs.clone(),
        hit_base: BTreeMap::default(),
        acl_hit_base: BTreeMap::default(),
        source: opts.source.map(str::to_string),
    };
    let had_state = match state::save_new(&new_state) {
        Ok(had) => had,
        Err(e) => {
            detach_all(&newly);
            return Err(e);
        }
    };
    if let Err(e) = failpoint::hit("before_flip").and_then(|()| flip_all(&mut staged)) {
        if let Err(se) = state::undo_new(had_state) {
            log::error!("rollback: restoring the state file: {se}");
        }
        detach_all(&newly);
        return Err(e);
    }
    report.applied = true;
    report.adopted = newly.iter().cloned().collect();
    // The old generations are no longer read: their counts are final. Carry them over.
    for s in &staged {
        let iface = &s.attached.iface;
        let old_gen = s.flip.old_gen().map(|g| (&s.attached, g));
        for layer in Layer::ALL {
            let bases = carried_bases(layer, old.as_ref(), iface, old_gen, rs);
            new_state.bases_mut(layer).insert(iface.clone(), bases);
        }
    }
    if let Err(e) = state::save(&new_state) {
        report.warnings.push(format!("saving carried-over hit counts: {e}"));
    }
    if let Some(secs) = opts.confirm {
        let p = confirm::Pending {
            seq,
            deadline: confirm::now_unix() + secs,
            flipped: staged
                .iter()
                .map(|s| (s.attached.iface.clone(), confirm::config_bytes(&s.flip.reverted())))
                .collect(),
            attached: newly.iter().map(|(i, _)| i.clone()).collect(),
            to_detach: report.diff.detach.clone(),
            had_state,
        };
        if let Err(e) = confirm::arm(&p, secs) {
            // Without its watcher it would never roll back: take it back now.
            report.warnings.push(format!("--confirm: {e}; rolling back"));
            confirm::rollback(seq).ok();
            return Err(e);
        }
        report.confirm_deadline = Some(p.deadline);
        return Ok(report);
    }
    for iface in report.diff.detach.clone() {
        match loader::detach(&iface) {
            Ok(_) | Err(Error::NotAttached { .. }) => report.detached.push(iface),
            Err(e) => report.warnings.push(format!("detaching {iface}: {e}")),
        }
    }
    Ok(report)
}

/// Phase one: write inactive generations, attach new interfaces (recorded in `newly`, with
/// the connections each adopted: see `adopt`).
fn stage(
    rs: &RuleSet,
    plans: &[IfacePlan],
    seq: u64,
    opts: ApplyOptions<'_>,
    newly: &mut Vec<(String, AdoptReport)>,
) -> Result<Vec<Staged>> {
    let mut staged = Vec::new();
    for plan in plans {
        // An instance of an older datapath is upgraded first (without a gap), not replaced.
        match loader::open_attached_for_write(&plan.iface)? {
            Some(mut attached) => {
                crate::iface::refresh_local(&plan.iface, &mut attached.maps)?;
                let flip = generation::stage(&mut attached.maps, plan, seq, opts.revoke)?;
                staged.push(Staged { attached, flip });
            }
            None => {
                let decide = adopt::by_rules(rs, &plan.iface);
                let r = loader::attach_with_policy(&plan.iface, opts.placement, plan, seq, &decide)?;
                newly.push((plan.iface.clone(), r.adopted.unwrap_or_default()));
            }
        }
    }
    Ok(staged)
}

/// Phase two: flip every staged interface, in order. If one fails, the ones already flipped
/// are flipped back (best effort, each failure logged) and its error is returned.
fn flip_all(staged: &mut [Staged]) -> Result<()> {
    for i in 0..staged.len() {
        let result = failpoint::hit("flip").and_then(|()| {
            let s = &mut staged[i];
            s.flip.commit(&mut s.attached.maps)
        });
        if let Err(e) = result {
            for done in staged[..i].iter_mut().rev() {
                match done.flip.revert(&mut done.attached.maps) {
                    Ok(()) => log::warn!(
                        "{}: flipped back to rule set #{}",
                        done.attached.iface,
                        done.flip.prev.policy_seq
                    ),
                    Err(re) => log::error!("rollback: {}: flipping back: {re}", done.attached.iface),
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Detaches the interfaces an apply attached before it failed.
fn detach_all(newly: &[(String, AdoptReport)]) {
    for (iface, _) in newly {
        if let Err(e) = loader::detach(iface) {
            log::error!("rollback: detaching {iface}: {e}");
        }
    }
}
