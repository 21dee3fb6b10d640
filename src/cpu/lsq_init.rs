//! CPU twin of `shaders/lsq_init.wgsl`: LSQ and LSQ+ step initialisation, moments in f64.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::lsq::{LsqConfig, StepInit};

/// The initial step of every group of `group_len` elements (β starts at 0).
pub fn init_steps(
    cfg: &LsqConfig,
    init: StepInit,
    v: &[f32],
    group_len: usize,
) -> Result<Vec<f32>> {
    if group_len == 0 || !v.len().is_multiple_of(group_len) {
        return Err(Error::param(
            "lsq_init",
            format!("group length {group_len} does not divide {}", v.len()),
        ));
    }
    Ok(v.par_chunks(group_len)
        .map(|g| {
            let n = g.len() as f64;
            let (abs, sum, sq) = g.iter().fold((0f64, 0f64, 0f64), |(a, s, q), &x| {
                let x = f64::from(x);
                (a + x.abs(), s + x, q + x * x)
            });
            let s = match init {
                StepInit::Lsq => 2.0 * (abs / n) / f64::from(cfg.qp()).sqrt(),
                StepInit::LsqPlusWeights => {
                    let mu = sum / n;
                    let sigma = (sq / n - mu * mu).max(0.0).sqrt();
                    (mu - 3.0 * sigma).abs().max((mu + 3.0 * sigma).abs())
                        / f64::from(1u32 << (cfg.bits - 1))
                }
            } as f32;
            if s > 0.0 { s } else { 1.0 }
        })
        .collect())
}

/// `(s, β) = (scale, −zero·scale)`.
pub fn from_affine(scale: &[f32], zero: &[i32]) -> (Vec<f32>, Vec<f32>) {
    scale
        .iter()
        .zip(zero)
        .map(|(&s, &z)| (s, -(z as f32) * s))
        .unzip()
}
