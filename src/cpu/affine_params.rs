//! CPU twin of `shaders/affine_params.wgsl`: per-group (scale, zero point) from ranges.

use crate::affine::{AffineScheme, GroupRange};

/// (scales, zero points) of every group's range under `scheme`.
pub fn affine_params(scheme: &AffineScheme, ranges: &[GroupRange]) -> (Vec<f32>, Vec<i32>) {
    ranges
        .iter()
        .map(|r| scheme.params_from_range(r.lo, r.hi))
        .unzip()
}
