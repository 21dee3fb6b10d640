//! What both twins of the LSQ kernels (`shaders/lsq.wgsl`, `shaders/lsq_init.wgsl`) read:
//! the quantizer's integer range and gradient scale, and the step initialisation rule.

use crate::error::{Error, Result};

/// The quantizer's integer range and gradient scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LsqConfig {
    /// Bits, 2 to 8.
    pub bits: u32,
    /// Signed weights (QN = 2^(b−1), QP = 2^(b−1)−1) or unsigned activations (0, 2^b−1).
    pub signed: bool,
    /// The caller's gradient scale; `None` for LSQ's 1/√(N·QP) with N the group's elements.
    pub grad_scale: Option<f32>,
}

impl LsqConfig {
    /// A checked configuration.
    pub fn new(bits: u32, signed: bool) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::param("lsq", format!("bits {bits} outside 2..=8")));
        }
        Ok(Self {
            bits,
            signed,
            grad_scale: None,
        })
    }

    /// QN, the magnitude of the lowest level.
    pub fn qn(&self) -> f32 {
        if self.signed {
            (1u32 << (self.bits - 1)) as f32
        } else {
            0.0
        }
    }

    /// QP, the highest level.
    pub fn qp(&self) -> f32 {
        if self.signed {
            ((1u32 << (self.bits - 1)) - 1) as f32
        } else {
            ((1u32 << self.bits) - 1) as f32
        }
    }

    /// g for groups of `n` elements: the caller's, or 1/√(n·QP) (LSQ §2.2).
    pub fn grad_scale_for(&self, n: usize) -> f32 {
        self.grad_scale
            .unwrap_or_else(|| 1.0 / ((n as f32) * self.qp()).sqrt())
    }
}

/// How a step is initialised from the values it will quantize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepInit {
    /// LSQ: s = 2·mean|v|/√QP.
    Lsq,
    /// LSQ+ for weights: s = max(|μ − 3σ|, |μ + 3σ|)/2^(b−1).
    LsqPlusWeights,
}
