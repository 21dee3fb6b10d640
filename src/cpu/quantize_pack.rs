//! CPU twin of `shaders/quantize_pack.wgsl`: batched affine quantization to packed codes in
//! the layout of `src/format/pack.rs`.

use super::segments::pack_segment;
use crate::affine::{AffineSegment, Layout, check_segments, quantize_code_fast};
use crate::error::Result;

/// Quantizes each segment of `src` into packed words of `codes` (a segment's `dst` is its
/// first word). The words a segment covers are overwritten.
pub fn quantize_pack(
    src: &[f32],
    codes: &mut [u32],
    scale: &[f32],
    zero: &[i32],
    segments: &[AffineSegment],
) -> Result<()> {
    check_segments(
        "quantize_pack",
        segments,
        (Layout::Elements, src.len()),
        (Layout::Packed, codes.len()),
        scale.len().min(zero.len()),
    )?;
    for seg in segments {
        let input = &src[seg.src as usize..];
        pack_segment(seg, &mut codes[seg.dst as usize..], |i, g| {
            (quantize_code_fast(input[i], scale[g], zero[g], seg.qmin, seg.qmax) - seg.qmin) as u32
        });
    }
    Ok(())
}
