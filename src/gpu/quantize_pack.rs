//! Launcher for `shaders/quantize_pack.wgsl`: batched affine quantization straight to packed
//! codes, one thread per output word. CPU twin: `src/cpu/quantize_pack.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::{
    self, AFFINE_WGSL, Layout, PACK_WGSL, SEGMENTS_WGSL, SegmentBuffers, SegmentKernel,
};
use super::tensor::GpuTensor;
use crate::affine::AffineSegment;
use crate::error::Result;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "quantize_pack",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        PACK_WGSL,
        include_str!("../../shaders/quantize_pack.wgsl"),
    ],
};

fn kernel() -> SegmentKernel {
    SegmentKernel {
        shader: SHADER,
        entry: "quantize_pack",
        src: Layout::Elements,
        dst: Layout::Packed,
        workgroups: |seg| (seg.packed_words() as u32).div_ceil(WORKGROUP_SIZE),
    }
}

/// Records the quantization of every segment of `input` (f32) into packed codes in `codes`
/// (u32 words; a segment's `dst` is its first word).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    codes: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    let bufs = SegmentBuffers {
        params: segments::affine_params(scale, zero),
        src: Some(input),
        dst: codes,
    };
    segments::encode(ctx, encoder, &kernel(), &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn quantize_pack(
    ctx: &Context,
    input: &GpuTensor,
    codes: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("quantize_pack", |enc| {
        encode(ctx, enc, input, codes, scale, zero, segments)
    })
}
