//! Launcher for `shaders/clip_search.wgsl`: MSE-optimal clip ratio per group by a grid of K
//! candidates, errors reduced per tile and summed per group in fixed order.
//! CPU twin: `src/cpu/clip_search.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::{TILES_WGSL, TileChunk, TileParams, TilePlan, window_for};
use crate::affine::AffineScheme;
use crate::error::{Error, Result};
use crate::gpu::dispatch::spans;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "clip_search",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        TILES_WGSL,
        include_str!("../../shaders/clip_search.wgsl"),
    ],
};

/// Uniform parameters; mirrors `ClipSearchParams` in clip_search.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClipSearchParams {
    /// Tiling of the error pass (select reuses the group fields).
    pub tiles: TileParams,
    /// Smallest code.
    pub qmin: i32,
    /// Largest code.
    pub qmax: i32,
    /// 1 for a symmetric scheme.
    pub symmetric: u32,
    /// Number of candidate ratios K.
    pub candidates: u32,
    /// `clip_select`: groups in the dispatch.
    pub num_groups: u32,
    /// `clip_select`: workgroups in the dispatch.
    pub num_workgroups: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<ClipSearchParams>() == 80);

/// Default number of candidate ratios: 1.00, 0.99, …, 0.01.
pub const DEFAULT_CANDIDATES: u32 = 100;

/// Records, for every group of `input`, the clipped range `(r·lo, r·hi)` of the candidate
/// ratio `r = (K − k)/K` minimising the squared fake-quantization error under `scheme`, into
/// `best` (one `GroupRange` per group, as are `ranges`).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    ranges: &GpuTensor,
    scheme: &AffineScheme,
    candidates: u32,
    best: &GpuTensor,
) -> Result<()> {
    input.expect_dtype("clip_search", ElemType::F32)?;
    if candidates == 0 {
        return Err(Error::param("clip_search", "no candidate ratios"));
    }
    let plan = TilePlan::on(ctx, input.numel(), group_len)?;
    let groups = plan.num_groups();
    if ranges.byte_len() != groups * 16 || best.byte_len() != groups * 16 {
        return Err(Error::shape(
            "clip_search",
            "ranges and output need one GroupRange per group",
        ));
    }
    let k = u64::from(candidates);
    let errors = if plan.tiles_per_group > 1 {
        GpuTensor::zeros(ctx, &[(plan.num_tiles() * k) as usize], ElemType::F32)?
    } else {
        GpuTensor::zeros(ctx, &[1], ElemType::F32)?
    };
    let errors_w = window_for(ctx, 0, &(0..errors.numel() as u64), 4)?;
    let base = ClipSearchParams {
        qmin: scheme.qmin(),
        qmax: scheme.qmax(),
        symmetric: u32::from(scheme.is_symmetric()),
        candidates,
        ..Default::default()
    };
    let pipeline = ctx.pipeline(&SHADER, "clip_errors")?;
    for chunk in plan.chunks(ctx, 4, 0) {
        // (ranges and outputs are 16-byte GroupRanges: 4 words per group)
        let values_w = window_for(ctx, input.offset(), &chunk.elems, 4)?;
        let (ranges_w, best_w) = group_windows(ctx, ranges, best, &chunk)?;
        let mut tiles = plan.params(&chunk, &values_w, &ranges_w, 0);
        tiles.out_base = tiles.first_tile; // errors are bound whole
        let params = ClipSearchParams { tiles, ..base };
        let uniform = ctx.uniform("clip_search params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, values_w.bind(input.buffer())),
            (2, ranges_w.bind(ranges.buffer())),
            (3, errors_w.bind(errors.buffer())),
            (5, best_w.bind(best.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, plan.workgroups(&chunk))?;
    }
    if plan.tiles_per_group == 1 {
        return Ok(());
    }
    let select = ctx.pipeline(&SHADER, "clip_select")?;
    let per_chunk = (ctx.work_limits().max_binding_bytes / 16 - 16).max(1);
    for grp in spans(0..groups, per_chunk) {
        let chunk = TileChunk {
            tiles: grp.start * plan.tiles_per_group..grp.end * plan.tiles_per_group,
            groups: grp.clone(),
            elems: 0..0,
        };
        let (ranges_w, best_w) = group_windows(ctx, ranges, best, &chunk)?;
        let n = (grp.end - grp.start) as u32;
        let mut tiles = plan.params(&chunk, &ranges_w, &ranges_w, 0);
        tiles.first_tile = 0; // tile errors are bound whole
        let params = ClipSearchParams {
            tiles,
            num_groups: n,
            num_workgroups: n.div_ceil(WORKGROUP_SIZE),
            ..base
        };
        let uniform = ctx.uniform("clip_select params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (2, ranges_w.bind(ranges.buffer())),
            (4, errors_w.bind(errors.buffer())),
            (5, best_w.bind(best.buffer())),
        ];
        ctx.dispatch(encoder, &select, &bindings, params.num_workgroups)?;
    }
    Ok(())
}

/// Windows of the input and output ranges of a chunk's groups; they must share a base
/// because the shader indexes both with one group index.
fn group_windows(
    ctx: &Context,
    ranges: &GpuTensor,
    best: &GpuTensor,
    chunk: &TileChunk,
) -> Result<(super::dispatch::Window, super::dispatch::Window)> {
    let ranges_w = window_for(ctx, ranges.offset(), &chunk.groups, 16)?;
    let best_w = window_for(ctx, best.offset(), &chunk.groups, 16)?;
    if ranges_w.base != best_w.base {
        return Err(Error::param(
            "clip_search",
            "input and output range tensors must share their offset alignment",
        ));
    }
    Ok((ranges_w, best_w))
}
