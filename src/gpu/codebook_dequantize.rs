//! Launcher for `shaders/codebook_dequantize.wgsl`: codebook codes to floats through
//! per-group level tables. CPU twin: `src/cpu/codebook_dequantize.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::segments::{
    self, AFFINE_WGSL, Layout, ParamBinding, SEGMENTS_WGSL, SegmentBuffers, SegmentKernel,
    UNPACK_WGSL, elementwise_workgroups,
};
use super::tensor::{ElemType, GpuTensor};
use crate::affine::AffineSegment;
use crate::error::Result;
use crate::kernel::codebook::table_len;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "codebook_dequantize",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        UNPACK_WGSL,
        include_str!("../../shaders/codebook_dequantize.wgsl"),
    ],
};

/// Elements each thread handles (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

/// Records the decoding of every segment of `codes` into `output` with `levels` (`2^bits`
/// f32 per group). All segments share `bits`.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    codes: &GpuTensor,
    output: &GpuTensor,
    levels: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    let per_group = table_len("codebook_dequantize", segments)? as u64;
    let kernel = SegmentKernel {
        shader: SHADER,
        entry: "codebook_dequantize",
        src: Layout::Packed,
        dst: Layout::Elements,
        workgroups: elementwise_workgroups::<ELEMS_PER_THREAD>,
    };
    let bufs = SegmentBuffers {
        params: vec![ParamBinding {
            binding: 3,
            tensor: levels,
            dtype: ElemType::F32,
            per_group,
        }],
        src: Some(codes),
        dst: output,
    };
    segments::encode(ctx, encoder, &kernel, &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn codebook_dequantize(
    ctx: &Context,
    codes: &GpuTensor,
    output: &GpuTensor,
    levels: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("codebook_dequantize", |enc| {
        encode(ctx, enc, codes, output, levels, segments)
    })
}
