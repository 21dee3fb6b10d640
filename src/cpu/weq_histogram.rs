//! CPU twin of `shaders/weq_histogram.wgsl` (and of the `shaders/weq.wgsl` helpers): fine
//! histograms of |w| over power-of-two spans with a fixed-point Σt² per bin, and their prefix
//! sums in the shader's order, so both backends give the same bits.

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};
pub use crate::kernel::weq::{BIN_WORDS, PREFIX_WORDS};

/// Smallest span exponent (`WEQ_EXP_MIN` in the WGSL).
pub const EXP_MIN: i32 = -100;
/// Threads per workgroup of the scan, whose order the twin follows.
const SCAN_LANES: usize = 256;

/// Running totals of a group's bins below an index: count and Σt² (t in bin units).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Prefix {
    /// Elements in the bins below.
    pub count: u32,
    /// Their Σt².
    pub energy: f32,
}
const _: () = assert!(std::mem::size_of::<Prefix>() == 4 * PREFIX_WORDS);

/// 2^k for |k| ≤ 126, exactly.
#[inline]
pub fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// e with max|x| < 2^e over the group's range, clamped to `[EXP_MIN, 128]`.
pub fn span_exponent(r: &GroupRange) -> i32 {
    let m = r.lo.abs().max(r.hi.abs());
    let biased = ((m.to_bits() >> 23) & 0xff) as i32;
    (biased - 126).clamp(EXP_MIN, 128)
}

/// Width of a bin of a group spanning `[0, 2^e)` with `bins` bins.
pub fn bin_width(e: i32, bins: u32) -> f32 {
    pow2(e - bins.trailing_zeros() as i32)
}

/// |x| with subnormals flushed to 0.
#[inline]
fn magnitude(x: f32) -> f32 {
    let a = x.abs();
    if a < f32::MIN_POSITIVE { 0.0 } else { a }
}

/// Fixed-point shift of bin `b`: 31 − 2·(bit length of b).
#[inline]
pub fn bin_shift(bin: u32) -> i32 {
    31 - 2 * (32 - bin.leading_zeros()) as i32
}

/// Bin and fixed-point t² of `x` for a span of `2^e` cut into `2^log2_bins` bins.
#[inline]
fn bin_of(x: f32, e: i32, log2_bins: u32, bins: u32) -> (u32, u32) {
    let t = magnitude(x) * pow2(log2_bins as i32 - e);
    let bin = (t.floor() as u32).min(bins - 1);
    (bin, (t * t * pow2(bin_shift(bin))).floor() as u32)
}

/// Histogram words (`BIN_WORDS` per bin, `bins` bins per group, groups consecutive) of `x`.
pub fn weq_histogram(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    bins: u32,
) -> Result<Vec<u32>> {
    if group_len == 0 || !x.len().is_multiple_of(group_len) || x.len() / group_len != ranges.len() {
        return Err(Error::shape(
            "weq_histogram",
            "one range per group of the input is needed",
        ));
    }
    if !bins.is_power_of_two() {
        return Err(Error::param("weq_histogram", format!("{bins} bins")));
    }
    let mut hist = vec![0u32; ranges.len() * bins as usize * BIN_WORDS];
    hist.par_chunks_mut(bins as usize * BIN_WORDS)
        .zip(x.par_chunks(group_len))
        .zip(ranges.par_iter())
        .for_each(|((h, g), r)| {
            let e = span_exponent(r);
            let mut sums = vec![0u64; bins as usize];
            for &v in g {
                let (b, q) = bin_of(v, e, bins.trailing_zeros(), bins);
                h[b as usize * BIN_WORDS] += 1;
                sums[b as usize] += u64::from(q);
            }
            for (b, s) in sums.iter().enumerate() {
                h[b * BIN_WORDS + 1] = *s as u32;
                h[b * BIN_WORDS + 2] = (*s >> 32) as u32;
            }
        });
    Ok(hist)
}

/// Σt² of one bin from its words; mirrors `bin_energy` in the WGSL.
#[inline]
fn bin_energy(words: &[u32], bin: u32) -> f32 {
    let (lo, hi) = (words[1], words[2]);
    let lo_f = (lo >> 16) as f32 * 65536.0 + (lo & 0xffff) as f32;
    let hi_f = (hi >> 16) as f32 * 65536.0 + (hi & 0xffff) as f32;
    (hi_f * 4_294_967_296.0 + lo_f) * pow2(-bin_shift(bin))
}

/// Prefix sums (`bins + 1` entries per group) of histograms, in the order of the `scan`
/// entry point: runs of bins per lane, a Hillis–Steele scan over the lanes, then each run.
pub fn weq_scan(hist: &[u32], bins: u32) -> Vec<Prefix> {
    let bins_u = bins as usize;
    let groups = hist.len() / (bins_u * BIN_WORDS);
    let mut out = vec![Prefix::default(); groups * (bins_u + 1)];
    out.par_chunks_mut(bins_u + 1)
        .zip(hist.par_chunks(bins_u * BIN_WORDS))
        .for_each(|(p, h)| {
            let per = bins_u.div_ceil(SCAN_LANES);
            let run = |lane: usize| (lane * per).min(bins_u)..((lane + 1) * per).min(bins_u);
            let word = |b: usize| &h[b * BIN_WORDS..(b + 1) * BIN_WORDS];
            let mut count = [0u32; SCAN_LANES];
            let mut energy = [0f32; SCAN_LANES];
            for lane in 0..SCAN_LANES {
                for b in run(lane) {
                    count[lane] += word(b)[0];
                    energy[lane] += bin_energy(word(b), b as u32);
                }
            }
            let mut d = 1;
            while d < SCAN_LANES {
                let (c0, e0) = (count, energy);
                for lane in d..SCAN_LANES {
                    count[lane] = c0[lane] + c0[lane - d];
                    energy[lane] = e0[lane] + e0[lane - d];
                }
                d *= 2;
            }
            p[0] = Prefix::default();
            for lane in 0..SCAN_LANES {
                let (mut oc, mut os) = if lane > 0 {
                    (count[lane - 1], energy[lane - 1])
                } else {
                    (0, 0.0)
                };
                for b in run(lane) {
                    oc += word(b)[0];
                    os += bin_energy(word(b), b as u32);
                    p[b + 1] = Prefix {
                        count: oc,
                        energy: os,
                    };
                }
            }
        });
    out
}
