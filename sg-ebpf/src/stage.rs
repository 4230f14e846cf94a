//! Benchmark stage stops (`sg_common::stage`). Only the object built with the `stages`
//! feature, which the benchmark alone loads, has them; in the object sgctl attaches every
//! `stop_at` is a constant `false` and leaves no instruction.

/// Where to stop (`sg_common::stage`); set by the benchmark's loader.
#[cfg(feature = "stages")]
#[unsafe(no_mangle)]
static SG_STAGE_STOP: u32 = sg_common::stage::STAGE_FULL;

/// Does this instance stop at `stage`?
#[inline(always)]
pub fn stop_at(stage: u32) -> bool {
    #[cfg(feature = "stages")]
    {
        // SAFETY: a read of a global the loader may have set.
        unsafe { core::ptr::read_volatile(&raw const SG_STAGE_STOP) == stage }
    }
    #[cfg(not(feature = "stages"))]
    {
        let _ = stage;
        false
    }
}
