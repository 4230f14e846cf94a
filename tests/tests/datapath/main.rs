//! The datapath through BPF_PROG_TEST_RUN: private instances of the real programs (loaded,
//! never attached) fed crafted frames, each verdict checked against a table or the reference
//! model. Needs root and BPF; no network namespace.

mod conntrack_verdicts;
mod differential;
mod hostile;
mod learn_check;
mod map_registry;
mod parse_fuzz;
mod rules_verdicts;
mod state_attacks;
mod verdicts;
