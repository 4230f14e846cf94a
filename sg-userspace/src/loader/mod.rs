//! Instances of the datapath: the embedded eBPF object, loaded ([`load`]), attached to an
//! interface and pinned so that enforcement outlives sgctl ([`attach`]), detached
//! ([`detach`]), or kept private for BPF_PROG_TEST_RUN ([`private`]: verdict tables, replay).
//! Every instance's policy is written by the one generation flip (`crate::generation`).

mod attach;
pub mod bpf;
mod detach;
pub mod layout;
mod load;
mod private;
pub mod upgrade;

pub use attach::{
    AttachReport, AttachRequest, Attached, Decide, IngressOrder, Instance, Locking, ModeRequest, Placement,
    TcRequest, attach, attach_with_policy, bring_up_to_date, open_attached, open_attached_for_write,
    open_for_write, open_pinned, pinned_link_id, pinned_prog_id, tc_kind_name, tcx_ingress_position,
    xdp_mode_name,
};
pub use detach::{DetachReport, detach};
pub use load::{
    IngressHook, Sizes, load_object, load_object_hooked, load_object_reusing, load_object_sized,
    load_object_staged,
};
pub use private::PrivateInstance;

/// The eBPF object built by build.rs (aya-build) from `sg-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg-ebpf"));

/// This build, as instances record it (`InstanceMeta::build`): the version and, when built
/// from a git checkout, the commit.
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SGCTL_GIT"), ")");

/// The hash of [`EBPF_OBJECT`] (`sg_common::layout::object_hash`): which datapath this build
/// attaches.
pub fn datapath_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| sg_common::layout::object_hash(EBPF_OBJECT))
}
