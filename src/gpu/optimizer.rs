//! Launcher for `shaders/optimizer.wgsl`: SGD with momentum and Adam updates of device
//! parameters. CPU twin: `src/cpu/optimizer.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::elementwise::for_each_chunk;
use super::tensor::GpuTensor;
use crate::error::Result;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "optimizer",
    parts: &[COMMON_WGSL, include_str!("../../shaders/optimizer.wgsl")],
};

/// Uniform parameters; mirrors `OptimizerParams` in optimizer.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptimizerParams {
    /// Elements in the dispatch.
    pub n: u32,
    /// First element in the bound windows.
    pub base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    /// 1: clamp the result below at `floor`.
    pub use_floor: u32,
    /// Learning rate.
    pub lr: f32,
    /// SGD momentum μ.
    pub momentum: f32,
    /// Adam β1.
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// L2 weight decay λ.
    pub weight_decay: f32,
    /// Adam 1 − β1^t.
    pub bias_corr1: f32,
    /// Adam 1 − β2^t.
    pub bias_corr2: f32,
    /// Lower bound of the result when `use_floor`.
    pub floor: f32,
    pub _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<OptimizerParams>() == 64);

/// An update rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// SGD with momentum μ.
    Sgd {
        /// μ.
        momentum: f32,
    },
    /// Adam.
    Adam {
        /// β1.
        beta1: f32,
        /// β2.
        beta2: f32,
        /// ε.
        eps: f32,
    },
}

/// One update: rule, step number t (from 1), learning rate, weight decay, optional floor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    /// The rule.
    pub rule: Rule,
    /// Step number, from 1 (Adam's bias correction).
    pub t: u32,
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Keep the result at or above this (LSQ steps stay positive).
    pub floor: Option<f32>,
}

impl Update {
    /// The uniform parameters of this update (chunk fields left 0).
    pub fn params(&self) -> OptimizerParams {
        let mut p = OptimizerParams {
            lr: self.lr,
            weight_decay: self.weight_decay,
            use_floor: u32::from(self.floor.is_some()),
            floor: self.floor.unwrap_or(0.0),
            bias_corr1: 1.0,
            bias_corr2: 1.0,
            ..Default::default()
        };
        match self.rule {
            Rule::Sgd { momentum } => p.momentum = momentum,
            Rule::Adam { beta1, beta2, eps } => {
                p.beta1 = beta1;
                p.beta2 = beta2;
                p.eps = eps;
                p.bias_corr1 = 1.0 - beta1.powi(self.t as i32);
                p.bias_corr2 = 1.0 - beta2.powi(self.t as i32);
            }
        }
        p
    }
}

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
