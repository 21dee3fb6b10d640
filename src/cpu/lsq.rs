//! CPU twin of `shaders/lsq.wgsl`: the LSQ/LSQ+ quantizer forward and fused backward,
//! step and offset gradients summed per group in f64.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::lsq::LsqConfig;

fn check(op: &str, n: usize, group_len: usize, step: &[f32], beta: &[f32]) -> Result<usize> {
    if group_len == 0 || !n.is_multiple_of(group_len) {
        return Err(Error::param(
            op,
            format!("group length {group_len} does not divide {n}"),
        ));
    }
    let groups = n / group_len;
    if step.len() != groups || beta.len() != groups {
        return Err(Error::shape(
            op,
            format!(
                "{} steps, {} offsets for {groups} groups",
                step.len(),
                beta.len()
            ),
        ));
    }
    Ok(groups)
}

/// `round(clamp((x − β)/s, −QN, QP))`, the integer level; mirrors `lsq_level`.
#[inline]
pub fn lsq_level(cfg: &LsqConfig, x: f32, s: f32, b: f32) -> f32 {
    ((x - b) / s).clamp(-cfg.qn(), cfg.qp()).round_ties_even()
}

/// `vhat = level·s + β` for every element.
pub fn lsq_forward(
    cfg: &LsqConfig,
    v: &[f32],
    group_len: usize,
    step: &[f32],
    beta: &[f32],
    vhat: &mut [f32],
) -> Result<()> {
    check("lsq_forward", v.len(), group_len, step, beta)?;
    if vhat.len() != v.len() {
        return Err(Error::shape("lsq_forward", "output length differs"));
    }
    vhat.par_chunks_mut(group_len)
        .zip(v.par_chunks(group_len))
        .enumerate()
        .for_each(|(g, (out, x))| {
            let (s, b) = (step[g], beta[g]);
            for (y, &xv) in out.iter_mut().zip(x) {
                *y = lsq_level(cfg, xv, s, b) * s + b;
            }
        });
    Ok(())
}

/// Per-group gradients of a backward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LsqStepGrads {
    /// g·Σ ∂L/∂v̂·∂v̂/∂s per group.
    pub step: Vec<f32>,
    /// Σ ∂L/∂v̂·∂v̂/∂β per group.
    pub beta: Vec<f32>,
}

/// The fused backward: writes `grad_v` and `vhat`, returns the per-group step and offset
/// gradients (LSQ eq. 3, LSQ+ eq. 5).
pub fn lsq_backward(
    cfg: &LsqConfig,
    v: &[f32],
    grad_vhat: &[f32],
    group_len: usize,
    step: &[f32],
    beta: &[f32],
    grad_v: &mut [f32],
    vhat: &mut [f32],
) -> Result<LsqStepGrads> {
    check("lsq_backward", v.len(), group_len, step, beta)?;
    if grad_vhat.len() != v.len() || grad_v.len() != v.len() || vhat.len() != v.len() {
        return Err(Error::shape(
            "lsq_backward",
            "element tensors differ in length",
        ));
    }
    let (qn, qp) = (cfg.qn(), cfg.qp());
    let scale = f64::from(cfg.grad_scale_for(group_len));
    let sums: Vec<(f64, f64)> = grad_v
        .par_chunks_mut(group_len)
        .zip(vhat.par_chunks_mut(group_len))
        .enumerate()
        .map(|(g, (dx_out, y_out))| {
            let (s, b) = (step[g], beta[g]);
            let first = g * group_len;
            let mut sum = (0f64, 0f64);
            for k in 0..group_len {
                let u = (v[first + k] - b) / s;
                let dy = grad_vhat[first + k];
                let (ds, db, dx) = if u <= -qn {
                    (-qn, 1.0, 0.0)
                } else if u >= qp {
                    (qp, 1.0, 0.0)
                } else {
                    (u.round_ties_even() - u, 0.0, dy)
                };
                dx_out[k] = dx;
                y_out[k] = u.clamp(-qn, qp).round_ties_even() * s + b;
                sum.0 += f64::from(dy) * f64::from(ds);
                sum.1 += f64::from(dy) * db;
            }
            sum
        })
        .collect();
    Ok(LsqStepGrads {
        step: sums.iter().map(|s| (scale * s.0) as f32).collect(),
        beta: sums.iter().map(|s| s.1 as f32).collect(),
    })
}
