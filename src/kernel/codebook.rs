//! What both twins of the codebook kernels (`shaders/codebook_assign.wgsl`,
//! `shaders/codebook_dequantize.wgsl`) share: the length of a group's table.

use crate::affine::AffineSegment;
use crate::error::{Error, Result};

/// Entries per group of a codebook table: `2^bits`, the same for every segment.
pub fn table_len(op: &str, segments: &[AffineSegment]) -> Result<usize> {
    let Some(first) = segments.first() else {
        return Ok(1);
    };
    if segments.iter().any(|s| s.bits != first.bits) || !(1..=16).contains(&first.bits) {
        return Err(Error::param(
            op,
            "codebook segments must share one bit width in 1..=16",
        ));
    }
    Ok(1 << first.bits)
}
