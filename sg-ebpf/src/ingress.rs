//! Ingress pipeline (XDP): config -> parse -> policy.

use aya_ebpf::programs::XdpContext;
use sg_common::{Direction, Reason};

use crate::{parse, policy};

#[inline(always)]
pub fn try_ingress(ctx: &XdpContext) -> Result<Reason, Reason> {
    let cfg = parse::config()?;
    let pkt = match parse::parse_recorded(ctx, &cfg)? {
        Some(pkt) => pkt,
        None => return Ok(Reason::PassNonIp),
    };
    policy::decide(&cfg, Direction::Ingress, pkt)
}
