//! The model: the checked types of both layers (security groups in [`types`], network ACLs in
//! [`acl`]), the flow key a rule or a packet is matched on ([`key`]), and the reference
//! semantics (`reference`: evaluate a packet against a rule set), which backs `sgctl explain`
//! and the differential tests that hold the datapath to it.

pub mod acl;
pub mod key;
mod reference;
pub mod types;

pub use reference::*;
