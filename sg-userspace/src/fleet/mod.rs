//! Fleet mode: one policy for many hosts, in etcd. [`schema`] is the key layout and the policy
//! as keys; [`store`] reads it at one revision and writes it in one transaction.

pub mod agent;
pub mod schema;
pub mod store;

pub use schema::{DEFAULT_PREFIX, KeyDiff, PolicyKeys, Schema};
pub use store::{Endpoints, PutOutcome, Snapshot, Store, Tls};

use crate::rules::RuleErrors;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("invalid key prefix '{0}': it must start and end with '/' (default /sgctl/v1/)")]
    BadPrefix(String),

    #[error("etcd ({endpoints}): {why}")]
    Etcd { endpoints: String, why: String },

    #[error("stored key {key}: {why}")]
    BadKey { key: String, why: String },

    #[error("{0}")]
    Policy(RuleErrors),

    #[error(
        "the policy changed in the store while this put was prepared (another fleet put): nothing written; run it again"
    )]
    Raced,

    #[error(
        "this change is one transaction of {0} operations, more than the cluster allows: raise etcd's --max-txn-ops (default 128); nothing written"
    )]
    TooManyOps(usize),
}
