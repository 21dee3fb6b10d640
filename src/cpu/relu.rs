//! CPU twin of `shaders/relu.wgsl`.

use crate::error::{Error, Result};

/// `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::shape("relu_forward", "lengths differ"));
    }
    y.iter_mut().zip(x).for_each(|(o, &v)| *o = v.max(0.0));
    Ok(())
}

/// `dx = dy · [x > 0]`.
pub fn relu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    if x.len() != dy.len() || x.len() != dx.len() {
        return Err(Error::shape("relu_backward", "lengths differ"));
    }
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        *o = if v > 0.0 { g } else { 0.0 };
    }
    Ok(())
}
