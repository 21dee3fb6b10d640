//! Plumbing shared by the CPU twins of the segment kernels: packing a segment's codes into
//! its words and decoding each element from its code, in parallel blocks that start on word
//! boundaries (layout in `format::pack`).

use rayon::prelude::*;

use crate::affine::AffineSegment;
use crate::format::pack::{get_code, put_code};

/// Elements per rayon task; a multiple of 32 so every task starts on a word boundary.
const TASK_ELEMS: usize = 1 << 15;

/// Overwrites the segment's words (`words`, starting at its first word) with the codes
/// `code_of(i)` of its elements, each already below `2^bits`.
pub fn pack_segment(seg: &AffineSegment, words: &mut [u32], code_of: impl Fn(usize) -> u32 + Sync) {
    let len = seg.len as usize;
    let words = &mut words[..seg.packed_words()];
    // TASK_ELEMS elements fill exactly TASK_ELEMS·bits/32 words.
    words
        .par_chunks_mut(TASK_ELEMS / 32 * seg.bits as usize)
        .enumerate()
        .for_each(|(t, out)| {
            out.fill(0);
            let first = t * TASK_ELEMS;
            for i in first..(first + TASK_ELEMS).min(len) {
                put_code(out, i - first, seg.bits, code_of(i));
            }
        });
}

/// Writes `decode(i, code)` for every element of the segment into `out` (its outputs), the
/// codes read from `words` (starting at its first word).
pub fn unpack_segment(
    seg: &AffineSegment,
    words: &[u32],
    out: &mut [f32],
    decode: impl Fn(usize, u32) -> f32 + Sync,
) {
    let words = &words[..seg.packed_words()];
    out[..seg.len as usize]
        .par_chunks_mut(TASK_ELEMS)
        .enumerate()
        .for_each(|(t, out)| {
            let first = t * TASK_ELEMS;
            for (k, y) in out.iter_mut().enumerate() {
                *y = decode(first + k, get_code(words, first + k, seg.bits));
            }
        });
}
