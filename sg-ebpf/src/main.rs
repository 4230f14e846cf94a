//! sgctl datapath. Entry points only: the pipeline (`pipeline.rs`) decides every packet and
//! returns a verdict; every packet leaves through `verdict::exit`, the single exit that counts
//! the verdict's reason and maps it to an action.
//!
//! Read top-down: `pipeline.rs` (the order of decisions), then `conntrack.rs` (tracked flows,
//! fragments) and `policy.rs` (the rule lookup), with `parse.rs` (the one bounds-checked way
//! to read a packet), `verdict.rs`, `clock.rs`, `flowlog.rs`, `log.rs` and `maps.rs` beside them.
#![no_std]
#![no_main]

mod clock;
mod conntrack;
mod flowlog;
mod log;
mod maps;
mod parse;
mod pipeline;
mod policy;
mod stage;
mod verdict;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sg_common::Direction;
use verdict::Exit;

/// XDP, ingress. Fails closed: an error is a drop reason.
#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_ingress(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = pipeline::ingress(&ctx, len);
    match verdict::exit(&ctx, Direction::Ingress, v, len) {
        Exit::Pass => xdp_action::XDP_PASS,
        Exit::Drop => xdp_action::XDP_DROP,
    }
}

/// TC (TCX or clsact), egress. Pass is `TC_ACT_UNSPEC` (TCX_NEXT): later programs still run.
#[allow(clippy::needless_pass_by_value, reason = "the #[classifier] macro passes the context by value")]
#[classifier]
pub fn sg_egress(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    tc_exit(&ctx, &ctx, Direction::Egress, len)
}

/// TCX, ingress: the ingress pipeline for an interface whose XDP hook another program owns
/// (`sgctl attach --ingress-hook tcx`). Pass is `TC_ACT_UNSPEC` (TCX_NEXT), as on egress.
#[allow(clippy::needless_pass_by_value, reason = "the #[classifier] macro passes the context by value")]
#[classifier]
pub fn sg_ingress_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    tc_exit(&ctx, &parse::IngressSkb(&ctx), Direction::Ingress, len)
}

/// A TC program's run: `pkt` is `ctx` as that program reads it (see `parse::IngressSkb`).
#[inline(always)]
fn tc_exit<P: parse::Packet + aya_ebpf::EbpfContext>(
    ctx: &TcContext,
    pkt: &P,
    dir: Direction,
    len: u64,
) -> i32 {
    let v = pipeline::tc(ctx, pkt, dir, len);
    match verdict::exit(pkt, dir, v, len) {
        Exit::Pass => TC_ACT_UNSPEC,
        Exit::Drop => TC_ACT_SHOT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
