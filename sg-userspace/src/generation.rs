//! The generation flip: how a compiled plan becomes an interface's policy, without a moment
//! of an empty or half-written one. The one path for every instance: `sgctl apply` (and the
//! daemon) on live interfaces, an interface attached with a policy, and private instances
//! (verdict tables, `sgctl replay`).
//!
//! 1. [`stage`]: write the plan into the *inactive* generation of the maps (the datapath reads
//!    only the generation `IfaceConfig::active_gen` names, and in posture mode neither), and
//!    compute the config that switches to it ([`next_config`]);
//! 2. [`Flip::commit`]: one update of the config entry (the datapath sees the old config or the
//!    new one, never a mix);
//! 3. [`Flip::revert`]: the previous config again, for an apply that must take back a flip
//!    because a later interface failed. The old generation is untouched until the next stage.

use sg_common::{
    IfaceConfig,
    config::{CONFIG_ACL, CONFIG_IMPLICIT_MASK, POLICY_GROUPS, with_monitor},
};

use crate::{error::Result, maps::InstanceMaps, rules::compile::IfacePlan};

/// A staged flip of one instance: the config before and the config that enforces the plan.
#[derive(Clone, Copy, Debug)]
pub struct Flip {
    pub prev: IfaceConfig,
    pub next: IfaceConfig,
}

impl Flip {
    /// The generation the datapath read before the flip, if it read one (groups mode).
    pub fn old_gen(&self) -> Option<u8> {
        (self.prev.policy_mode == POLICY_GROUPS).then_some(self.prev.active_gen & 1)
    }

    /// The generation the plan was written to.
    pub fn new_gen(&self) -> u8 {
        self.next.active_gen & 1
    }

    /// Switches the datapath to the staged generation (one map update).
    pub fn commit(&self, maps: &mut InstanceMaps) -> Result<()> {
        maps.set_config(&self.next)
    }

    /// Switches it back to the config before the flip, under an ACL epoch of its own: allows
    /// cached under the flipped-to config must not hold under a later one (the next apply
    /// counts the epoch on from this one and reuses the sequence number).
    pub fn revert(&self, maps: &mut InstanceMaps) -> Result<()> {
        maps.set_config(&self.reverted())
    }

    /// The config [`Flip::revert`] writes.
    pub fn reverted(&self) -> IfaceConfig {
        IfaceConfig { acl_epoch: self.next.acl_epoch.wrapping_add(1), ..self.prev }
    }
}

/// The generation the datapath does not read: the other one.
pub fn inactive_gen(cur: &IfaceConfig) -> u8 {
    (cur.active_gen & 1) ^ 1
}

/// The config that enforces `plan` (rule set number `seq`) from generation
/// [`inactive_gen`]`(cur)`: security-groups mode, the plan's timeouts, implicit allowances and
/// monitor setting; with `revoke`, flows allowed before are checked again on their next packet;
/// a new ACL epoch (the ACL allows conntrack cached no longer hold). Everything else (attach
/// metadata, flow logs, record flag) is kept.
pub fn next_config(cur: &IfaceConfig, plan: &IfacePlan, seq: u64, revoke: bool) -> IfaceConfig {
    IfaceConfig {
        policy_mode: POLICY_GROUPS,
        active_gen: inactive_gen(cur),
        policy_seq: seq,
        revoke_seq: if revoke { seq } else { cur.revoke_seq },
        ct_timeouts: plan.timeouts,
        acl_epoch: cur.acl_epoch.wrapping_add(1),
        flags: with_monitor(
            (cur.flags & !(CONFIG_IMPLICIT_MASK | CONFIG_ACL)) | plan.no_implicit | acl_flag(plan),
            plan.monitor,
        ),
        ..*cur
    }
}

/// `CONFIG_ACL` when the plan has a network ACL: the datapath reads the ACL layer of the
/// generation it flips to (the flag and the generation change in one config update).
fn acl_flag(plan: &IfacePlan) -> u32 {
    if plan.acl.is_some() { CONFIG_ACL } else { 0 }
}

/// Writes `plan` into the inactive generation of `maps` and returns the flip to it. Nothing
/// the datapath reads changes until [`Flip::commit`].
pub fn stage(maps: &mut InstanceMaps, plan: &IfacePlan, seq: u64, revoke: bool) -> Result<Flip> {
    let prev = maps.config()?;
    let next = next_config(&prev, plan, seq, revoke);
    maps.write_generation(next.active_gen & 1, plan)?;
    Ok(Flip { prev, next })
}

