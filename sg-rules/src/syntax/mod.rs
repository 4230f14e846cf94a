//! Syntax: the front ends, which read a file into the same located, unchecked [`raw`] form
//! (syntax errors carry file:line:column): sgctl's TOML ([`toml_front`]) and AWS JSON
//! ([`aws`]).

pub mod aws;
pub mod raw;
pub mod toml_front;
