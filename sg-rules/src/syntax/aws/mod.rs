//! AWS JSON: read into the raw form (apply, import, every subcommand taking `--format aws`)
//! (writing one is a tool: `crate::tools::aws_export`).
//!
//! Inputs, as `aws ec2` prints them (unknown keys are ignored, optional keys may be missing):
//! - `describe-security-groups` (`SecurityGroups`) or `describe-security-group-rules`
//!   (`SecurityGroupRules`, one rule per entry, grouped here by `GroupId`): the rules file.
//! - `describe-network-interfaces` (`--network-interfaces`): group members ([`inputs`]).
//! - `describe-prefix-lists`, `get-managed-prefix-list-entries` (`--prefix-lists`): prefix-list
//!   entries ([`inputs`]).
//! - a members file in sgctl's TOML (`--members`): members and entries AWS cannot list
//!   (groups of other accounts such as `amazon-elb`).
//! - `describe-network-acls` (`--network-acls`): network ACLs ([`nacl`]), bound by their id in
//!   `--bind IFACE=...,acl-ID`.
//!
//! Groups are keyed by GroupId: GroupName is unique only per VPC. See `import.rs` for naming,
//! references and what is accepted with a warning.

mod import;
pub mod inputs;
pub mod nacl;

pub use import::parse;
pub use inputs::PrefixListInput;
