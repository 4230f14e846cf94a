//! Per-interface configuration, one entry in `SG_CONFIG` (index 0).
//!
//! Each attached interface has its own instance of the programs and maps, so the config map
//! holds exactly one entry. The datapath reads the postures; the rest is metadata that
//! `sgctl status` reads back.

use crate::conntrack::CtTimeouts;

/// What an interface does with IP packets that nothing else decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Posture {
    Deny = 0,
    Allow = 1,
}

impl Posture {
    pub const fn from_u8(v: u8) -> Option<Posture> {
        match v {
            0 => Some(Posture::Deny),
            1 => Some(Posture::Allow),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Posture::Deny => "deny",
            Posture::Allow => "allow",
        }
    }
}

/// `IfaceConfig::flags`: the entry was written by sgctl (an all-zero entry is invalid).
pub const CONFIG_VALID: u32 = 1 << 0;
/// `IfaceConfig::flags`: record the parsed summary of every packet in `SG_LAST_PARSE`
/// (used by the verdict-table and parser tests; off in production).
pub const CONFIG_RECORD_PARSE: u32 = 1 << 1;

/// `IfaceConfig::flags`: do not let IPv6 neighbour discovery pass implicitly (it is then
/// decided by the rules like any ICMPv6).
pub const CONFIG_NO_IMPLICIT_NDP: u32 = 1 << 2;
/// `IfaceConfig::flags`: do not let DHCPv4 client traffic pass implicitly.
pub const CONFIG_NO_IMPLICIT_DHCP: u32 = 1 << 3;
/// `IfaceConfig::flags`: do not let DHCPv6 client traffic pass implicitly.
pub const CONFIG_NO_IMPLICIT_DHCPV6: u32 = 1 << 4;
/// `IfaceConfig::flags`: monitor mode. Every verdict is computed and counted as usual, but
/// nothing is dropped: a packet whose verdict is a drop passes (its reason's counter says what
/// would have happened). For running a new policy against production traffic first.
pub const CONFIG_MONITOR: u32 = 1 << 5;
/// `IfaceConfig::flags`: emit flow-log events (`flowlog`) into `SG_FLOW_EVENTS`. Set by
/// `sgctl daemon --flow-log/--vpc-flow-log`; off, the datapath pays one bit test.
pub const CONFIG_FLOW_LOG: u32 = 1 << 6;
/// `IfaceConfig::flags`: the active generation has a network ACL (`policy::LAYER_ACL`): every
/// IP packet meets it (set by an apply, with the generation, in the same config update).
pub const CONFIG_ACL: u32 = 1 << 7;
/// `flags` with monitor mode switched on or off (`Some`), or kept (`None`).
pub const fn with_monitor(flags: u32, monitor: Option<bool>) -> u32 {
    match monitor {
        Some(true) => flags | CONFIG_MONITOR,
        Some(false) => flags & !CONFIG_MONITOR,
        None => flags,
    }
}
/// The implicit-allowance switches (set by the rules file or `sgctl attach --no-implicit`).
pub const CONFIG_IMPLICIT_MASK: u32 =
    CONFIG_NO_IMPLICIT_NDP | CONFIG_NO_IMPLICIT_DHCP | CONFIG_NO_IMPLICIT_DHCPV6;

/// `IfaceConfig::xdp_mode` values.
pub const XDP_MODE_NONE: u8 = 0;
pub const XDP_MODE_NATIVE: u8 = 1;
pub const XDP_MODE_GENERIC: u8 = 2;
/// No XDP: ingress runs as a TCX program (`sgctl attach --ingress-hook tcx`), beside whatever
/// owns the interface's XDP hook.
pub const XDP_MODE_TCX: u8 = 3;

/// `IfaceConfig::tc_kind` values.
pub const TC_KIND_NONE: u8 = 0;
pub const TC_KIND_TCX: u8 = 1;
pub const TC_KIND_CLSACT: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Interface index the instance is attached to (0 for a private test instance).
    pub ifindex: u32,
    /// `Posture` for ingress IP packets, as u8.
    pub ingress_posture: u8,
    /// `Posture` for egress IP packets, as u8.
    pub egress_posture: u8,
    /// `XDP_MODE_*` in use (metadata).
    pub xdp_mode: u8,
    /// `TC_KIND_*` in use (metadata).
    pub tc_kind: u8,
    /// `POLICY_POSTURE` (decide IP by the postures) or `POLICY_GROUPS` (security groups).
    pub policy_mode: u8,
    /// Generation (0 or 1) of the policy maps the datapath reads; userspace writes the other
    /// one and flips this byte.
    pub active_gen: u8,
    pub _pad0: [u8; 2],
    /// Unix time (seconds) of the attach (metadata).
    pub attached_at: u64,
    /// Sequence number of the applied rule set (matches sgctl's state file).
    pub policy_seq: u64,
    /// Rule set of the last `apply --revoke`: tracked flows validated under an older rule set
    /// are checked against the current rules on their next packet, and end if not allowed.
    pub revoke_seq: u64,
    /// Conntrack idle timeouts of this interface.
    pub ct_timeouts: CtTimeouts,
    /// Changes with every generation flip and every flip back, never to a value it had
    /// (userspace counts it up): the network ACL allows cached in conntrack entries
    /// (`CtEntry::acl_cache`) hold only under the epoch that made them.
    pub acl_epoch: u32,
    pub _pad1: [u8; 4],
}

const _: () = assert!(size_of::<IfaceConfig>() == 80);

/// `IfaceConfig::policy_mode`: IP packets are decided by the postures.
pub const POLICY_POSTURE: u8 = 0;
/// `IfaceConfig::policy_mode`: IP packets are decided by the security groups.
pub const POLICY_GROUPS: u8 = 1;

impl IfaceConfig {
    #[inline(always)]
    pub const fn is_valid(&self) -> bool {
        self.flags & CONFIG_VALID != 0
    }
}

crate::impl_pod!(IfaceConfig);
