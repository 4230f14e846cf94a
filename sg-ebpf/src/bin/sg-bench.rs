//! Benchmark-only programs (never attached by sgctl; loaded by `cargo xtask bench`):
//!
//! - `sg_bench_pass` / `sg_bench_drop`: the bare baselines, XDP_PASS and XDP_DROP.
//! - `sg_bench_tc_pass`: the bare TC baseline (TCX_NEXT), the floor of sgctl's ingress at TCX.
//! - `sg_bench_count_drop`: XDP_DROP after counting the packet in `SG_BENCH_COUNT` (the bare
//!   receiver of the traffic runs, whose rate is read from that counter).
//! - `sg_bench_tx`: the built-in traffic generator. Driven by BPF_PROG_TEST_RUN in live-frames
//!   mode on the sender's veth, it rewrites the UDP source port of an Ethernet/IPv4/UDP
//!   template to one of `FLOWS` values (pseudo-random per packet, so many distinct flows) and
//!   returns XDP_TX: the frame leaves through the veth to the receiver.
//! - `sg_bench_new_flow`: counts the UDP source port of an Ethernet/IPv4-or-IPv6/UDP frame up
//!   by one, then tail-calls the program in `SG_BENCH_NEXT[0]`. BPF_PROG_TEST_RUN keeps the
//!   frame between repetitions, so a repeated run of it in front of sgctl's `sg_ingress` makes
//!   every repetition a new flow: new-flow cost measured warm, like the other per-packet
//!   costs (in front of `sg_bench_pass` it is the baseline).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_get_prandom_u32,
    macros::{classifier, map, xdp},
    maps::{PerCpuArray, ProgramArray},
    programs::{TcContext, XdpContext},
};

/// Packets dropped by `sg_bench_count_drop` (index 0), per CPU.
#[map]
static SG_BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The program `sg_bench_new_flow` hands the frame to (index 0).
#[map]
static SG_BENCH_NEXT: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Number of distinct source ports the generator cycles through (a power of two), set at load.
#[unsafe(no_mangle)]
static FLOWS: u32 = 1024;
/// First source port of the generator.
#[unsafe(no_mangle)]
static SPORT_BASE: u16 = 10_000;

/// Offset of the UDP source port in an Ethernet/IPv4 (no options)/UDP frame.
const UDP_SPORT_OFF: usize = 14 + 20;

#[inline(always)]
fn count() {
    if let Some(c) = SG_BENCH_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Bare XDP_PASS: the floor of any XDP program (per-packet cost baseline).
#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Bare TC pass (TCX_NEXT): the floor of a TC program (baseline of sgctl's ingress at TCX).
#[allow(clippy::needless_pass_by_value, reason = "the #[classifier] macro passes the context by value")]
#[classifier]
pub fn sg_bench_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Bare XDP_DROP (per-packet cost baseline).
#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// XDP_DROP that counts what it drops: the bare-drop receiver of the traffic runs.
#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_bench_count_drop(_ctx: XdpContext) -> u32 {
    count();
    xdp_action::XDP_DROP
}

#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_bench_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + UDP_SPORT_OFF + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: read of a global the loader may have set.
    let flows = unsafe { core::ptr::read_volatile(&raw const FLOWS) };
    // SAFETY: as above.
    let base = unsafe { core::ptr::read_volatile(&raw const SPORT_BASE) };
    // SAFETY: the helper has no preconditions.
    let r = unsafe { bpf_get_prandom_u32() };
    let sport = base.wrapping_add((r & flows.wrapping_sub(1)) as u16);
    // SAFETY: [start+off, start+off+2) lies inside the frame (checked above).
    unsafe { core::ptr::write_unaligned((start + UDP_SPORT_OFF) as *mut u16, sport.to_be()) };
    xdp_action::XDP_TX
}

/// Offset of the UDP source port behind an IPv6 header without extension headers.
const UDP6_SPORT_OFF: usize = 14 + 40;

#[allow(clippy::needless_pass_by_value, reason = "the #[xdp] macro passes the context by value")]
#[xdp]
pub fn sg_bench_new_flow(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + UDP6_SPORT_OFF + 2 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: bytes 12 and 13 lie inside the frame (checked above).
    let ethertype = unsafe { [*((start + 12) as *const u8), *((start + 13) as *const u8)] };
    let off = if ethertype == [0x86, 0xdd] { UDP6_SPORT_OFF } else { UDP_SPORT_OFF };
    let p = (start + off) as *mut u16;
    // SAFETY: [start+off, start+off+2) lies inside the frame (checked above, off <= 54).
    unsafe {
        let sport = u16::from_be(core::ptr::read_unaligned(p));
        core::ptr::write_unaligned(p, sport.wrapping_add(1).to_be());
    }
    // SAFETY: index 0 of a program array; on failure the frame is aborted.
    unsafe { SG_BENCH_NEXT.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
