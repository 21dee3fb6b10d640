//! What both twins of the WEQ weight kernels (`shaders/weq_histogram.wgsl`,
//! `shaders/weq_sweep.wgsl`) share: the word layout of histogram bins and prefix entries, and
//! the per-group record of a sweep.

/// Words per bin: count, low and high word of the fixed-point Σt².
pub const BIN_WORDS: usize = 3;
/// Words per prefix entry (`cpu::weq_histogram::Prefix`).
pub const PREFIX_WORDS: usize = 2;

/// Per-group outcome of a sweep; mirrors `WeqInfo` in the WGSL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqInfo {
    /// Weighted entropy S of the group (units of w²), as the sweep computed it.
    pub entropy: f32,
    /// Sweeps run (the last one moved nothing, unless the cap was reached).
    pub sweeps: u32,
    /// Non-empty magnitude clusters.
    pub clusters: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<WeqInfo>() == 16);

/// Most bins per group: 2^16 keeps the per-tensor optimum of S within 0.1% of the exact one.
pub const MAX_BINS: u32 = 1 << 16;

/// Bins of the histogram of a group of `group_len` weights on either backend: four per weight
/// rounded up to a power of two (heavy tails crowd most values into the lowest bins), between
/// 256 and [`MAX_BINS`]. 4x rather than 16x: rows of up to 256 then fit the barrier-free
/// one-thread-per-group sweep (5-14x faster per channel on llvmpipe) while S stays within
/// 0.05% of the exact algorithm's on Gaussian rows of 256-1024 (16x: 0.013%). The GPU takes fewer
/// only on a device whose storage binding cannot hold one group's histogram (below ~1.3 MB,
/// under WebGPU's guaranteed 128 MiB), where the two backends would differ.
pub fn bins_for_group(group_len: usize) -> u32 {
    (4 * group_len as u64)
        .next_power_of_two()
        .clamp(256, u64::from(MAX_BINS)) as u32
}
