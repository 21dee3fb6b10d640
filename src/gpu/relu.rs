//! Launcher for `shaders/relu.wgsl`: ReLU forward and backward. CPU twin: `src/cpu/relu.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::elementwise::for_each_chunk;
use super::tensor::GpuTensor;
use crate::error::Result;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "relu",
    parts: &[COMMON_WGSL, include_str!("../../shaders/relu.wgsl")],
};

/// Uniform parameters; mirrors `ReluParams` in relu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReluParams {
    /// Elements in the dispatch.
    pub n: u32,
    /// First element in the bound windows.
    pub base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<ReluParams>() == 16);

/// Records `y = max(x, 0)`.
pub fn encode_forward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, "relu_forward")?;
    for_each_chunk(ctx, "relu_forward", &[x, y], |c| {
        let params = ReluParams {
            n: c.n,
            base: c.base,
            num_workgroups: c.workgroups,
            _pad: 0,
        };
        let uniform = ctx.uniform("relu params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, c.windows[0].bind(x.buffer())),
            (3, c.windows[1].bind(y.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, c.workgroups)
    })
}

/// Records `dx = dy · [x > 0]`.
pub fn encode_backward(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, "relu_backward")?;
    for_each_chunk(ctx, "relu_backward", &[x, dy, dx], |c| {
        let params = ReluParams {
            n: c.n,
            base: c.base,
            num_workgroups: c.workgroups,
            _pad: 0,
        };
        let uniform = ctx.uniform("relu params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, c.windows[0].bind(x.buffer())),
            (2, c.windows[1].bind(dy.buffer())),
            (3, c.windows[2].bind(dx.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, c.workgroups)
    })
}
