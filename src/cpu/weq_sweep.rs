//! CPU twin of `shaders/weq_sweep.wgsl`: WEQ cluster-boundary sweeps over a group's histogram
//! prefix sums (same start, same red-black boundary order, candidate order and tie rule, f32
//! like the shader), and the assembly of signed levels and thresholds shared with the exact
//! algorithm.

use rayon::prelude::*;

use super::weq_histogram::{Prefix, bin_width, span_exponent};
use crate::affine::GroupRange;
use crate::error::{Error, Result};
pub use crate::kernel::weq::WeqInfo;

/// Most magnitude clusters (8 bits).
pub const MAX_CLUSTERS: usize = 128;

/// The smallest f32 above a finite `x`; mirrors `next_up` in the WGSL.
fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::MIN_POSITIVE;
    }
    let b = x.to_bits();
    f32::from_bits(if x < 0.0 { b - 1 } else { b + 1 })
}

/// Signed levels and thresholds (`2H` each) from the non-empty clusters' representatives `r`
/// and first magnitudes `b` (ascending; `b[0]` unused). Empty clusters go to the top with
/// doubled levels and +inf bounds, levels are forced positive and strictly increasing, and
/// magnitudes mirror by sign: codes `0..H` are `−r_{H−1}..−r_0`, codes `H..2H` are
/// `r_0..r_{H−1}`. The thresholds are what `codebook_assign` counts: a value's code is the
/// number at or below it, so |w| ≥ b_n lands in cluster n for either sign (the negative
/// threshold sits just above −b_n). Mirrors `finish_group` in the WGSL.
pub fn assemble(r: &[f32], b: &[f32], h: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut r, mut b) = (r.to_vec(), b.to_vec());
    if r.is_empty() {
        r.push(0.0);
        b.push(0.0);
    }
    while r.len() < h {
        r.push(r[r.len() - 1] * 2.0);
        b.push(f32::INFINITY);
    }
    r[0] = r[0].max(f32::MIN_POSITIVE);
    for n in 1..h {
        r[n] = r[n].max(next_up(r[n - 1])).min(f32::MAX);
    }
    let mut levels = vec![0f32; 2 * h];
    let mut thresholds = vec![0f32; 2 * h];
    for n in 0..h {
        levels[h - 1 - n] = -r[n];
        levels[h + n] = r[n];
    }
    for n in 1..h {
        thresholds[h - 1 - n] = if b[n] == f32::INFINITY {
            f32::NEG_INFINITY
        } else {
            next_up(-b[n])
        };
        thresholds[h - 1 + n] = b[n];
    }
    thresholds[h - 1] = 0.0;
    thresholds[2 * h - 1] = f32::INFINITY;
    (levels, thresholds)
}

/// E·(ln 2N − ln n) of the cluster of bins `[a, b)`; mirrors `term` in the WGSL.
#[inline]
fn term(p: &[Prefix], a: usize, b: usize, ln2n: f32) -> f32 {
    let n = p[b].count - p[a].count;
    if n == 0 {
        return 0.0;
    }
    (p[b].energy - p[a].energy) * (ln2n - (n as f32).ln())
}

/// Sweeps one group's prefix sums (`bins + 1` entries): its levels, thresholds and info.
fn sweep_group(
    p: &[Prefix],
    h: usize,
    width: f32,
    max_sweeps: u32,
) -> (Vec<f32>, Vec<f32>, WeqInfo) {
    let bins = p.len() - 1;
    let total = p[bins].count;
    let ln2n = (total.max(1) as f32).ln() + std::f32::consts::LN_2;
    let hu = h as u32;
    let mut bnd: Vec<usize> = (0..=h)
        .map(|j| {
            let j = j as u32;
            let target = (total / hu) * j + ((total % hu) * j).div_ceil(hu);
            if j == hu {
                bins
            } else {
                p[..bins].partition_point(|e| e.count < target)
            }
        })
        .collect();
    let mut sweeps = 0;
    loop {
        let mut moved = false;
        // Red-black order: odd boundaries, then even ones (those of one parity do not
        // interact, so the GPU moves them together).
        for j in (1..h).step_by(2).chain((2..h).step_by(2)) {
            let (a, c, cur) = (bnd[j - 1], bnd[j + 1], bnd[j]);
            let (mut bv, mut bk, mut cv) = (-1.0f32, usize::MAX, 0.0f32);
            for k in a..=c {
                let v = term(p, a, k, ln2n) + term(p, k, c, ln2n);
                if v > bv {
                    (bv, bk) = (v, k);
                }
                if k == cur {
                    cv = v;
                }
            }
            if bv > cv {
                bnd[j] = bk;
                moved = true;
            }
        }
        sweeps += 1;
        if !moved || sweeps >= max_sweeps {
            break;
        }
    }
    let (mut r, mut b, mut s) = (Vec::new(), Vec::new(), 0f32);
    for n in 0..h {
        let (lo, hi) = (bnd[n], bnd[n + 1]);
        let count = p[hi].count - p[lo].count;
        if count == 0 {
            continue;
        }
        let e = p[hi].energy - p[lo].energy;
        r.push((e.max(0.0) / count as f32).sqrt() * width);
        // The lower edge of the cluster's first non-empty bin; mirrors `first_filled`.
        let first = lo + p[lo + 1..=hi].partition_point(|e| e.count == p[lo].count);
        b.push(first as f32 * width);
        s += term(p, lo, hi, ln2n);
    }
    let info = WeqInfo {
        entropy: s * width * width / total.max(1) as f32,
        sweeps,
        clusters: r.len().max(1) as u32,
        _pad: 0,
    };
    let (levels, thresholds) = assemble(&r, &b, h);
    (levels, thresholds, info)
}

/// Levels and thresholds (`2^bits` per group) and per-group info from prefix sums of
/// `bins` bins per group and the groups' ranges.
pub fn weq_sweep(
    prefix: &[Prefix],
    ranges: &[GroupRange],
    bins: u32,
    bits: u32,
    max_sweeps: u32,
) -> Result<(Vec<f32>, Vec<f32>, Vec<WeqInfo>)> {
    if !(1..=8).contains(&bits) || prefix.len() != ranges.len() * (bins as usize + 1) {
        return Err(Error::param(
            "weq_sweep",
            format!(
                "{bits} bits, {} prefix entries for {} groups",
                prefix.len(),
                ranges.len()
            ),
        ));
    }
    let h = 1usize << (bits - 1);
    let per: Vec<_> = prefix
        .par_chunks(bins as usize + 1)
        .zip(ranges.par_iter())
        .map(|(p, r)| sweep_group(p, h, bin_width(span_exponent(r), bins), max_sweeps))
        .collect();
    let mut levels = Vec::with_capacity(per.len() * 2 * h);
    let mut thresholds = Vec::with_capacity(per.len() * 2 * h);
    let mut info = Vec::with_capacity(per.len());
    for (l, t, i) in per {
        levels.extend(l);
        thresholds.extend(t);
        info.push(i);
    }
    Ok((levels, thresholds, info))
}
