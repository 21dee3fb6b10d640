//! Launcher for `shaders/affine_params.wgsl`: per-group (scale, zero point) from calibrated
//! ranges. CPU twin: `src/cpu/affine_params.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use crate::affine::AffineScheme;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "affine_params",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        include_str!("../../shaders/affine_params.wgsl"),
    ],
};

/// Uniform parameters; mirrors `AffineParamsParams` in affine_params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AffineParamsParams {
    /// Groups in this dispatch.
    pub num_groups: u32,
    /// Smallest code.
    pub qmin: i32,
    /// Largest code.
    pub qmax: i32,
    /// 1 for a symmetric scheme.
    pub symmetric: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    /// Index of the dispatch's first group in the bound ranges window.
    pub range_base: u32,
    /// ... in the bound scale window.
    pub scale_base: u32,
    /// ... in the bound zero-point window.
    pub zero_base: u32,
}
const _: () = assert!(std::mem::size_of::<AffineParamsParams>() == 32);

/// Records `scale[g], zero[g] = scheme.params_from_range(ranges[g])` for every group.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scheme: &AffineScheme,
    ranges: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
) -> Result<()> {
    scale.expect_dtype("affine_params", ElemType::F32)?;
    zero.expect_dtype("affine_params", ElemType::I32)?;
    let groups = scale.numel() as u64;
    if ranges.byte_len() != groups * 16 || zero.numel() as u64 != groups {
        return Err(Error::shape(
            "affine_params",
            format!(
                "{groups} scales, {} zero points, {} range bytes",
                zero.numel(),
                ranges.byte_len()
            ),
        ));
    }
    let pipeline = ctx.pipeline(&SHADER, "affine_params")?;
    // Groups per dispatch: bounded by the 16-byte range window.
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(16));
    let grid =
        u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2) * u64::from(WORKGROUP_SIZE);
    let per_chunk =
        ((ctx.work_limits().max_binding_bytes.saturating_sub(align)) / 16).clamp(1, grid);
    let mut first = 0;
    while first < groups {
        let chunk = first..(first + per_chunk).min(groups);
        let n = (chunk.end - chunk.start) as u32;
        let range_w = window_for(ctx, ranges.offset(), &chunk, 16)?;
        let scale_w = window_for(ctx, scale.offset(), &chunk, 4)?;
        let zero_w = window_for(ctx, zero.offset(), &chunk, 4)?;
        let params = AffineParamsParams {
            num_groups: n,
            qmin: scheme.qmin(),
            qmax: scheme.qmax(),
            symmetric: u32::from(scheme.is_symmetric()),
            num_workgroups: n.div_ceil(WORKGROUP_SIZE),
            range_base: range_w.base,
            scale_base: scale_w.base,
            zero_base: zero_w.base,
        };
        let uniform = ctx.uniform("affine_params params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, range_w.bind(ranges.buffer())),
            (2, scale_w.bind(scale.buffer())),
            (3, zero_w.bind(zero.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
        first = chunk.end;
    }
    Ok(())
}
