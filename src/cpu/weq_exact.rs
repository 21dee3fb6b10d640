//! The exact weighted-entropy quantizer of weights (ALGORITHMS.md §3; Park, Ahn, Yoo, CVPR
//! 2017, Algorithm 1), the reference the GPU's histogram form is measured against: sort the
//! magnitudes, prefix-sum counts and w², start from equal populations, and sweep every inner
//! boundary to the position maximising S until a sweep moves none. In f64 throughout.
//!
//! Choice the paper leaves open: boundaries sit only between distinct magnitudes. Quantization
//! compares values with boundaries, so equal magnitudes always share a level; a cluster split
//! inside a run of ties would not be the partition the quantizer applies.

use rayon::prelude::*;

use super::weq_sweep::assemble;
use crate::error::{Error, Result};

/// Per-group outcome of the exact algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExactInfo {
    /// Weighted entropy S (units of w²).
    pub entropy: f64,
    /// Sweeps run (the last moved nothing, unless the cap was reached).
    pub sweeps: u32,
    /// Non-empty magnitude clusters.
    pub clusters: u32,
}

/// Candidates per rayon task when one boundary's range is long.
const PAR_CANDIDATES: usize = 1 << 14;

/// A group's distinct magnitudes with prefix counts and prefix Σw² (`len + 1` entries).
struct Sorted {
    values: Vec<f32>,
    count: Vec<u64>,
    energy: Vec<f64>,
}

fn sorted_magnitudes(g: &[f32]) -> Sorted {
    // Bits of non-negative floats sort like the floats.
    let mut keys: Vec<u32> = g.iter().map(|x| x.abs().to_bits()).collect();
    if keys.len() > 1 << 16 {
        keys.par_sort_unstable();
    } else {
        keys.sort_unstable();
    }
    let mut s = Sorted {
        values: Vec::new(),
        count: vec![0],
        energy: vec![0.0],
    };
    let mut i = 0;
    while i < keys.len() {
        let j = i + keys[i..].partition_point(|&k| k == keys[i]);
        let v = f32::from_bits(keys[i]);
        let (c, e) = (s.count[s.count.len() - 1], s.energy[s.energy.len() - 1]);
        s.values.push(v);
        s.count.push(c + (j - i) as u64);
        s.energy
            .push(e + (j - i) as f64 * f64::from(v) * f64::from(v));
        i = j;
    }
    s
}

impl Sorted {
    /// E·(ln 2N − ln n) of distinct values `[a, b)`; 0 when empty.
    #[inline]
    fn term(&self, a: usize, b: usize, ln2n: f64) -> f64 {
        let n = self.count[b] - self.count[a];
        if n == 0 {
            return 0.0;
        }
        (self.energy[b] - self.energy[a]) * (ln2n - (n as f64).ln())
    }
}

/// The best of two candidates (value, position): higher value, then lower position.
fn better(x: (f64, usize), y: (f64, usize)) -> (f64, usize) {
    if y.0 > x.0 || (y.0 == x.0 && y.1 < x.1) {
        y
    } else {
        x
    }
}

fn exact_group(g: &[f32], h: usize, max_sweeps: u32) -> (Vec<f32>, Vec<f32>, ExactInfo) {
    let s = sorted_magnitudes(g);
    let d = s.values.len();
    let total = s.count[d];
    let ln2n = (2.0 * total.max(1) as f64).ln();
    let hu = h as u64;
    // Equal population: boundary j at the first position where the count reaches ceil(j·N/H).
    let mut bnd: Vec<usize> = (0..=hu)
        .map(|j| {
            if j == hu {
                d
            } else {
                s.count[..d].partition_point(|&c| c < (j * total).div_ceil(hu))
            }
        })
        .collect();
    let mut sweeps = 0;
    loop {
        let mut moved = false;
        for j in 1..h {
            let (a, c, cur) = (bnd[j - 1], bnd[j + 1], bnd[j]);
            let eval = |k: usize| (s.term(a, k, ln2n) + s.term(k, c, ln2n), k);
            let best = if c - a > PAR_CANDIDATES {
                (a..c + 1)
                    .into_par_iter()
                    .with_min_len(PAR_CANDIDATES)
                    .map(eval)
                    .reduce(|| (-1.0, usize::MAX), better)
            } else {
                (a..=c).map(eval).fold((-1.0, usize::MAX), better)
            };
            // Only a strict gain moves a boundary, so S rises every move and sweeps end.
            if best.0 > eval(cur).0 {
                bnd[j] = best.1;
                moved = true;
            }
        }
        sweeps += 1;
        if !moved || sweeps >= max_sweeps {
            break;
        }
    }
    let (mut r, mut b, mut entropy) = (Vec::new(), Vec::new(), 0.0);
    for n in 0..h {
        let (lo, hi) = (bnd[n], bnd[n + 1]);
        let count = s.count[hi] - s.count[lo];
        if count == 0 {
            continue;
        }
        r.push(((s.energy[hi] - s.energy[lo]) / count as f64).sqrt() as f32);
        b.push(s.values[lo]);
        entropy += s.term(lo, hi, ln2n);
    }
    let info = ExactInfo {
        entropy: entropy / total.max(1) as f64,
        sweeps,
        clusters: r.len().max(1) as u32,
    };
    let (levels, thresholds) = assemble(&r, &b, h);
    (levels, thresholds, info)
}

/// Levels and thresholds (`2^bits` per group, groups of `group_len` consecutive elements) and
/// per-group info, by the exact algorithm with at most `max_sweeps` sweeps.
pub fn weq_exact(
    x: &[f32],
    group_len: usize,
    bits: u32,
    max_sweeps: u32,
) -> Result<(Vec<f32>, Vec<f32>, Vec<ExactInfo>)> {
    if !(1..=8).contains(&bits) || group_len == 0 || !x.len().is_multiple_of(group_len) {
        return Err(Error::param(
            "weq_exact",
            format!("{bits} bits, groups of {group_len} in {} elements", x.len()),
        ));
    }
    let h = 1usize << (bits - 1);
    let per: Vec<_> = x
        .par_chunks(group_len)
        .map(|g| exact_group(g, h, max_sweeps))
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

/// The weighted entropy S of every group under the magnitude partition its thresholds set
/// (`2^bits` per group as [`assemble`] lays them out: |w| is in cluster n when b_n ≤ |w| <
/// b_{n+1}), computed exactly in f64 from the data.
pub fn partition_entropy(x: &[f32], group_len: usize, bits: u32, thresholds: &[f32]) -> Vec<f64> {
    let h = 1usize << (bits - 1);
    x.par_chunks(group_len)
        .zip(thresholds.par_chunks(2 * h))
        .map(|(g, t)| {
            let bounds = &t[h..2 * h - 1];
            let mut count = vec![0u64; h];
            let mut energy = vec![0f64; h];
            for &v in g {
                let n = bounds.partition_point(|&b| b <= v.abs());
                count[n] += 1;
                energy[n] += f64::from(v) * f64::from(v);
            }
            let total = g.len() as f64;
            count
                .iter()
                .zip(&energy)
                .filter(|(c, _)| **c > 0)
                .map(|(&c, &e)| -(e / total) * (c as f64 / total / 2.0).ln())
                .sum()
        })
        .collect()
}
