//! Launcher for `shaders/lsq.wgsl`: the LSQ/LSQ+ quantizer forward and its fused backward
//! with a deterministic per-group reduction of ∂L/∂s and ∂L/∂β, all on the device.
//! CPU twin: `src/cpu/lsq.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, Window, window};
use super::tensor::{ElemType, GpuTensor};
use super::tiles::{TILES_WGSL, TileParams, TilePlan, bases4, windows_of};
use crate::error::{Error, Result};
pub use crate::kernel::lsq::LsqConfig;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "lsq",
    parts: &[
        COMMON_WGSL,
        TILES_WGSL,
        include_str!("../../shaders/lsq.wgsl"),
    ],
};

/// Uniform parameters; mirrors `LsqParams` in lsq.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LsqParams {
    /// Tiling of the pass (its own element and group bases left 0).
    pub tiles: TileParams,
    /// QN.
    pub qn: f32,
    /// QP.
    pub qp: f32,
    /// Gradient scale g of ∂L/∂s.
    pub grad_scale: f32,
    /// `lsq_reduce`: groups in the dispatch.
    pub num_groups: u32,
    /// Window bases of v, ∂L/∂v̂, ∂L/∂v, v̂.
    pub elem_bases: [u32; 4],
    /// Window bases of s, β, ∂L/∂s, ∂L/∂β.
    pub group_bases: [u32; 4],
}
const _: () = assert!(std::mem::size_of::<LsqParams>() == 96);

/// A window whose base is 0: the tile parameters' own bases, unused here.
const NO_BASE: Window = Window {
    offset: 0,
    size: 4,
    base: 0,
};

/// The tensors of a backward pass.
pub struct LsqGrads<'a> {
    /// ∂L/∂v̂, as v.
    pub grad_vhat: &'a GpuTensor,
    /// ∂L/∂v out, as v.
    pub grad_v: &'a GpuTensor,
    /// v̂ out, as v.
    pub vhat: &'a GpuTensor,
    /// ∂L/∂s out, one per group.
    pub grad_step: &'a GpuTensor,
    /// ∂L/∂β out, one per group.
    pub grad_beta: &'a GpuTensor,
}

fn plan(
    ctx: &Context,
    op: &str,
    v: &GpuTensor,
    group_len: usize,
    step: &GpuTensor,
    beta: &GpuTensor,
) -> Result<TilePlan> {
    v.expect_dtype(op, ElemType::F32)?;
    let plan = TilePlan::on(ctx, v.numel(), group_len)?;
    for t in [step, beta] {
        t.expect_dtype(op, ElemType::F32)?;
        if t.numel() as u64 != plan.num_groups() {
            return Err(Error::shape(
                op,
                format!(
                    "{} steps or offsets for {} groups",
                    t.numel(),
                    plan.num_groups()
                ),
            ));
        }
    }
    Ok(plan)
}

fn same_len(op: &str, v: &GpuTensor, others: &[&GpuTensor]) -> Result<()> {
    for t in others {
        t.expect_dtype(op, ElemType::F32)?;
        if t.numel() != v.numel() {
            return Err(Error::shape(
                op,
                format!("{} elements beside {}", t.numel(), v.numel()),
            ));
        }
    }
    Ok(())
}

