//! Egress pipeline (TC): linearise the headers first, then the common pipeline.

use aya_ebpf::programs::TcContext;
use sg_common::{Direction, Reason};

use crate::{
    parse,
    policy::{self, Verdict},
};

#[inline(always)]
pub fn egress(ctx: &TcContext, bytes: u64) -> Verdict {
    // Direct packet access only sees the linear part of an skb: pull what the parser may read.
    let want = core::cmp::min(ctx.len(), parse::MAX_HDR_BYTES as u32);
    if ((ctx.data_end() - ctx.data()) as u32) < want && ctx.pull_data(want).is_err() {
        return Verdict::of(Reason::InternalError);
    }
    policy::run(ctx, Direction::Egress, bytes)
}
