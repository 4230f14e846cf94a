//! Egress pipeline (TC): linearise the headers, then config -> parse -> policy.

use aya_ebpf::programs::TcContext;
use sg_common::{Direction, Reason};

use crate::{
    parse,
    policy::{self, Verdict},
};

#[inline(always)]
pub fn try_egress(ctx: &TcContext, bytes: u64) -> Result<Verdict, Reason> {
    // Direct packet access only sees the linear part of an skb: pull what the parser may read.
    let want = core::cmp::min(ctx.len(), parse::MAX_HDR_BYTES as u32);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        ctx.pull_data(want).map_err(|_| Reason::InternalError)?;
    }
    let cfg = parse::config()?;
    match parse::parse_packet(ctx)? {
        Some(pkt) => policy::decide(&cfg, Direction::Egress, pkt, bytes),
        None => Ok(Verdict::of(Reason::PassNonIp)),
    }
}