/// Records `vhat = round(clamp((v − β)/s, −QN, QP))·s + β` with one (s, β) per group of
/// `group_len` consecutive elements.
#[allow(clippy::too_many_arguments)]
pub fn encode_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &LsqConfig,
    v: &GpuTensor,
    group_len: usize,
    step: &GpuTensor,
    beta: &GpuTensor,
    vhat: &GpuTensor,
) -> Result<()> {
    let op = "lsq_forward";
    let plan = plan(ctx, op, v, group_len, step, beta)?;
    same_len(op, v, &[vhat])?;
    let pipeline = ctx.pipeline(&SHADER, "lsq_forward")?;
    for chunk in plan.chunks(ctx, 1, 0) {
        let ew = windows_of(ctx, &[v, vhat], &chunk.elems, 4)?;
        let gw = windows_of(ctx, &[step, beta], &chunk.groups, 4)?;
        let params = LsqParams {
            tiles: plan.params(&chunk, &NO_BASE, &NO_BASE, 0),
            qn: cfg.qn(),
            qp: cfg.qp(),
            elem_bases: [ew[0].base, 0, 0, ew[1].base],
            group_bases: bases4(&gw),
            ..Default::default()
        };
        let uniform = ctx.uniform("lsq params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, ew[0].bind(v.buffer())),
            (3, gw[0].bind(step.buffer())),
            (4, gw[1].bind(beta.buffer())),
            (6, ew[1].bind(vhat.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, plan.workgroups(&chunk))?;
    }
    Ok(())
}

/// Records the fused backward pass: v̂, ∂L/∂v, and per group ∂L/∂s (scaled by g) and ∂L/∂β.
#[allow(clippy::too_many_arguments)]
pub fn encode_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    cfg: &LsqConfig,
    v: &GpuTensor,
    group_len: usize,
    step: &GpuTensor,
    beta: &GpuTensor,
    out: &LsqGrads<'_>,
) -> Result<()> {
    let op = "lsq_backward";
    let plan = plan(ctx, op, v, group_len, step, beta)?;
    same_len(op, v, &[out.grad_vhat, out.grad_v, out.vhat])?;
    for t in [out.grad_step, out.grad_beta] {
        t.expect_dtype(op, ElemType::F32)?;
        if t.numel() as u64 != plan.num_groups() {
            return Err(Error::shape(
                op,
                "one step gradient and one offset gradient per group",
            ));
        }
    }
    let partials = GpuTensor::zeros(ctx, &[plan.num_tiles() as usize, 2], ElemType::F32)?;
    let partials_w = window(ctx, 0, 0, partials.numel() as u64)?;
    let base = LsqParams {
        qn: cfg.qn(),
        qp: cfg.qp(),
        grad_scale: cfg.grad_scale_for(group_len),
        ..Default::default()
    };
    let pipeline = ctx.pipeline(&SHADER, "lsq_backward")?;
    for chunk in plan.chunks(ctx, 1, 0) {
        let ew = windows_of(
            ctx,
            &[v, out.grad_vhat, out.grad_v, out.vhat],
            &chunk.elems,
            4,
        )?;
        let gw = windows_of(ctx, &[step, beta], &chunk.groups, 4)?;
        let mut tiles = plan.params(&chunk, &NO_BASE, &NO_BASE, 0);
        tiles.out_base = tiles.first_tile; // partials are bound whole
        let params = LsqParams {
            tiles,
            elem_bases: bases4(&ew),
            group_bases: bases4(&gw),
            ..base
        };
        let uniform = ctx.uniform("lsq params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, ew[0].bind(v.buffer())),
            (2, ew[1].bind(out.grad_vhat.buffer())),
            (3, gw[0].bind(step.buffer())),
            (4, gw[1].bind(beta.buffer())),
            (5, ew[2].bind(out.grad_v.buffer())),
            (6, ew[3].bind(out.vhat.buffer())),
            (7, partials_w.bind(partials.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, plan.workgroups(&chunk))?;
    }
    let reduce = ctx.pipeline(&SHADER, "lsq_reduce")?;
    for chunk in plan.group_chunks(ctx) {
        let gw = windows_of(ctx, &[out.grad_step, out.grad_beta], &chunk.groups, 4)?;
        let n = (chunk.groups.end - chunk.groups.start) as u32;
        let params = LsqParams {
            tiles: plan.group_params(&chunk, &NO_BASE),
            num_groups: n,
            group_bases: [0, 0, gw[0].base, gw[1].base],
            ..base
        };
        let uniform = ctx.uniform("lsq reduce params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (8, partials_w.bind(partials.buffer())),
            (9, gw[0].bind(out.grad_step.buffer())),
            (10, gw[1].bind(out.grad_beta.buffer())),
        ];
        ctx.dispatch(encoder, &reduce, &bindings, n.div_ceil(WORKGROUP_SIZE))?;
    }
    Ok(())
}
