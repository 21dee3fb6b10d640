//! CPU twin of `shaders/weq_act_histogram.wgsl` and of the shared `shaders/weq_act.wgsl`
//! numerics of the weighted-entropy log quantizer of activations (ALGORITHMS.md §3): the
//! integer log index k = floor(16·log2 x) read from a float's exponent and mantissa through a
//! threshold table (no `log2`, whose last bits differ across GPUs), the levels 2^(m/16) built
//! from bits, the fixed-point log2 and weights of the sweep, and the 1024-bin histogram of k.
//! Every function here is integer arithmetic, so both backends give the same bits.

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};
pub use crate::kernel::weq_act::{
    BINS, HIST_WORDS, K_SUBNORMAL, LG_FRAC_BITS, NONFINITE_WORD, TABLE_LOG, TABLE_POW,
    TABLE_THRESH, TABLE_WEIGHT, TABLE_WORDS, WEIGHT_FRAC_BITS, WeqActTables, ZERO_WORD, tables,
};

/// Whether the bits are a positive value (sign clear, not +0) that is not NaN or +Inf.
#[inline]
pub fn is_positive_finite(bits: u32) -> bool {
    bits != 0 && bits < 0x7f80_0000
}

/// Whether the bits are +Inf or a NaN (of either sign).
#[inline]
pub fn is_nonfinite(bits: u32) -> bool {
    bits & 0x7fff_ffff >= 0x7f80_0000
}

/// k = floor(16·log2 x) of a positive finite x given by its bits, exactly: 16·(exponent)
/// plus the count of thresholds the mantissa reaches (a 4-step branchless binary search,
/// as in the WGSL); positive subnormals give [`K_SUBNORMAL`]. Mirrors `weq_act_klog`.
#[inline]
pub fn klog(bits: u32) -> i32 {
    let e = (bits >> 23) as i32;
    if e == 0 {
        return K_SUBNORMAL;
    }
    let m = bits & 0x7f_ffff;
    let t = &tables().words[TABLE_THRESH..TABLE_THRESH + 16];
    let mut j = 0usize;
    for s in [8, 4, 2, 1] {
        if m >= t[j + s] {
            j += s;
        }
    }
    16 * (e - 127) + j as i32
}

/// 2^(m/16) as an f32, built from bits: f32(2^((m mod 16)/16)) with its exponent raised by
/// floor(m/16), so it is exact to the table and the same everywhere; clamped to
/// [2^-126, f32::MAX]. Mirrors `weq_act_pow16`.
#[inline]
pub fn pow16(m: i32) -> f32 {
    let e = m >> 4;
    if e > 127 {
        return f32::MAX;
    }
    if e < -126 {
        return f32::MIN_POSITIVE;
    }
    let base = tables().words[TABLE_POW + (m & 15) as usize];
    f32::from_bits(base.wrapping_add((e as u32) << 23))
}

/// Fixed-point log2 of n ≥ 1 with [`LG_FRAC_BITS`] fractional bits: the exponent plus the
/// table at the top 8 mantissa bits, linearly interpolated on the next 16 and rounded (error
/// under 1.3 units, 2·10⁻⁵). Monotone in n. Mirrors `weq_act_lg`.
#[inline]
pub fn lg(n: u32) -> u32 {
    let e = 31 - n.leading_zeros();
    let f = (n << (31 - e)) << 1;
    let i = (f >> 24) as usize;
    let r = (f >> 8) & 0xffff;
    let t = &tables().words[TABLE_LOG..];
    (e << LG_FRAC_BITS) + t[i] + (((t[i + 1] - t[i]) * r + 0x8000) >> 16)
}

/// The window's lowest k: bins hold k − k_lo, the top bin the batch's largest k.
#[inline]
pub fn k_lo(k_top: i32) -> i32 {
    k_top - (BINS as i32 - 1)
}

/// k of the batch's largest value from its range: 0 when no value is positive.
pub fn k_top(range: &GroupRange) -> i32 {
    let b = range.hi.to_bits();
    if is_positive_finite(b) { klog(b) } else { 0 }
}

/// Bin of a positive finite x: k − k_lo clamped to the window (everything below it lands in
/// bin 0, which every admissible offset maps to the zero level).
#[inline]
pub fn bin_of(bits: u32, k_lo: i32) -> usize {
    (klog(bits) - k_lo).clamp(0, BINS as i32 - 1) as usize
}

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 16;

/// The histogram words ([`HIST_WORDS`]) of `x`, whose range (from minmax) is `range`.
pub fn weq_act_histogram(x: &[f32], range: &GroupRange) -> Result<Vec<u32>> {
    if x.len() as u64 >= u64::from(u32::MAX) {
        return Err(Error::param(
            "weq_act_histogram",
            format!("{} elements exceed 2^32 − 1", x.len()),
        ));
    }
    let lo = k_lo(k_top(range));
    let hist = x
        .par_chunks(TASK_ELEMS)
        .map(|c| {
            let mut h = vec![0u32; HIST_WORDS];
            for v in c {
                let b = v.to_bits();
                if is_positive_finite(b) {
                    h[bin_of(b, lo)] += 1;
                } else if is_nonfinite(b) {
                    h[NONFINITE_WORD] += 1;
                } else {
                    h[ZERO_WORD] += 1;
                }
            }
            h
        })
        .reduce(
            || vec![0u32; HIST_WORDS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    Ok(hist)
}
