//! CPU twin of `shaders/prune.wgsl`: the keep-mask `|x| > threshold` per group, packed one
//! bit per element.

use super::segments::pack_segment;
use crate::affine::{AffineSegment, Layout, check_segments};
use crate::error::{Error, Result};

/// Writes each segment's keep-mask into `mask`; `thresholds` holds one f32 per group.
pub fn prune_mask(
    src: &[f32],
    mask: &mut [u32],
    thresholds: &[f32],
    segments: &[AffineSegment],
) -> Result<()> {
    if segments.iter().any(|s| s.bits != 1) {
        return Err(Error::param("prune", "keep-masks are 1-bit codes"));
    }
    check_segments(
        "prune",
        segments,
        (Layout::Elements, src.len()),
        (Layout::Packed, mask.len()),
        thresholds.len(),
    )?;
    for seg in segments {
        let input = &src[seg.src as usize..];
        pack_segment(seg, &mut mask[seg.dst as usize..], |i, g| {
            u32::from(input[i].abs() > thresholds[g])
        });
    }
    Ok(())
}
