//! Plumbing shared by the CPU twins of the segment kernels: packing a segment's codes into
//! its words and decoding each element from its code, in parallel blocks that start on word
//! boundaries (layout in `format::pack`).

use rayon::prelude::*;

use crate::affine::AffineSegment;
use crate::format::pack::{get_code, put_code};

/// Elements per rayon task; a multiple of 32 so every task starts on a word boundary.
const TASK_ELEMS: usize = 1 << 15;

/// Elements handed to a run closure at once (one stack buffer).
const RUN_ELEMS: usize = 256;

/// Consecutive runs of elements `first..end` of `seg`, each inside one parameter group and at
/// most [`RUN_ELEMS`] long, as (first element, length, group): one division per run instead
/// of one per element.
fn runs(
    seg: &AffineSegment,
    first: usize,
    end: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let group_len = seg.group_len as usize;
    let mut i = first;
    std::iter::from_fn(move || {
        if i >= end {
            return None;
        }
        let pos = seg.group_phase as usize + i;
        let len = (group_len - pos % group_len).min(end - i).min(RUN_ELEMS);
        let run = (i, len, seg.param as usize + pos / group_len);
        i += len;
        Some(run)
    })
}

/// `visit(i, g, codes)` for each run of elements `first..end` (from element `i`, in
/// parameter group `g`), its codes read from `words`.
fn for_code_runs(
    seg: &AffineSegment,
    words: &[u32],
    first: usize,
    end: usize,
    mut visit: impl FnMut(usize, usize, &[u32]),
) {
    let mut codes = [0u32; RUN_ELEMS];
    for (i, run, g) in runs(seg, first, end) {
        for (k, c) in codes[..run].iter_mut().enumerate() {
            *c = get_code(words, i + k, seg.bits);
        }
        visit(i, g, &codes[..run]);
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

/// [`pack_segment`] with codes computed a run at a time: `codes_of(first, g, out)` fills
/// `out` with the codes of elements `first..first + out.len()`, all in parameter group `g`, so
/// the closure's loop sees fixed parameters and vectorizes; packing follows.
pub fn pack_segment_runs(
    seg: &AffineSegment,
    words: &mut [u32],
    codes_of: impl Fn(usize, usize, &mut [u32]) + Sync,
) {
    let len = seg.len as usize;
    let words = &mut words[..seg.packed_words()];
    // TASK_ELEMS elements fill exactly TASK_ELEMS·bits/32 words.
    words
        .par_chunks_mut(TASK_ELEMS / 32 * seg.bits as usize)
        .enumerate()
        .for_each(|(t, out)| {
            out.fill(0);
            let first = t * TASK_ELEMS;
            let mut codes = [0u32; RUN_ELEMS];
            for (i, run, g) in runs(seg, first, (first + TASK_ELEMS).min(len)) {
                codes_of(i, g, &mut codes[..run]);
                for (k, &c) in codes[..run].iter().enumerate() {
                    put_code(out, i - first + k, seg.bits, c);
                }
            }
        });
}

/// Writes the decoded values of every element of the segment into `out` (its outputs), the
/// codes read from `words` (starting at its first word): `decode(g, codes, out)` turns a run
/// of codes in parameter group `g` into values, a loop with fixed parameters.
pub fn unpack_segment(
    seg: &AffineSegment,
    words: &[u32],
    out: &mut [f32],
    decode: impl Fn(usize, &[u32], &mut [f32]) + Sync,
) {
    let words = &words[..seg.packed_words()];
    let len = seg.len as usize;
    out[..len]
        .par_chunks_mut(TASK_ELEMS)
        .enumerate()
        .for_each(|(t, out)| {
            let first = t * TASK_ELEMS;
            let end = first + out.len();
            for_code_runs(seg, words, first, end, |i, g, codes| {
                decode(g, codes, &mut out[i - first..][..codes.len()]);
            });
        });
}

/// `visit(first, g, codes)` for every run of the segment's codes (elements `first..` in
/// parameter group `g`), in parallel; the results come back in element order, so a caller
/// that sums them sequentially gets the same bits on every run.
pub fn map_code_runs<T: Send>(
    seg: &AffineSegment,
    words: &[u32],
    visit: impl Fn(usize, usize, &[u32]) -> T + Sync,
) -> Vec<T> {
    let words = &words[..seg.packed_words()];
    let len = seg.len as usize;
    (0..len.div_ceil(TASK_ELEMS))
        .into_par_iter()
        .flat_map_iter(|t| {
            let first = t * TASK_ELEMS;
            let mut results = Vec::new();
            for_code_runs(
                seg,
                words,
                first,
                (first + TASK_ELEMS).min(len),
                |i, g, codes| {
                    results.push(visit(i, g, codes));
                },
            );
            results
        })
        .collect()
}
