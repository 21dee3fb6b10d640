//! Launcher for `shaders/prune.wgsl`: the keep-mask of magnitude pruning, `|x| > threshold`
//! per group, packed one bit per element. CPU twin: `src/cpu/prune.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::{
    self, AFFINE_WGSL, Layout, PACK_WGSL, ParamBinding, SEGMENTS_WGSL, SegmentBuffers,
    SegmentKernel,
};
use super::tensor::{ElemType, GpuTensor};
use crate::affine::AffineSegment;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "prune",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        PACK_WGSL,
        include_str!("../../shaders/prune.wgsl"),
    ],
};

/// Records the keep-mask of every segment of `input` into `mask` (segments of 1-bit codes,
/// see `AffineSegment::codebook`); `thresholds` holds one f32 per group.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    mask: &GpuTensor,
    thresholds: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    if segments.iter().any(|s| s.bits != 1) {
        return Err(Error::param("prune", "keep-masks are 1-bit codes"));
    }
    let kernel = SegmentKernel {
        shader: SHADER,
        entry: "prune_mask",
        src: Layout::Elements,
        dst: Layout::Packed,
        workgroups: |seg| (seg.packed_words() as u32).div_ceil(WORKGROUP_SIZE),
    };
    let bufs = SegmentBuffers {
        params: vec![ParamBinding {
            binding: 3,
            tensor: thresholds,
            dtype: ElemType::F32,
            per_group: 1,
        }],
        src: Some(input),
        dst: mask,
    };
    segments::encode(ctx, encoder, &kernel, &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn prune_mask(
    ctx: &Context,
    input: &GpuTensor,
    mask: &GpuTensor,
    thresholds: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("prune", |enc| {
        encode(ctx, enc, input, mask, thresholds, segments)
    })
}
