//! CPU twin of `shaders/dequantize.wgsl`: unpacks affine codes (layout of
//! `src/format/pack.rs`) back to floats.

use rayon::prelude::*;

use crate::affine::{AffineSegment, Layout, check_segments, dequantize_code};
use crate::error::Result;
use crate::format::pack::get_code;

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 16;

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
        let words = &codes[seg.src as usize..][..seg.packed_words()];
        let out = &mut dst[seg.dst as usize..][..seg.len as usize];
        out.par_chunks_mut(TASK_ELEMS)
            .enumerate()
            .for_each(|(t, out)| {
                let first = t * TASK_ELEMS;
                for (k, y) in out.iter_mut().enumerate() {
                    let i = first + k;
                    let g = seg.group_of(i);
                    let q = get_code(words, i, seg.bits) as i32 + seg.qmin;
                    *y = dequantize_code(q, scale[g], zero[g]);
                }
            });
    }
    Ok(())
}
