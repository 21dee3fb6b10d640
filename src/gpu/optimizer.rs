//! Launcher for `shaders/optimizer.wgsl`: SGD with momentum and Adam updates of device
//! parameters. CPU twin: `src/cpu/optimizer.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::elementwise::for_each_chunk;
use super::tensor::GpuTensor;
use crate::error::Result;
pub use crate::kernel::optimizer::{OptimizerParams, Rule, Update};

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "optimizer",
    parts: &[COMMON_WGSL, include_str!("../../shaders/optimizer.wgsl")],
};

/// Records one update of `w` from `grad`, with optimizer state `m` (and `v` for Adam; for
/// SGD `v` is bound but untouched).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    update: &Update,
    w: &GpuTensor,
    grad: &GpuTensor,
    m: &GpuTensor,
    v: &GpuTensor,
) -> Result<()> {
    let entry = match update.rule {
        Rule::Sgd { .. } => "sgd",
        Rule::Adam { .. } => "adam",
    };
    let pipeline = ctx.pipeline(&SHADER, entry)?;
    let base = update.params();
    for_each_chunk(ctx, "optimizer", &[w, grad, m, v], |c| {
        let params = OptimizerParams {
            n: c.n,
            base: c.base,
            num_workgroups: c.workgroups,
            ..base
        };
        let uniform = ctx.uniform("optimizer params", &params);
        let mut bindings = vec![
            (0, uniform.as_entire_binding()),
            (1, c.windows[0].bind(w.buffer())),
            (2, c.windows[1].bind(grad.buffer())),
            (3, c.windows[2].bind(m.buffer())),
        ];
        if entry == "adam" {
            bindings.push((4, c.windows[3].bind(v.buffer())));
        }
        ctx.dispatch(encoder, &pipeline, &bindings, c.workgroups)
    })
}
