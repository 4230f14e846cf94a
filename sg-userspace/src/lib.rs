//! sgctl: AWS-style security groups enforced in the kernel by XDP (ingress) and TC (egress).
//!
//! Library layout, from the rules to the datapath and back:
//! - `rules/`: syntax (TOML, AWS JSON) -> validate -> compile, a pure function from a rule set
//!   to each interface's plan; the reference model, diff, audit, exports, edits.
//! - `generation`: the one generation flip that turns a plan into an instance's policy;
//!   `apply`: the live, all-or-nothing apply across interfaces (CLI, daemon).
//! - `loader/`: load, attach, detach, upgrade (with the layout of every map checked), private
//!   instances; `adopt`: the connections a host has when sgctl is enabled; `maps`: typed handles on every map
//!   of the registry (`sg_common::maps`); `pins`, `state`, `iface`: where things live.
//! - Operator features: `daemon/`, `fleet/` (the policy in etcd: schema, store, the daemon's
//!   agent), `flowlog/`, `metrics`, `replay`, `conntrack`, `status`,
//!   `top`, `explain`, `hits` (per-rule hit totals), `names` (how flows and rules are shown).
//! - `cli/`: one module per subcommand, argument parsing and printing only.
//! - `error` (thiserror enums; anyhow only at the binary edge), `failpoint` (a test hook).

pub mod adopt;
pub mod apply;
pub mod cli;
pub mod clock;
pub mod confirm;
pub mod conntrack;
pub mod daemon;
pub mod error;
pub mod explain;
pub mod failpoint;
pub mod fleet;
pub mod flowlog;
pub mod generation;
pub mod hits;
pub mod iface;
pub mod layer;
pub mod learn;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod names;
pub mod pins;
pub mod replay;
pub use sg_rules as rules;
pub mod state;
pub mod status;
pub mod top;

pub use error::{Error, Result};
