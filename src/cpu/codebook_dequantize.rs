//! CPU twin of `shaders/codebook_dequantize.wgsl`: `x̂ = levels[group·2^bits + code]`.

use super::codebook_assign::table_len;
use super::segments::unpack_segment;
use crate::affine::{AffineSegment, Layout, check_segments};
use crate::error::Result;

/// Decodes each segment of `codes` into `dst` with `2^bits` levels per group.
pub fn codebook_dequantize(
    codes: &[u32],
    dst: &mut [f32],
    levels: &[f32],
    segments: &[AffineSegment],
) -> Result<()> {
    let per_group = table_len("codebook_dequantize", segments)?;
    check_segments(
        "codebook_dequantize",
        segments,
        (Layout::Packed, codes.len()),
        (Layout::Elements, dst.len()),
        levels.len() / per_group,
    )?;
    for seg in segments {
        let out = &mut dst[seg.dst as usize..];
        unpack_segment(seg, &codes[seg.src as usize..], out, |g, codes, out| {
            let table = &levels[g << seg.bits..][..1usize << seg.bits];
            for (y, &code) in out.iter_mut().zip(codes) {
                *y = table[code as usize];
            }
        });
    }
    Ok(())
}
