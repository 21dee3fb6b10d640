//! CPU twin of `shaders/weq_act_sweep.wgsl`: the search over (half step h, offset o) of the
//! weighted-entropy log quantizer of activations (ALGORITHMS.md §3), every pair scored from
//! the prefix sums of the 1024-bin histogram of k = floor(16·log2 x) in the shader's integer
//! arithmetic, the best (first on ties) picked. Integer throughout, so both backends choose
//! the same pair with the same score, bit for bit.
//!
//! Score of a pair, with P_j = n_j/N over the N positive elements:
//!   S = −Σ_j r_j·P_j·ln P_j = ln 2 · 2^(m_ref/16) / (N·2^16) · Σ_j w_j·n_j·D_j,
//! where D_j = lg(N) − lg(n_j) is the Q16 fixed-point log2 of N/n_j, r_j = 2^(m_j/16) with
//! m_j = o + (j−1)·2h, and w_j = 2^(−(m_ref − m_j)/16) in Q30 relative to m_ref = k_top + 16,
//! which no populated level exceeds. The sum is kept exactly (each term truncated to an
//! integer) in 64 bits.

use rayon::prelude::*;

use super::weq_act_histogram::{
    BINS, HIST_WORDS, NONFINITE_WORD, TABLE_WEIGHT, WEIGHT_FRAC_BITS, ZERO_WORD, k_lo, lg, tables,
};
use crate::error::{Error, Result};
pub use crate::kernel::weq_act::{MAX_HALF_STEP, OFFSET_MARGIN, OFFSETS, PAIRS, WeqActResult};

/// Exclusive prefix sums of the bins (`BINS + 1` entries).
pub fn prefix(hist: &[u32]) -> Vec<u32> {
    let mut p = vec![0u32; BINS + 1];
    for b in 0..BINS {
        p[b + 1] = p[b] + hist[b];
    }
    p
}

/// w·n·D for a level m_ref − m = d sixteenths of an octave below the reference, truncated:
/// (n·D·G[d mod 16]) >> (30 + d/16), G the Q30 table of 2^(−i/16). Mirrors `weq_act_term`.
#[inline]
pub fn term(n: u32, dl: u32, d: u32) -> u64 {
    let sh = WEIGHT_FRAC_BITS + (d >> 4);
    if sh >= 96 {
        return 0;
    }
    let g = tables().words[TABLE_WEIGHT + (d & 15) as usize];
    ((u128::from(n) * u128::from(dl) * u128::from(g)) >> sh) as u64
}

/// The score of pair (h, t) at `bits` over prefix sums `p` of a window topped by `k_top`.
/// Mirrors `pair_score` in the WGSL: levels q = 0..L−2 cover bins [base + q·2h, base +
/// (q+1)·2h), base = o − h − k_lo, the top level everything above.
pub fn pair_score(p: &[u32], bits: u32, h: u32, t: u32, k_top: i32) -> u64 {
    let total = p[BINS];
    if total == 0 {
        return 0;
    }
    let levels = (1u32 << bits) - 1;
    let step = 2 * h;
    let o = k_lo(k_top) + OFFSET_MARGIN + t as i32;
    let base = (OFFSET_MARGIN + t as i32 - h as i32) as u32;
    let m_ref = k_top + 16;
    let lg_total = lg(total);
    let mut acc = 0u64;
    for q in 0..levels {
        let a = base + q * step;
        if a >= BINS as u32 {
            break;
        }
        let b = if q == levels - 1 {
            BINS as u32
        } else {
            (a + step).min(BINS as u32)
        };
        let n = p[b as usize] - p[a as usize];
        if n == 0 {
            continue;
        }
        // A populated level has m ≤ k + h ≤ k_top + 16 = m_ref for a bin k it holds.
        let d = (m_ref - (o + (q * step) as i32)) as u32;
        acc += term(n, lg_total - lg(n), d);
    }
    acc
}

/// The best pair for the histogram words `hist` of a batch whose largest k is `k_top`:
/// highest score, the lowest pair index on ties.
pub fn weq_act_sweep(hist: &[u32], k_top: i32, bits: u32) -> Result<WeqActResult> {
    if !(1..=8).contains(&bits) || hist.len() != HIST_WORDS {
        return Err(Error::param(
            "weq_act_sweep",
            format!("{bits} bits, {} histogram words", hist.len()),
        ));
    }
    let p = prefix(hist);
    let (score, pair) = (0..PAIRS)
        .into_par_iter()
        .map(|pair| {
            let s = pair_score(&p, bits, pair / OFFSETS + 1, pair % OFFSETS, k_top);
            (s, pair)
        })
        .reduce(
            || (0, u32::MAX),
            |a, b| {
                if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                    b
                } else {
                    a
                }
            },
        );
    Ok(WeqActResult {
        step: 2 * (pair / OFFSETS + 1),
        offset: k_lo(k_top) + OFFSET_MARGIN + (pair % OFFSETS) as i32,
        score_lo: score as u32,
        score_hi: (score >> 32) as u32,
        positive: p[BINS],
        zero: hist[ZERO_WORD],
        nonfinite: hist[NONFINITE_WORD],
        k_top,
    })
}
