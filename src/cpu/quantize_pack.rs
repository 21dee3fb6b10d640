//! CPU twin of `shaders/quantize_pack.wgsl`: batched affine quantization to packed codes in
//! the layout of `src/format/pack.rs`.

use super::segments::pack_segment_runs;
use crate::affine::{
    AffineSegment, Layout, MAGIC_EXACT, ROUND_MAGIC, check_segments, quantize_code,
};
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
        pack_segment_runs(seg, &mut codes[seg.dst as usize..], |first, g, out| {
            let x = &input[first..first + out.len()];
            quantize_run(x, scale[g], zero[g], seg.qmin, seg.qmax, out);
        });
    }
    Ok(())
}

/// Codes (offset by `−qmin`) of one run sharing (s, z). round(clamp(x/s, qmin−z, qmax−z)) + z
/// equals clamp(round(x/s) + z, qmin, qmax) because the bounds are integers and rounding is
/// monotone; the clamped value is then small enough to round by [`ROUND_MAGIC`] (ties to
/// even, no `rintf` call), so the loop vectorizes.
fn quantize_run(x: &[f32], s: f32, z: i32, qmin: i32, qmax: i32, out: &mut [u32]) {
    let lo = (i64::from(qmin) - i64::from(z)) as f32;
    let hi = (i64::from(qmax) - i64::from(z)) as f32;
    if lo < -MAGIC_EXACT || hi > MAGIC_EXACT {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (quantize_code(v, s, z, qmin, qmax) - qmin) as u32;
        }
        return;
    }
    let offset = z.wrapping_sub(qmin);
    for (o, &v) in out.iter_mut().zip(x) {
        let rounded = ((v / s).max(lo).min(hi) + ROUND_MAGIC) - ROUND_MAGIC;
        *o = (rounded as i32).wrapping_add(offset) as u32;
    }
}