/// [`stage`] then [`Flip::commit`]: one instance on its own.
pub fn apply(maps: &mut InstanceMaps, plan: &IfacePlan, seq: u64, revoke: bool) -> Result<Flip> {
    let flip = stage(maps, plan, seq, revoke)?;
    flip.commit(maps)?;
    Ok(flip)
}

#[cfg(test)]
mod tests {
    use sg_common::config::{
        CONFIG_FLOW_LOG, CONFIG_MONITOR, CONFIG_NO_IMPLICIT_NDP, CONFIG_VALID, POLICY_POSTURE,
    };

    use super::*;
    use crate::rules::{AwsContext, Format, compile::compile_iface, parse_str};

    fn plan(extra: &str) -> IfacePlan {
        let text = format!("[groups.g]\ningress = []\n[interfaces.eth0]\ngroups = [\"g\"]\n{extra}\n");
        let rs = parse_str("t.toml", &text, Format::Toml, &AwsContext::default()).unwrap();
        compile_iface(&rs, "eth0").unwrap()
    }

    #[test]
    fn next_config_flips_to_the_other_generation_and_keeps_the_rest() {
        let cur = IfaceConfig {
            flags: CONFIG_VALID | CONFIG_FLOW_LOG | CONFIG_NO_IMPLICIT_NDP,
            ifindex: 7,
            policy_mode: POLICY_POSTURE,
            active_gen: 0,
            revoke_seq: 3,
            ..IfaceConfig::default()
        };
        let p = plan("");
        let next = next_config(&cur, &p, 5, false);
        assert_eq!((next.policy_mode, next.active_gen, next.policy_seq), (POLICY_GROUPS, 1, 5));
        assert_eq!(next.revoke_seq, 3, "no --revoke: flows allowed before stay");
        assert_eq!(next.ifindex, 7);
        assert_eq!(next.flags & CONFIG_FLOW_LOG, CONFIG_FLOW_LOG, "flow logs are the daemon's, kept");
        assert_eq!(next.flags & CONFIG_NO_IMPLICIT_NDP, 0, "implicit allowances come from the plan");
        let again = next_config(&next, &p, 6, true);
        assert_eq!((again.active_gen, again.revoke_seq), (0, 6));
        let monitored = next_config(&cur, &plan("monitor = true"), 7, false);
        assert_eq!(monitored.flags & CONFIG_MONITOR, CONFIG_MONITOR);
        assert_eq!(
            next_config(&monitored, &p, 8, false).flags & CONFIG_MONITOR,
            CONFIG_MONITOR,
            "absent: kept"
        );
        assert_eq!(next_config(&monitored, &plan("monitor = false"), 9, false).flags & CONFIG_MONITOR, 0);
    }

    #[test]
    fn the_acl_flag_follows_the_plan() {
        let text = "[groups.g]\n[acls.a]\ningress = [{ rule = 1, action = \"deny\", proto = \"all\", cidr = \"0.0.0.0/0\" }]\n[interfaces.eth0]\ngroups = [\"g\"]\nacl = \"a\"\n";
        let rs = parse_str("t.toml", text, Format::Toml, &AwsContext::default()).unwrap();
        let with = compile_iface(&rs, "eth0").unwrap();
        let cur = IfaceConfig { flags: CONFIG_VALID, ..IfaceConfig::default() };
        let on = next_config(&cur, &with, 1, false);
        assert_eq!(on.flags & CONFIG_ACL, CONFIG_ACL);
        assert_eq!(
            next_config(&on, &plan(""), 2, false).flags & CONFIG_ACL,
            0,
            "a plan without an ACL clears it"
        );
    }

    #[test]
    fn every_flip_and_every_flip_back_has_an_acl_epoch_never_used_before() {
        let p = plan("");
        let cur = IfaceConfig { flags: CONFIG_VALID, acl_epoch: 4, ..IfaceConfig::default() };
        let first = Flip { prev: cur, next: next_config(&cur, &p, 2, false) };
        assert_eq!(first.next.acl_epoch, 5);
        let back = first.reverted();
        assert_eq!((back.policy_seq, back.active_gen), (cur.policy_seq, cur.active_gen), "the old config");
        assert_eq!(back.acl_epoch, 6, "but not the old epoch, nor the flipped-to one");
        // The next apply reuses the sequence number of the one taken back, not its epoch.
        let retry = next_config(&back, &p, 2, false);
        assert_eq!((retry.policy_seq, retry.acl_epoch), (2, 7));
    }
}
