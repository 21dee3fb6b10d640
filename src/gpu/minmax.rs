//! Launcher for `shaders/minmax.wgsl`: per-group ranges (min, max, non-finite count) by a
//! tiled tree reduction repeated until one tile is left per group, and the exponential moving
//! average of ranges across batches. CPU twin: `src/cpu/minmax.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::{TILES_WGSL, TileParams, TilePlan, window_for};
use crate::affine::GroupRange;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "minmax",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        TILES_WGSL,
        include_str!("../../shaders/minmax.wgsl"),
    ],
};

/// Uniform parameters; mirrors `MinMaxParams` in minmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MinMaxParams {
    /// Tiling of the pass.
    pub tiles: TileParams,
    /// `ema_update`: groups to update.
    pub num_groups: u32,
    /// `ema_update`: 1 when the state holds no batch yet.
    pub ema_first: u32,
    /// `ema_update`: weight of the new batch.
    pub ema_momentum: f32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<MinMaxParams>() == 64);

/// Words per `GroupRange`.
const RANGE_WORDS: usize = 4;

/// A tensor holding `groups` [`GroupRange`]s.
pub fn ranges_tensor(ctx: &Context, groups: usize) -> Result<GpuTensor> {
    GpuTensor::zeros(ctx, &[groups, RANGE_WORDS], ElemType::U32)
}

/// Records the range of every group of `group_len` consecutive elements of `input` (f32) into
/// `ranges` (one [`GroupRange`] per group, see [`ranges_tensor`]).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    ranges: &GpuTensor,
) -> Result<()> {
    input.expect_dtype("minmax", ElemType::F32)?;
    let mut plan = TilePlan::on(ctx, input.numel(), group_len)?;
    check_ranges(ranges, plan.num_groups())?;
    let mut source = (input.clone(), "reduce_values", 4u64);
    loop {
        let last = plan.tiles_per_group == 1;
        let target = if last {
            ranges.clone()
        } else {
            ranges_tensor(ctx, plan.num_tiles() as usize)?
        };
        reduce_pass(ctx, encoder, &plan, &source, &target)?;
        if last {
            return Ok(());
        }
        plan = TilePlan::on(
            ctx,
            plan.num_tiles() as usize,
            plan.tiles_per_group as usize,
        )?;
        source = (target, "reduce_partials", 16);
    }
}

fn check_ranges(ranges: &GpuTensor, groups: u64) -> Result<()> {
    if ranges.byte_len() != groups * 16 {
        return Err(Error::shape(
            "minmax",
            format!(
                "ranges tensor of {} bytes for {groups} groups",
                ranges.byte_len()
            ),
        ));
    }
    Ok(())
}

/// One reduction pass of `plan` from `source` (tensor, entry point, element size) into
/// `target` (one range per tile).
fn reduce_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    plan: &TilePlan,
    (src, entry, elem_size): &(GpuTensor, &'static str, u64),
    target: &GpuTensor,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, entry)?;
    // A later pass reads 16-byte partial ranges: its windows are sized by that.
    for chunk in plan.chunks_of(ctx, *elem_size / 4, 1, RANGE_WORDS as u64) {
        let input_w = window_for(ctx, src.offset(), &chunk.elems, *elem_size)?;
        let out_w = window_for(ctx, target.offset(), &chunk.tiles, 16)?;
        let params = MinMaxParams {
            tiles: plan.params(&chunk, &input_w, &input_w, out_w.base),
            ..Default::default()
        };
        let uniform = ctx.uniform("minmax params", &params);
        let binding = if *entry == "reduce_values" { 1 } else { 2 };
        let bindings = [
            (0, uniform.as_entire_binding()),
            (binding, input_w.bind(src.buffer())),
            (3, out_w.bind(target.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, plan.workgroups(&chunk))?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for, returning the ranges.
pub fn group_ranges(ctx: &Context, input: &GpuTensor, group_len: usize) -> Result<Vec<GroupRange>> {
    let groups = input.numel() / group_len.max(1);
    let ranges = ranges_tensor(ctx, groups)?;
    ctx.run("minmax", |enc| encode(ctx, enc, input, group_len, &ranges))?;
    ranges.download(ctx)
}

/// Records `state ← batch` (when `first`) or `state ← state + momentum·(batch − state)` for
/// every group; both tensors hold [`GroupRange`]s.
pub fn encode_ema(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    batch: &GpuTensor,
    state: &GpuTensor,
    first: bool,
    momentum: f32,
) -> Result<()> {
    if batch.byte_len() != state.byte_len() || !batch.byte_len().is_multiple_of(16) {
        return Err(Error::shape(
            "minmax::ema",
            "batch and state ranges differ in size",
        ));
    }
    let groups = (batch.byte_len() / 16) as u32;
    let params = MinMaxParams {
        num_groups: groups,
        ema_first: u32::from(first),
        ema_momentum: momentum,
        ..Default::default()
    };
    let pipeline = ctx.pipeline(&SHADER, "ema_update")?;
    let uniform = ctx.uniform("ema params", &params);
    let all = 0..u64::from(groups);
    let batch_w = window_for(ctx, batch.offset(), &all, 16)?;
    let state_w = window_for(ctx, state.offset(), &all, 16)?;
    if batch_w.base != 0 || state_w.base != 0 {
        return Err(Error::param(
            "minmax::ema",
            "range tensors must start on a binding boundary",
        ));
    }
    let bindings = [
        (0, uniform.as_entire_binding()),
        (2, batch_w.bind(batch.buffer())),
        (3, state_w.bind(state.buffer())),
    ];
    ctx.dispatch(
        encoder,
        &pipeline,
        &bindings,
        groups.div_ceil(WORKGROUP_SIZE),
    )
}
