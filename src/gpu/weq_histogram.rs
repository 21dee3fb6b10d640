//! Launcher for `shaders/weq_histogram.wgsl`: the fine, deterministic histograms of |w| of
//! weighted-entropy quantization (count and fixed-point Σt² per bin, by integer atomics) and
//! their per-group prefix sums. CPU twin: `src/cpu/weq_histogram.rs`.

use crate::gpu::dispatch::spans;
use std::ops::Range;

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use crate::error::{Error, Result};
use crate::kernel::weq::{BIN_WORDS, PREFIX_WORDS};

/// `shaders/weq.wgsl`: the power-of-two histogram span shared by the WEQ weight kernels.
pub(crate) const WEQ_WGSL: &str = include_str!("../../shaders/weq.wgsl");

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "weq_histogram",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        WEQ_WGSL,
        include_str!("../../shaders/weq_histogram.wgsl"),
    ],
};

/// Uniform parameters; mirrors `WeqHistogramParams` in weq_histogram.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqHistogramParams {
    /// Elements per group.
    pub group_len: u32,
    /// Bins per group (a power of two).
    pub bins: u32,
    /// log2 of `bins`.
    pub log2_bins: u32,
    /// `histogram`: elements in the dispatch; `scan`: groups.
    pub len: u32,
    /// Global index of the element at `elem_base` of the bound values.
    pub elem_first: u32,
    /// Its index inside the bound values window.
    pub elem_base: u32,
    /// Global index of the batch's first group (histogram group 0).
    pub group_first: u32,
    /// Global index of the group at `group_base` of the bound ranges.
    pub range_first: u32,
    /// Its index inside the bound ranges window.
    pub group_base: u32,
    /// Word of histogram group 0's bin 0 in the bound histogram.
    pub hist_base: u32,
    /// Entry of histogram group 0's prefix 0 in the bound prefix.
    pub prefix_base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
}
const _: () = assert!(std::mem::size_of::<WeqHistogramParams>() == 48);

/// Elements each thread bins (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

pub use crate::kernel::weq::{MAX_BINS, bins_for_group};

/// Bins per group: [`bins_for_group`], and no more than one storage binding holds.
pub fn bins_for(ctx: &Context, group_len: usize) -> u32 {
    let wanted = u64::from(bins_for_group(group_len));
    let fit = ctx.work_limits().max_binding_bytes / (4 * BIN_WORDS as u64 + 8);
    let fit = if fit == 0 {
        1
    } else {
        1u64 << (63 - fit.leading_zeros())
    };
    wanted.min(fit).max(1) as u32
}

/// Groups whose histograms and prefix sums (`bins` bins each) fit one binding at once, at most
/// `max_words` histogram words in all: the batch size of [`encode`].
pub fn groups_per_batch(ctx: &Context, bins: u32, max_words: u64) -> u64 {
    let budget = ctx.work_limits().max_binding_bytes / 4 - 256;
    let bins = u64::from(bins);
    let per_group = (bins * BIN_WORDS as u64).max((bins + 1) * PREFIX_WORDS as u64);
    // One workgroup per group in the scan and the sweeps: the grid bounds the batch too.
    let grid = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
    (budget.min(max_words) / per_group).clamp(1, grid)
}

/// A zeroed histogram for `groups` groups of `bins` bins.
pub fn hist_tensor(ctx: &Context, groups: u64, bins: u32) -> Result<GpuTensor> {
    let words = groups as usize * bins as usize * BIN_WORDS;
    GpuTensor::zeros(ctx, &[words], ElemType::U32)
}

/// A prefix-sum tensor for `groups` groups of `bins` bins (`bins + 1` entries each).
pub fn prefix_tensor(ctx: &Context, groups: u64, bins: u32) -> Result<GpuTensor> {
    let words = groups as usize * (bins as usize + 1) * PREFIX_WORDS;
    GpuTensor::zeros(ctx, &[words], ElemType::U32)
}

