//! Egress pipeline (TC): linearise the headers, then config -> parse -> policy.

use aya_ebpf::programs::TcContext;
use sg_common::{Direction, Reason};

use crate::{parse, policy};

#[inline(always)]
pub fn try_egress(ctx: &TcContext) -> Result<Reason, Reason> {
    // Direct packet access only sees the linear part of an skb: pull what the parser may read.
    let want = core::cmp::min(ctx.len(), parse::MAX_HDR_BYTES as u32);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        ctx.pull_data(want).map_err(|_| Reason::InternalError)?;
    }
    let cfg = parse::config()?;
    let pkt = match parse::parse_recorded(ctx, &cfg)? {
        Some(pkt) => pkt,
        None => return Ok(Reason::PassNonIp),
    };
    policy::decide(&cfg, Direction::Egress, pkt)
}
