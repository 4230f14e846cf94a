//! Private datapath instances with a security-group policy: a TOML rule set, compiled and
//! applied (inactive generation written, then flipped) as `sgctl apply` does.

use sg_common::{IfaceConfig, Posture, config::CONFIG_RECORD_PARSE};
use sg_userspace::{
    loader::{IngressHook, PrivateInstance, Sizes},
    rules::{AwsContext, Format, RuleSet, compile, parse_str},
};

/// Parses `toml` (panics with every diagnostic if invalid).
pub fn ruleset(toml: &str) -> RuleSet {
    parse_str("test.toml", toml, Format::Toml, &AwsContext::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// A private instance recording packet summaries, in posture mode (allow/allow) until a
/// policy is applied.
pub fn recording_instance() -> PrivateInstance {
    recording_instance_at(IngressHook::Xdp)
}

/// [`recording_instance`] whose ingress program is that of `hook` (XDP, or TC for
/// `--ingress-hook tcx`).
pub fn recording_instance_at(hook: IngressHook) -> PrivateInstance {
    let cfg = IfaceConfig {
        flags: CONFIG_RECORD_PARSE,
        ingress_posture: Posture::Allow as u8,
        egress_posture: Posture::Allow as u8,
        ..IfaceConfig::default()
    };
    PrivateInstance::load_hooked(&cfg, Sizes::default(), hook).expect("load a private instance")
}

/// Compiles `rs` for `iface` and applies it to `inst` (generation flip).
pub fn apply(inst: &mut PrivateInstance, rs: &RuleSet, iface: &str, seq: u64) {
    let plan = compile::compile_iface(rs, iface).unwrap_or_else(|e| panic!("{e}"));
    inst.apply_plan(&plan, seq).expect("apply plan");
}
