//! Ingress pipeline (XDP): config -> parse -> policy.

use aya_ebpf::programs::XdpContext;
use sg_common::{Direction, Reason};

use crate::{
    parse,
    policy::{self, Verdict},
};

#[inline(always)]
pub fn try_ingress(ctx: &XdpContext, bytes: u64) -> Result<Verdict, Reason> {
    let cfg = parse::config()?;
    match parse::parse_packet(ctx)? {
        Some(pkt) => policy::decide(&cfg, Direction::Ingress, pkt, bytes),
        None => Ok(Verdict::of(Reason::PassNonIp)),
    }
}
