//! CPU twin of `shaders/softmax_xent.wgsl`.

use crate::error::{Error, Result};

/// Per-row loss and correctness, and the gradient of the mean loss, for `logits`
/// (rows × classes) and `labels`.
pub fn softmax_xent(
    logits: &[f32],
    classes: usize,
    labels: &[u32],
    grad: &mut [f32],
    loss: &mut [f32],
    correct: &mut [u32],
) -> Result<()> {
    let rows = labels.len();
    if classes == 0
        || logits.len() != rows * classes
        || grad.len() != logits.len()
        || loss.len() != rows
        || correct.len() != rows
    {
        return Err(Error::shape(
            "softmax_xent",
            "logits, labels and outputs disagree",
        ));
    }
    if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::param(
            "softmax_xent",
            format!("label {l} ≥ {classes} classes"),
        ));
    }
    let scale = 1.0 / rows.max(1) as f32;
    for r in 0..rows {
        let z = &logits[r * classes..][..classes];
        let label = labels[r] as usize;
        let (mut best, mut zmax) = (0, z[0]);
        for (c, &v) in z.iter().enumerate().skip(1) {
            if v > zmax {
                zmax = v;
                best = c;
            }
        }
        let total: f32 = z.iter().map(|&v| (v - zmax).exp()).sum();
        loss[r] = total.ln() + zmax - z[label];
        correct[r] = u32::from(best == label);
        for c in 0..classes {
            let p = (z[c] - zmax).exp() / total;
            grad[r * classes + c] = (p - if c == label { 1.0 } else { 0.0 }) * scale;
        }
    }
    Ok(())
}
