//! Types shared by the sgctl datapath (`sg-ebpf`) and userspace (`sg-userspace`).
//!
//! Every type that crosses the kernel/user boundary lives here. Rules for this crate:
//! `#[repr(C)]`, explicit `_pad` fields, no `bool`/`Option`/enum fields, and a `const` size
//! assertion per type, so that both sides agree on the layout byte for byte.
//!
//! With the `user` feature the types also implement [`aya::Pod`].
#![cfg_attr(not(test), no_std)]

pub mod clock;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod flowlog;
pub mod layout;
pub mod local;
pub mod lookup;
pub mod maps;
pub mod packet;
pub mod policy;
pub mod reason;
pub mod stage;

pub use config::{IfaceConfig, Posture};
pub use counters::Counter;
pub use packet::PacketSummary;
pub use reason::{Action, Direction, Reason};

/// Implements `aya::Pod` for userspace, where the `user` feature is on.
macro_rules! impl_pod {
    ($($t:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: `#[repr(C)]`, only integer and integer-array fields, explicit padding.
            unsafe impl aya::Pod for $t {}
        )+
    };
}
pub(crate) use impl_pod;
