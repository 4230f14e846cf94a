//! Ingress pipeline (XDP): the frame is complete and linear.

use aya_ebpf::programs::XdpContext;
use sg_common::Direction;

use crate::policy::{self, Verdict};

#[inline(always)]
pub fn ingress(ctx: &XdpContext, bytes: u64) -> Verdict {
    policy::run(ctx, Direction::Ingress, bytes)
}
