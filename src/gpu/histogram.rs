//! Launcher for `shaders/histogram.wgsl`: per-group histograms over calibrated ranges and
//! percentile clipping from them. CPU twin: `src/cpu/histogram.rs`.

use crate::gpu::dispatch::spans;
use std::ops::Range;

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, Window};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "histogram",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        include_str!("../../shaders/histogram.wgsl"),
    ],
};

/// Uniform parameters; mirrors `HistogramParams` in histogram.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct HistogramParams {
    /// Elements per group.
    pub group_len: u32,
    /// Bins per group.
    pub bins: u32,
    /// 1: histogram of |x| over `[0, max(|lo|, |hi|)]`.
    pub symmetric: u32,
    /// `histogram`: elements in the dispatch; `percentile_select`: groups.
    pub len: u32,
    /// Global index of the element at `elem_base` of the bound values.
    pub elem_first: u32,
    /// Its index inside the bound values window.
    pub elem_base: u32,
    /// Global index of the group at `group_base` of the bound ranges.
    pub group_first: u32,
    /// Its index inside the bound ranges window.
    pub group_base: u32,
    /// Word of `group_first`'s bin 0 in the bound histogram.
    pub hist_base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    /// Lower clip quantile, 1 − P/100.
    pub p_lo: f32,
    /// Upper clip quantile, P/100.
    pub p_hi: f32,
    /// Index of `group_first` in the bound output ranges.
    pub out_base: u32,
    pub _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<HistogramParams>() == 64);

/// Elements each thread bins (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

/// Bins per group: the largest power of two not above the group length, at most 2048, so the
/// histograms never take more memory than the values.
pub fn bins_for(group_len: usize) -> u32 {
    let below = if group_len <= 1 {
        1
    } else {
        1usize << (usize::BITS - 1 - group_len.leading_zeros())
    };
    below.min(2048) as u32
}

/// Quantiles (lower, upper) of a percentile `p` in (0, 100], as both backends compute them.
pub fn quantiles(p: f32) -> (f32, f32) {
    (1.0 - p / 100.0, p / 100.0)
}

/// Records percentile clipping of every group of `input`: histograms of `bins_for(group_len)`
/// bins over `ranges` (from minmax), then `clipped[g]` = the range cut at the `percentile`-th
/// percentile (and the (100−p)-th below, when not `symmetric`).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    ranges: &GpuTensor,
    percentile: f32,
    symmetric: bool,
    clipped: &GpuTensor,
) -> Result<()> {
    input.expect_dtype("histogram", ElemType::F32)?;
    let n = input.numel() as u64;
    if group_len == 0 || !n.is_multiple_of(group_len as u64) {
        return Err(Error::param(
            "histogram",
            format!("group length {group_len} does not divide {n}"),
        ));
    }
    if !(percentile > 0.0 && percentile <= 100.0) {
        return Err(Error::param(
            "histogram",
            format!("percentile {percentile} outside (0, 100]"),
        ));
    }
    let groups = n / group_len as u64;
    if ranges.byte_len() != groups * 16 || clipped.byte_len() != groups * 16 {
        return Err(Error::shape(
            "histogram",
            "ranges and output need one GroupRange per group",
        ));
    }
    let bins = bins_for(group_len);
    let hist = GpuTensor::zeros(ctx, &[groups as usize * bins as usize], ElemType::U32)?;
    let (p_lo, p_hi) = quantiles(percentile);
    let base = HistogramParams {
        group_len: group_len as u32,
        bins,
        symmetric: u32::from(symmetric),
        p_lo,
        p_hi,
        ..Default::default()
    };
    let budget = ctx.work_limits().max_binding_bytes / 4 - 256;
    // Elements per histogram dispatch: bounded by the values and by the histogram window.
    // Per group: `bins` histogram words, and 4 words of input and of output range.
    let groups_per_chunk = (budget / u64::from(bins).max(4)).saturating_sub(2).max(1);
    let grid =
        u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2) * u64::from(WORKGROUP_SIZE);
    let elems_per_chunk = budget
        .min(groups_per_chunk * group_len as u64)
        .min(grid * u64::from(ELEMS_PER_THREAD))
        .max(1);
    let groups_per_chunk = groups_per_chunk.min(grid);
    let hist_pipeline = ctx.pipeline(&SHADER, "histogram")?;
    for elems in spans(0..n, elems_per_chunk) {
        let grp = elems.start / group_len as u64..(elems.end - 1) / group_len as u64 + 1;
        let values_w = window_for(ctx, input.offset(), &elems, 4)?;
        let (ranges_w, hist_w) = group_windows(ctx, ranges, &hist, &grp, bins)?;
        let len = (elems.end - elems.start) as u32;
        let params = HistogramParams {
            len,
            elem_first: elems.start as u32,
            elem_base: values_w.base,
            group_first: grp.start as u32,
            group_base: ranges_w.base,
            hist_base: hist_w.base,
            num_workgroups: len.div_ceil(WORKGROUP_SIZE * ELEMS_PER_THREAD),
            ..base
        };
        let uniform = ctx.uniform("histogram params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, values_w.bind(input.buffer())),
            (2, ranges_w.bind(ranges.buffer())),
            (3, hist_w.bind(hist.buffer())),
        ];
        ctx.dispatch(encoder, &hist_pipeline, &bindings, params.num_workgroups)?;
    }
    let select = ctx.pipeline(&SHADER, "percentile_select")?;
    for grp in spans(0..groups, groups_per_chunk) {
        let (ranges_w, hist_w) = group_windows(ctx, ranges, &hist, &grp, bins)?;
        let out_w = window_for(ctx, clipped.offset(), &grp, 16)?;
        let len = (grp.end - grp.start) as u32;
        let params = HistogramParams {
            len,
            group_first: grp.start as u32,
            group_base: ranges_w.base,
            hist_base: hist_w.base,
            out_base: out_w.base,
            num_workgroups: len.div_ceil(WORKGROUP_SIZE),
            ..base
        };
        let uniform = ctx.uniform("percentile params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (2, ranges_w.bind(ranges.buffer())),
            (4, hist_w.bind(hist.buffer())),
            (5, out_w.bind(clipped.buffer())),
        ];
        ctx.dispatch(encoder, &select, &bindings, params.num_workgroups)?;
    }
    Ok(())
}

/// Windows of the ranges (16-byte) and histogram (`bins` words per group) of groups `grp`.
fn group_windows(
    ctx: &Context,
    ranges: &GpuTensor,
    hist: &GpuTensor,
    grp: &Range<u64>,
    bins: u32,
) -> Result<(Window, Window)> {
    let ranges_w = window_for(ctx, ranges.offset(), grp, 16)?;
    let bins = u64::from(bins);
    let hist_w = window_for(ctx, hist.offset(), &(grp.start * bins..grp.end * bins), 4)?;
    Ok((ranges_w, hist_w))
}
