//! CPU twin of `shaders/dequantize.wgsl`: unpacks affine codes (layout of
//! `src/format/pack.rs`) back to floats.

use super::segments::{map_code_runs, unpack_segment};
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

/// Σx² and Σ(x − x̂)² of `values` (the originals, the segment's at its `dst`) against
/// the values its codes decode to, without storing those: the quality report of a quantized
/// block in one pass over the codes. Summed in f64, in element order.
pub fn squared_error(
    codes: &[u32],
    values: &[f32],
    scale: &[f32],
    zero: &[i32],
    seg: &AffineSegment,
) -> Result<(f64, f64)> {
    check_segments(
        "squared_error",
        std::slice::from_ref(seg),
        (Layout::Packed, codes.len()),
        (Layout::Elements, values.len()),
        scale.len().min(zero.len()),
    )?;
    let values = &values[seg.dst as usize..];
    let parts = map_code_runs(seg, &codes[seg.src as usize..], |first, g, run| {
        let (s, z) = (scale[g], zero[g]);
        let x = &values[first..first + run.len()];
        squared_sums(
            x.iter()
                .zip(run)
                .map(|(&x, &code)| (x, dequantize_code(code as i32 + seg.qmin, s, z))),
        )
    });
    Ok(parts
        .into_iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1)))
}

/// Σx² and Σ(x − x̂)² of (x, x̂) pairs, in f64, in order.
pub fn squared_sums(pairs: impl Iterator<Item = (f32, f32)>) -> (f64, f64) {
    pairs.fold((0.0, 0.0), |(signal, noise), (x, y)| {
        let d = f64::from(x) - f64::from(y);
        (signal + f64::from(x) * f64::from(x), noise + d * d)
    })
}
