//! What both twins of the WEQ weight kernels (`shaders/weq_histogram.wgsl`,
//! `shaders/weq_sweep.wgsl`) share: the word layout of histogram bins and prefix entries, and
//! the per-group record of a sweep.

/// Words per bin: count, low and high word of the fixed-point Σt².
pub const BIN_WORDS: usize = 3;
/// Words per prefix entry ([`Prefix`]).
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
