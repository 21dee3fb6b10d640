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

/// Offsets tried per half step: o = k_lo + 17 + t, t in 0..1024. The lowest keeps every level
/// above the window's bin 0 (o − h > k_lo for h ≤ 16), so the values below the window, all
/// counted in bin 0, go to the zero level under every pair, as the forward sends them; the
/// highest, k_top + 17, sends everything to zero. So the range covers every offset at which
/// some value of the batch lands on a non-zero level, except levels more than 63 octaves
/// below the batch's maximum.
pub const OFFSETS: u32 = 1024;
/// Half steps h = 1..=16 (step 2h, log base 2^(2h/16)).
pub const MAX_HALF_STEP: u32 = 16;
/// (h, o) pairs; pair p has h = p / OFFSETS + 1 and t = p % OFFSETS.
pub const PAIRS: u32 = MAX_HALF_STEP * OFFSETS;
/// Lowest offset above the window bottom k_lo.
pub const OFFSET_MARGIN: i32 = 17;

/// The chosen quantizer and its score; mirrors `WeqActResult` in weq_act.wgsl. The forward
/// kernel reads `step` and `offset` from it on the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqActResult {
    /// Step 2h of the log domain, in sixteenths of an octave.
    pub step: u32,
    /// Offset o: level 1 is 2^(o/16).
    pub offset: i32,
    /// Low word of the fixed-point score Σ_j w_j·n_j·D_j.
    pub score_lo: u32,
    /// High word.
    pub score_hi: u32,
    /// Positive finite elements N.
    pub positive: u32,
    /// Finite elements ≤ 0.
    pub zero: u32,
    /// NaN and ±Inf elements.
    pub nonfinite: u32,
    /// k = floor(16·log2 max x) of the batch (0 when nothing is positive).
    pub k_top: i32,
}
const _: () = assert!(std::mem::size_of::<WeqActResult>() == 32);

impl WeqActResult {
    /// The fixed-point score.
    pub fn score(&self) -> u64 {
        u64::from(self.score_lo) | (u64::from(self.score_hi) << 32)
    }

    /// S = −Σ_j r_j·P_j·ln P_j of the chosen pair (units of x), from the score.
    pub fn entropy(&self) -> f64 {
        if self.positive == 0 {
            return 0.0;
        }
        let scale = f64::from(self.k_top + 16) / 16.0;
        std::f64::consts::LN_2 * scale.exp2() * self.score() as f64
            / (f64::from(self.positive) * 65_536.0)
    }
}

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
