//! Launcher for `shaders/dequantize.wgsl`: batched unpacking of affine codes to floats.
//! CPU twin: `src/cpu/dequantize.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::segments::{
    self, AFFINE_WGSL, Layout, SEGMENTS_WGSL, SegmentBuffers, SegmentKernel, UNPACK_WGSL,
    elementwise_workgroups,
};
use super::tensor::GpuTensor;
use crate::affine::AffineSegment;
use crate::error::Result;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "dequantize",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        UNPACK_WGSL,
        include_str!("../../shaders/dequantize.wgsl"),
    ],
};

/// Elements each thread handles (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

fn kernel() -> SegmentKernel {
    SegmentKernel {
        shader: SHADER,
        entry: "dequantize",
        src: Layout::Packed,
        dst: Layout::Elements,
        workgroups: elementwise_workgroups::<ELEMS_PER_THREAD>,
    }
}

/// Records the unpacking of every segment of `codes` (a segment's `src` is its first word)
/// into floats in `output`.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    codes: &GpuTensor,
    output: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    let bufs = SegmentBuffers {
        params: segments::affine_params(scale, zero),
        src: Some(codes),
        dst: output,
    };
    segments::encode(ctx, encoder, &kernel(), &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn dequantize(
    ctx: &Context,
    codes: &GpuTensor,
    output: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("dequantize", |enc| {
        encode(ctx, enc, codes, output, scale, zero, segments)
    })
}
