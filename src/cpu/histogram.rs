//! CPU twin of `shaders/histogram.wgsl`: per-group histograms over calibrated ranges and
//! percentile clipping from them, with the same bin arithmetic as the shader.

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};

/// The histogram's span for a group; mirrors `hist_span` in the WGSL.
fn hist_span(r: &GroupRange, symmetric: bool) -> (f32, f32) {
    if symmetric {
        (0.0, r.lo.abs().max(r.hi.abs()))
    } else {
        (r.lo, r.hi)
    }
}

/// Bin of `v` in `[lo, hi]` cut into `bins` equal bins; mirrors `bin_of` in the WGSL.
#[inline]
pub fn bin_of(v: f32, lo: f32, hi: f32, bins: u32) -> u32 {
    if !(hi > lo) {
        return 0;
    }
    let t = ((v - lo) * (bins as f32 / (hi - lo))).floor();
    t.clamp(0.0, (bins - 1) as f32) as u32
}

/// Histograms (`bins` counts per group, groups consecutive) of every group of `x`.
pub fn group_histograms(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    bins: u32,
    symmetric: bool,
) -> Result<Vec<u32>> {
    if group_len == 0 || !x.len().is_multiple_of(group_len) || x.len() / group_len != ranges.len() {
        return Err(Error::shape(
            "histogram",
            "one range per group of the input is needed",
        ));
    }
    let mut hist = vec![0u32; ranges.len() * bins as usize];
    hist.par_chunks_mut(bins as usize)
        .zip(x.par_chunks(group_len))
        .zip(ranges.par_iter())
        .for_each(|((h, g), r)| {
            let (lo, hi) = hist_span(r, symmetric);
            for &v in g.iter().filter(|v| v.is_finite()) {
                let v = if symmetric { v.abs() } else { v };
                h[bin_of(v, lo, hi, bins) as usize] += 1;
            }
        });
    Ok(hist)
}

/// First bin whose running count reaches `rank` (1-based).
fn bin_at_rank(h: &[u32], rank: u32) -> u32 {
    let mut cum = 0;
    for (b, &c) in h.iter().enumerate() {
        cum += c;
        if cum >= rank {
            return b as u32;
        }
    }
    h.len() as u32 - 1
}

/// Ranges clipped at the quantiles `(p_lo, p_hi)` (see `gpu::histogram::quantiles`); mirrors
/// `percentile_select` in the WGSL.
pub fn percentile_select(
    hist: &[u32],
    ranges: &[GroupRange],
    bins: u32,
    symmetric: bool,
    (p_lo, p_hi): (f32, f32),
) -> Vec<GroupRange> {
    ranges
        .iter()
        .zip(hist.chunks(bins as usize))
        .map(|(r, h)| {
            let n: u32 = h.iter().sum();
            if n == 0 {
                return *r;
            }
            let (lo, hi) = hist_span(r, symmetric);
            let width = (hi - lo) / bins as f32;
            let rank = |p: f32| ((p * n as f32).ceil() as u32).max(1);
            let top = hi.min(lo + (bin_at_rank(h, rank(p_hi)) + 1) as f32 * width);
            if symmetric {
                GroupRange {
                    lo: -top,
                    hi: top,
                    ..*r
                }
            } else {
                let bottom = lo.max(lo + bin_at_rank(h, rank(p_lo)) as f32 * width);
                GroupRange {
                    lo: bottom,
                    hi: top,
                    ..*r
                }
            }
        })
        .collect()
}
