//! sgctl datapath. Entry points only: each pipeline returns a reason, and every packet leaves
//! through `stats::verdict`, the single exit that counts the reason and maps it to an action.
#![no_std]
#![no_main]

mod conntrack;
mod egress;
mod flowlog;
mod ingress;
mod log;
mod maps;
mod parse;
mod policy;
mod stats;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sg_common::{Action, Direction};

/// XDP, ingress. Fails closed: an error is a drop reason.
#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_ingress(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let v = ingress::ingress(&ctx, len);
    log::verdict(&ctx, &v);
    let monitor = v.monitor;
    let action = stats::verdict(Direction::Ingress, v, len);
    match action {
        Action::Pass => xdp_action::XDP_PASS,
        // Monitor mode: counted as a drop, passed.
        Action::Drop if monitor => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// TC (TCX or clsact), egress. Pass is `TC_ACT_UNSPEC` (TCX_NEXT): later programs still run.
#[allow(clippy::needless_pass_by_value, reason = "the #[classifier] macro passes the context by value")]
#[classifier]
pub fn sg_egress(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    let v = egress::egress(&ctx, len);
    log::verdict(&ctx, &v);
    let monitor = v.monitor;
    let action = stats::verdict(Direction::Egress, v, len);
    match action {
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop if monitor => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT,
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
