//! Launcher for `shaders/copy.wgsl`: a plain word copy with fake_quant's access pattern, the
//! device's roofline in benches. CPU twin: `src/cpu/copy.rs`.

use super::context::Context;
use super::dispatch::{self, COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::tensor::GpuTensor;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "copy",
    parts: &[COMMON_WGSL, include_str!("../../shaders/copy.wgsl")],
};

/// Words each thread copies (`ELEMS_PER_THREAD` in the WGSL).
const ELEMS_PER_THREAD: u32 = 4;

/// Uniform parameters; mirrors `CopyParams` in copy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CopyParams {
    /// Words in this dispatch.
    pub len: u32,
    /// Index of the dispatch's first word in the bound source window.
    pub src_base: u32,
    /// Index of the dispatch's first word in the bound destination window.
    pub dst_base: u32,
    /// Workgroups the dispatch covers.
    pub num_workgroups: u32,
}
const _: () = assert!(std::mem::size_of::<CopyParams>() == 16);

/// Records `dst = src` (same element type and count, no overlap), one dispatch per chunk
/// that fits a binding.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    src: &GpuTensor,
    dst: &GpuTensor,
) -> Result<()> {
    dst.expect_dtype("copy", src.dtype())?;
    if src.numel() != dst.numel() {
        return Err(Error::shape(
            "copy",
            format!("{} elements into {}", src.numel(), dst.numel()),
        ));
    }
    if src.overlaps(dst) {
        return Err(Error::param("copy", "source and destination overlap"));
    }
    let pipeline = ctx.pipeline(&SHADER, "copy_words")?;
    for chunk in dispatch::chunks(ctx, src.numel() as u64, 1) {
        let len = chunk.end - chunk.start;
        let src_w = dispatch::window(ctx, src.offset(), chunk.start, len)?;
        let dst_w = dispatch::window(ctx, dst.offset(), chunk.start, len)?;
        let params = CopyParams {
            len: len as u32,
            src_base: src_w.base,
            dst_base: dst_w.base,
            num_workgroups: (len as u32).div_ceil(WORKGROUP_SIZE * ELEMS_PER_THREAD),
        };
        let uniform = ctx.uniform("copy params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, src_w.bind(src.buffer())),
            (2, dst_w.bind(dst.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for.
pub fn copy(ctx: &Context, src: &GpuTensor, dst: &GpuTensor) -> Result<()> {
    ctx.run("copy", |enc| encode(ctx, enc, src, dst))
}