/// Records the histograms of groups `batch` (of `group_len` consecutive elements of `input`,
/// spans from `ranges`, one `GroupRange` per group of the whole tensor) into `hist` (cleared
/// first; batch group 0 at its start) and their prefix sums into `prefix`.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    ranges: &GpuTensor,
    batch: Range<u64>,
    bins: u32,
    hist: &GpuTensor,
    prefix: &GpuTensor,
) -> Result<()> {
    input.expect_dtype("weq_histogram", ElemType::F32)?;
    let n = input.numel() as u64;
    let gl = group_len as u64;
    let groups = batch.end - batch.start;
    if gl == 0
        || !n.is_multiple_of(gl)
        || batch.end * gl > n
        || groups == 0
        || !bins.is_power_of_two()
    {
        return Err(Error::param(
            "weq_histogram",
            format!("groups {batch:?} of {group_len} in {n} elements with {bins} bins"),
        ));
    }
    if ranges.byte_len() != n / gl * 16
        || hist.byte_len() < groups * u64::from(bins) * BIN_WORDS as u64 * 4
        || prefix.byte_len() < groups * (u64::from(bins) + 1) * PREFIX_WORDS as u64 * 4
    {
        return Err(Error::shape(
            "weq_histogram",
            "ranges need one GroupRange per group; histogram and prefix one batch each",
        ));
    }
    let hist_bytes = groups * u64::from(bins) * BIN_WORDS as u64 * 4;
    encoder.clear_buffer(hist.buffer(), hist.offset(), Some(hist_bytes));
    let hist_w = window_for(ctx, hist.offset(), &(0..hist_bytes / 4), 4)?;
    let prefix_w = window_for(
        ctx,
        prefix.offset(),
        &(0..groups * (u64::from(bins) + 1)),
        8,
    )?;
    let base = WeqHistogramParams {
        group_len: group_len as u32,
        bins,
        log2_bins: bins.trailing_zeros(),
        group_first: batch.start as u32,
        hist_base: hist_w.base,
        prefix_base: prefix_w.base,
        ..Default::default()
    };
    // Elements per dispatch: one window of values and at most the grid's workgroups.
    let budget = ctx.work_limits().max_binding_bytes / 4 - 256;
    let max_wg = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
    let per_chunk = budget
        .min(max_wg * u64::from(WORKGROUP_SIZE * ELEMS_PER_THREAD))
        .max(1);
    let pipeline = ctx.pipeline(&SHADER, "histogram")?;
    for elems in spans(batch.start * gl..batch.end * gl, per_chunk) {
        let grp = elems.start / gl..(elems.end - 1) / gl + 1;
        let values_w = window_for(ctx, input.offset(), &elems, 4)?;
        let ranges_w = window_for(ctx, ranges.offset(), &grp, 16)?;
        let len = (elems.end - elems.start) as u32;
        let params = WeqHistogramParams {
            len,
            elem_first: elems.start as u32,
            elem_base: values_w.base,
            range_first: grp.start as u32,
            group_base: ranges_w.base,
            num_workgroups: len.div_ceil(WORKGROUP_SIZE * ELEMS_PER_THREAD),
            ..base
        };
        let uniform = ctx.uniform("weq_histogram params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, values_w.bind(input.buffer())),
            (2, ranges_w.bind(ranges.buffer())),
            (3, hist_w.bind(hist.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
    }
    let params = WeqHistogramParams {
        len: groups as u32,
        ..base
    };
    let uniform = ctx.uniform("weq_histogram scan params", &params);
    let bindings = [
        (0, uniform.as_entire_binding()),
        (4, hist_w.bind(hist.buffer())),
        (5, prefix_w.bind(prefix.buffer())),
    ];
    let scan = ctx.pipeline(&SHADER, "scan")?;
    ctx.dispatch(encoder, &scan, &bindings, groups as u32)
}

/// [`encode`] for every group at once, submitted and waited for: the histogram words
/// (`BIN_WORDS` per bin) and the prefix words (`PREFIX_WORDS` per entry) on the host.
pub fn weq_histogram(
    ctx: &Context,
    input: &GpuTensor,
    group_len: usize,
    ranges: &GpuTensor,
    bins: u32,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let groups = (input.numel() / group_len.max(1)) as u64;
    let hist = hist_tensor(ctx, groups, bins)?;
    let prefix = prefix_tensor(ctx, groups, bins)?;
    ctx.run("weq_histogram", |enc| {
        encode(
            ctx,
            enc,
            input,
            group_len,
            ranges,
            0..groups,
            bins,
            &hist,
            &prefix,
        )
    })?;
    Ok((hist.download(ctx)?, prefix.download(ctx)?))
}
