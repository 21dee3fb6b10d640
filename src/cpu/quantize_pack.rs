//! CPU twin of `shaders/quantize_pack.wgsl`: batched affine quantization to packed codes in
//! the layout of `src/format/pack.rs`.

use rayon::prelude::*;

use crate::affine::{AffineSegment, Layout, check_segments, quantize_code};
use crate::error::Result;
use crate::format::pack::put_code;

/// Elements per rayon task; a multiple of 32 so every task starts on a word boundary.
const TASK_ELEMS: usize = 1 << 15;

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
        let bits = seg.bits as usize;
        let input = &src[seg.src as usize..][..seg.len as usize];
        let words = &mut codes[seg.dst as usize..][..seg.packed_words()];
        // TASK_ELEMS elements fill exactly TASK_ELEMS·bits/32 words.
        words
            .par_chunks_mut(TASK_ELEMS / 32 * bits)
            .enumerate()
            .for_each(|(t, out)| {
                out.fill(0);
                let first = t * TASK_ELEMS;
                let end = (first + TASK_ELEMS).min(input.len());
                for (k, &x) in input[first..end].iter().enumerate() {
                    let g = seg.group_of(first + k);
                    let q = quantize_code(x, scale[g], zero[g], seg.qmin, seg.qmax);
                    put_code(out, k, seg.bits, (q - seg.qmin) as u32);
                }
            });
    }
    Ok(())
}
