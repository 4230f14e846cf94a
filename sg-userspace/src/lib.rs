//! sgctl: AWS-style security groups enforced in the kernel by XDP (ingress) and TC (egress).
//!
//! Library layout: `loader` (load, attach, detach, private test instances), `maps` (typed
//! handles on an instance's maps), `pins` (bpffs layout), `iface` (interface facts),
//! `cli` (one module per subcommand), `error` (thiserror enums).

pub mod apply;
pub mod cli;
pub mod error;
pub mod iface;
pub mod loader;
pub mod maps;
pub mod pins;
pub mod rules;
pub mod state;

pub use error::{Error, Result};
