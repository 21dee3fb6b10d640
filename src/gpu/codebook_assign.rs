//! Launcher for `shaders/codebook_assign.wgsl`: codebook codes from sorted per-group
//! thresholds, packed one output word per thread. CPU twin: `src/cpu/codebook_assign.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::{
    self, AFFINE_WGSL, Layout, PACK_WGSL, ParamBinding, SEGMENTS_WGSL, SegmentBuffers,
    SegmentKernel,
};
use super::tensor::{ElemType, GpuTensor};
use crate::affine::AffineSegment;
use crate::error::Result;
use crate::kernel::codebook::table_len;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "codebook_assign",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        PACK_WGSL,
        include_str!("../../shaders/codebook_assign.wgsl"),
    ],
};

/// Records the codes of every segment of `input` into `codes`; `thresholds` holds `2^bits`
/// f32 per group (the first `2^bits − 1` sorted, the last unused). All segments share `bits`.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    codes: &GpuTensor,
    thresholds: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    let per_group = table_len("codebook_assign", segments)? as u64;
    let kernel = SegmentKernel {
        shader: SHADER,
        entry: "codebook_assign",
        src: Layout::Elements,
        dst: Layout::Packed,
        workgroups: |seg| (seg.packed_words() as u32).div_ceil(WORKGROUP_SIZE),
    };
    let bufs = SegmentBuffers {
        params: vec![ParamBinding {
            binding: 3,
            tensor: thresholds,
            dtype: ElemType::F32,
            per_group,
        }],
        src: Some(input),
        dst: codes,
    };
    segments::encode(ctx, encoder, &kernel, &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn codebook_assign(
    ctx: &Context,
    input: &GpuTensor,
    codes: &GpuTensor,
    thresholds: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("codebook_assign", |enc| {
        encode(ctx, enc, input, codes, thresholds, segments)
    })
}
