//! Tests that need nothing but the built `sgctl`: the CLI's documentation (man page, README
//! tables, completions, help text) and `sgctl audit` on fixtures. Run as any user.

mod audit;
mod cli_docs;
mod cli_usage;
