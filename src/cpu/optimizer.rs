//! CPU twin of `shaders/optimizer.wgsl`.

use crate::error::{Error, Result};
use crate::kernel::optimizer::{Rule, Update};

/// One update of `w` from `grad` with state `m` (and `v` for Adam).
pub fn step(
    update: &Update,
    w: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> Result<()> {
    let n = w.len();
    if grad.len() != n || m.len() != n || v.len() != n {
        return Err(Error::shape(
            "optimizer",
            "parameter, gradient and state lengths differ",
        ));
    }
    let p = update.params();
    let floor = |x: f32| if p.use_floor != 0 { x.max(p.floor) } else { x };
    for k in 0..n {
        let g = grad[k] + p.weight_decay * w[k];
        match update.rule {
            Rule::Sgd { .. } => {
                m[k] = p.momentum * m[k] + g;
                w[k] = floor(w[k] - p.lr * m[k]);
            }
            Rule::Adam { .. } => {
                m[k] = p.beta1 * m[k] + (1.0 - p.beta1) * g;
                v[k] = p.beta2 * v[k] + (1.0 - p.beta2) * g * g;
                let update = (m[k] / p.bias_corr1) / ((v[k] / p.bias_corr2).sqrt() + p.eps);
                w[k] = floor(w[k] - p.lr * update);
            }
        }
    }
    Ok(())
}
