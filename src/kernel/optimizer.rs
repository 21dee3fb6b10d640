//! What both twins of `shaders/optimizer.wgsl` read: the update rule, one update's settings
//! and the kernel's parameter struct.

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
