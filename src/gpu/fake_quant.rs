//! Launcher for `shaders/fake_quant.wgsl`: batched affine fake quantization, out of place or
//! in place. CPU twin: `src/cpu/fake_quant.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::segments::{
    self, AFFINE_WGSL, Layout, SEGMENTS_WGSL, SegmentBuffers, SegmentKernel, elementwise_workgroups,
};
use super::tensor::GpuTensor;
use crate::affine::AffineSegment;
use crate::error::Result;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "fake_quant",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        SEGMENTS_WGSL,
        include_str!("../../shaders/fake_quant.wgsl"),
    ],
};

/// Elements each thread handles (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

fn kernel(entry: &'static str) -> SegmentKernel {
    SegmentKernel {
        shader: SHADER,
        entry,
        src: Layout::Elements,
        dst: Layout::Elements,
        workgroups: elementwise_workgroups::<ELEMS_PER_THREAD>,
    }
}

/// Records the fake quantization of every segment of `input` into `output` (element
/// offsets from `segments`), with per-group `scale` (f32) and `zero` (i32). When `input` and
/// `output` are the same memory it runs in place.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    output: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    let in_place = input.same_memory(output);
    let bufs = SegmentBuffers {
        params: segments::affine_params(scale, zero),
        src: (!in_place).then_some(input),
        dst: output,
    };
    let entry = if in_place {
        "fake_quant_inplace"
    } else {
        "fake_quant"
    };
    segments::encode(ctx, encoder, &kernel(entry), &bufs, segments)
}

/// [`encode`], submitted and waited for.
pub fn fake_quant(
    ctx: &Context,
    input: &GpuTensor,
    output: &GpuTensor,
    scale: &GpuTensor,
    zero: &GpuTensor,
    segments: &[AffineSegment],
) -> Result<()> {
    ctx.run("fake_quant", |enc| {
        encode(ctx, enc, input, output, scale, zero, segments)
    })
}
