//! Plumbing shared by the CPU twins of the segment kernels: packing a segment's codes into
//! its words and decoding each element from its code, in parallel blocks that start on word
//! boundaries (layout in `format::pack`).

use rayon::prelude::*;

use crate::affine::AffineSegment;
use crate::format::pack::{get_code, put_code};

/// Elements per rayon task; a multiple of 32 so every task starts on a word boundary.
const TASK_ELEMS: usize = 1 << 15;

/// The parameter group of each element from `first` on, in order, walked with a counter:
/// a 64-bit division per element (`AffineSegment::group_of`) was most of a pack's time.
fn group_walk(seg: &AffineSegment, first: usize) -> impl FnMut() -> usize {
    let len = seg.group_len as usize;
    let pos = seg.group_phase as usize + first;
    let mut group = seg.param as usize + pos / len;
    let mut left = len - pos % len;
    move || {
        if left == 0 {
            group += 1;
            left = len;
        }
        left -= 1;
        group
    }
}

/// Overwrites the segment's words (`words`, starting at its first word) with the codes
/// `code_of(i, g)` of its elements (element `i` in parameter group `g`), each already below
/// `2^bits`.
pub fn pack_segment(
    seg: &AffineSegment,
    words: &mut [u32],
    code_of: impl Fn(usize, usize) -> u32 + Sync,
) {
    pack_segment_runs(seg, words, |first, g, out| {
        for (k, c) in out.iter_mut().enumerate() {
            *c = code_of(first + k, g);
        }
    });
}

/// Elements a run hands its closure at once (one stack buffer).
const RUN_ELEMS: usize = 256;

/// [`pack_segment`] with codes computed a run at a time: `codes_of(first, g, out)` fills
/// `out` with the codes of elements `first..first + out.len()`, all in parameter group `g`, so
/// the closure's loop sees fixed parameters and vectorizes; packing follows.
pub fn pack_segment_runs(
    seg: &AffineSegment,
    words: &mut [u32],
    codes_of: impl Fn(usize, usize, &mut [u32]) + Sync,
) {
    let len = seg.len as usize;
    let group_len = seg.group_len as usize;
    let words = &mut words[..seg.packed_words()];
    // TASK_ELEMS elements fill exactly TASK_ELEMS·bits/32 words.
    words
        .par_chunks_mut(TASK_ELEMS / 32 * seg.bits as usize)
        .enumerate()
        .for_each(|(t, out)| {
            out.fill(0);
            let first = t * TASK_ELEMS;
            let end = (first + TASK_ELEMS).min(len);
            let mut codes = [0u32; RUN_ELEMS];
            let mut i = first;
            while i < end {
                let pos = seg.group_phase as usize + i;
                let run = (group_len - pos % group_len).min(end - i).min(RUN_ELEMS);
                codes_of(i, seg.param as usize + pos / group_len, &mut codes[..run]);
                for (k, &c) in codes[..run].iter().enumerate() {
                    put_code(out, i - first + k, seg.bits, c);
                }
                i += run;
            }
        });
}

/// Writes `decode(i, g, code)` for every element `i` (in parameter group `g`) of the segment
/// into `out` (its outputs), the codes read from `words` (starting at its first word).
pub fn unpack_segment(
    seg: &AffineSegment,
    words: &[u32],
    out: &mut [f32],
    decode: impl Fn(usize, usize, u32) -> f32 + Sync,
) {
    let words = &words[..seg.packed_words()];
    out[..seg.len as usize]
        .par_chunks_mut(TASK_ELEMS)
        .enumerate()
        .for_each(|(t, out)| {
            let first = t * TASK_ELEMS;
            let mut next_group = group_walk(seg, first);
            for (k, y) in out.iter_mut().enumerate() {
                *y = decode(
                    first + k,
                    next_group(),
                    get_code(words, first + k, seg.bits),
                );
            }
        });
}
