//! What operators do with a checked rule set: best-practice checks ([`audit`]), the difference
//! between two ([`diff`]), one-rule edits of a file ([`edit`]), and writing it out again as
//! nftables ([`nft`]), AWS JSON ([`aws_export`]) or sgctl TOML ([`toml_out`]).

pub mod audit;
pub mod aws_export;
pub mod diff;
pub mod edit;
pub mod learn;
pub mod nft;
pub mod toml_out;
