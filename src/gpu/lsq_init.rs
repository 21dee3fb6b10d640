//! Launcher for `shaders/lsq_init.wgsl`: LSQ and LSQ+ step initialisation on the device, and
//! the conversion of an MSE-searched affine quantizer into LSQ+'s (s, β).
//! CPU twin: `src/cpu/lsq_init.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, window};
use super::lsq::LsqConfig;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::{TILES_WGSL, TileParams, TilePlan, shared_windows};
use crate::error::{Error, Result};
pub use crate::kernel::lsq::StepInit;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "lsq_init",
    parts: &[
        COMMON_WGSL,
        TILES_WGSL,
        include_str!("../../shaders/lsq_init.wgsl"),
    ],
};

/// Uniform parameters; mirrors `LsqInitParams` in lsq_init.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LsqInitParams {
    /// Tiling of the pass.
    pub tiles: TileParams,
    /// 0: LSQ, 1: LSQ+ weights.
    pub mode: u32,
    /// QP.
    pub qp: f32,
    /// 2^(b−1).
    pub half_levels: f32,
    /// Per-group entries: groups in the dispatch.
    pub num_groups: u32,
}
const _: () = assert!(std::mem::size_of::<LsqInitParams>() == 64);

/// Records the initial (s, β = 0) of every group of `group_len` elements of `v`.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &LsqConfig,
    init: StepInit,
    v: &GpuTensor,
    group_len: usize,
    step: &GpuTensor,
    beta: &GpuTensor,
) -> Result<()> {
    let op = "lsq_init";
    v.expect_dtype(op, ElemType::F32)?;
    let plan = TilePlan::on(ctx, v.numel(), group_len)?;
    for t in [step, beta] {
        t.expect_dtype(op, ElemType::F32)?;
        if t.numel() as u64 != plan.num_groups() {
            return Err(Error::shape(op, "one step and one offset per group"));
        }
    }
    let partials = GpuTensor::zeros(ctx, &[plan.num_tiles() as usize, 4], ElemType::F32)?;
    let partials_w = window(ctx, 0, 0, partials.numel() as u64)?;
    let base = LsqInitParams {
        mode: match init {
            StepInit::Lsq => 0,
            StepInit::LsqPlusWeights => 1,
        },
        qp: cfg.qp(),
        half_levels: (1u32 << (cfg.bits - 1)) as f32,
        ..Default::default()
    };
    let moments = ctx.pipeline(&SHADER, "moments")?;
    for chunk in plan.chunks(ctx, 1, 0) {
        let vw = window(
            ctx,
            v.offset(),
            chunk.elems.start,
            chunk.elems.end - chunk.elems.start,
        )?;
        let mut tiles = plan.params(&chunk, &vw, &vw, 0);
        tiles.out_base = tiles.first_tile; // partials are bound whole
        let params = LsqInitParams { tiles, ..base };
        let uniform = ctx.uniform("lsq_init params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, vw.bind(v.buffer())),
            (2, partials_w.bind(partials.buffer())),
        ];
        ctx.dispatch(encoder, &moments, &bindings, plan.workgroups(&chunk))?;
    }
    let init_step = ctx.pipeline(&SHADER, "init_step")?;
    for chunk in plan.group_chunks(ctx) {
        let gw = shared_windows(ctx, op, &[step, beta], &chunk.groups, 4)?;
        let n = (chunk.groups.end - chunk.groups.start) as u32;
        let params = LsqInitParams {
            tiles: plan.group_params(&chunk, &gw[0]),
            num_groups: n,
            ..base
        };
        let uniform = ctx.uniform("lsq_init params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (3, partials_w.bind(partials.buffer())),
            (4, gw[0].bind(step.buffer())),
            (5, gw[1].bind(beta.buffer())),
        ];
        ctx.dispatch(encoder, &init_step, &bindings, n.div_ceil(WORKGROUP_SIZE))?;
    }
    Ok(())
}

/// Records `(step, beta) = (scale, −zero·scale)` per group (all four tensors bound whole).
pub fn encode_from_affine(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scale: &GpuTensor,
    zero: &GpuTensor,
    step: &GpuTensor,
    beta: &GpuTensor,
) -> Result<()> {
    let op = "lsq_init::from_affine";
    let n = step.numel();
    if [scale.numel(), zero.numel(), beta.numel()]
        .iter()
        .any(|&m| m != n)
    {
        return Err(Error::shape(
            op,
            "scale, zero, step and offset differ in length",
        ));
    }
    zero.expect_dtype(op, ElemType::I32)?;
    let whole = |t: &GpuTensor| -> Result<super::dispatch::Window> {
        let w = window(ctx, t.offset(), 0, n as u64)?;
        if w.base != 0 {
            return Err(Error::param(op, "tensors must start on a binding boundary"));
        }
        Ok(w)
    };
    let params = LsqInitParams {
        num_groups: n as u32,
        ..Default::default()
    };
    let uniform = ctx.uniform("lsq_init params", &params);
    let bindings = [
        (0, uniform.as_entire_binding()),
        (4, whole(step)?.bind(step.buffer())),
        (5, whole(beta)?.bind(beta.buffer())),
        (6, whole(scale)?.bind(scale.buffer())),
        (7, whole(zero)?.bind(zero.buffer())),
    ];
    let pipeline = ctx.pipeline(&SHADER, "from_affine")?;
    ctx.dispatch(
        encoder,
        &pipeline,
        &bindings,
        (n as u32).div_ceil(WORKGROUP_SIZE),
    )
}
