//! CPU twin of `shaders/dequantize.wgsl`: unpacks affine codes (layout of
//! `src/format/pack.rs`) back to floats.

use super::segments::unpack_segment;
use crate::affine::{AffineSegment, Layout, check_segments, dequantize_code};
use crate::error::Result;

/// Unpacks each segment of `codes` (a segment's `src` is its first word) into `dst`.
pub fn dequantize(
    codes: &[u32],
    dst: &mut [f32],
    scale: &[f32],
    zero: &[i32],
    segments: &[AffineSegment],
) -> Result<()> {
    check_segments(
        "dequantize",
        segments,
        (Layout::Packed, codes.len()),
        (Layout::Elements, dst.len()),
        scale.len().min(zero.len()),
    )?;
    for seg in segments {
        let out = &mut dst[seg.dst as usize..];
        unpack_segment(seg, &codes[seg.src as usize..], out, |g, codes, out| {
            let (s, z) = (scale[g], zero[g]);
            for (y, &code) in out.iter_mut().zip(codes) {
                *y = dequantize_code(code as i32 + seg.qmin, s, z);
            }
        });
    }
    Ok(())
}
