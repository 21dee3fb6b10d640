//! CPU twin of `shaders/codebook_assign.wgsl`: codebook codes by counting a group's sorted
//! thresholds at or below each value, packed like affine codes.

use super::segments::pack_segment;
use crate::affine::{AffineSegment, Layout, check_segments};
use crate::error::Result;
pub use crate::kernel::codebook::table_len;

/// Writes each segment's codes into `codes`; `thresholds` holds `2^bits` entries per group,
/// the first `2^bits − 1` sorted ascending (the last is unused).
pub fn codebook_assign(
    src: &[f32],
    codes: &mut [u32],
    thresholds: &[f32],
    segments: &[AffineSegment],
) -> Result<()> {
    let per_group = table_len("codebook_assign", segments)?;
    check_segments(
        "codebook_assign",
        segments,
        (Layout::Elements, src.len()),
        (Layout::Packed, codes.len()),
        thresholds.len() / per_group.max(1),
    )?;
    for seg in segments {
        let input = &src[seg.src as usize..];
        let levels = 1usize << seg.bits;
        pack_segment(seg, &mut codes[seg.dst as usize..], |i, g| {
            let t = &thresholds[g * levels..][..levels - 1];
            t.partition_point(|&b| b <= input[i]) as u32
        });
    }
    Ok(())
}
