//! CPU twin of `shaders/codebook_assign.wgsl`: codebook codes by counting a group's sorted
//! thresholds at or below each value, packed like affine codes.

use super::segments::pack_segment;
use crate::affine::{AffineSegment, Layout, check_segments};
use crate::error::{Error, Result};

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
