//! Benchmark stage stops (`sg_common::stage`): none in an attached instance.

/// Where to stop (`sg_common::stage`); set only by the benchmark's loader.
#[unsafe(no_mangle)]
static SG_STAGE_STOP: u32 = sg_common::stage::STAGE_FULL;

/// Does this instance stop at `stage`? Constant for the verifier (a frozen `.rodata` value),
/// which removes the branch of every stop not set.
#[inline(always)]
pub fn stop_at(stage: u32) -> bool {
    // SAFETY: a read of a global the loader may have set.
    unsafe { core::ptr::read_volatile(&raw const SG_STAGE_STOP) == stage }
}
