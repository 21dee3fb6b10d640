//! CPU twin of `shaders/kmeans.wgsl`: per-cluster sums and counts of values grouped by their
//! codes (kept elements only under a keep-mask), codes changed since the last assignment, and
//! the k-means centroid update. Fixed chunks summed in order, in f64 (the GPU sums in f32).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::pack::{self, get_code};

/// Elements per rayon task; a multiple of 32 so tasks start on mask and code word boundaries.
const TASK_ELEMS: usize = 1 << 16;

/// Per-cluster totals of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterStats {
    /// Sum of the values of each cluster.
    pub sums: Vec<f64>,
    /// Elements of each cluster.
    pub counts: Vec<u64>,
    /// Codes that differ from the previous assignment.
    pub changed: u64,
}

impl ClusterStats {
    fn new(k: usize) -> Self {
        Self {
            sums: vec![0.0; k],
            counts: vec![0; k],
            changed: 0,
        }
    }

    fn merge(mut self, o: &Self) -> Self {
        for (a, b) in self.sums.iter_mut().zip(&o.sums) {
            *a += b;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.changed += o.changed;
        self
    }
}

fn check(
    values: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
) -> Result<()> {
    let n = values.len();
    let words = pack::packed_words(n, bits);
    if !(1..=8).contains(&bits) {
        return Err(Error::param("kmeans", format!("bits {bits} outside 1..=8")));
    }
    if codes.len() != words
        || old.is_some_and(|o| o.len() != words)
        || mask.is_some_and(|m| m.len() != pack::packed_words(n, 1))
    {
        return Err(Error::shape(
            "kmeans",
            "values, codes and mask must cover the same elements",
        ));
    }
    Ok(())
}

/// Elements `[first, end)` folded into `stats`.
fn fold_range(
    stats: &mut ClusterStats,
    (values, codes, bits): (&[f32], &[u32], u32),
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
    range: std::ops::Range<usize>,
) {
    for i in range {
        if mask.is_some_and(|m| get_code(m, i, 1) == 0) {
            continue;
        }
        let code = get_code(codes, i, bits);
        stats.sums[code as usize] += f64::from(values[i]);
        stats.counts[code as usize] += 1;
        if old.is_some_and(|o| get_code(o, i, bits) != code) {
            stats.changed += 1;
        }
    }
}

/// Per-cluster sums and counts of `values` by their packed `codes` (kept elements only when
/// `mask` is given; codes differing from `old` counted when given), in parallel chunks.
pub fn cluster_sums(
    values: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
) -> Result<ClusterStats> {
    check(values, codes, bits, mask, old)?;
    let k = 1usize << bits;
    let n = values.len();
    let parts: Vec<ClusterStats> = (0..n.div_ceil(TASK_ELEMS))
        .into_par_iter()
        .map(|t| {
            let mut s = ClusterStats::new(k);
            let range = t * TASK_ELEMS..((t + 1) * TASK_ELEMS).min(n);
            fold_range(&mut s, (values, codes, bits), mask, old, range);
            s
        })
        .collect();
    Ok(parts.iter().fold(ClusterStats::new(k), ClusterStats::merge))
}

/// [`cluster_sums`] in one sequential loop: the plain reference.
pub fn cluster_sums_reference(
    values: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
) -> Result<ClusterStats> {
    check(values, codes, bits, mask, old)?;
    let mut s = ClusterStats::new(1 << bits);
    fold_range(&mut s, (values, codes, bits), mask, old, 0..values.len());
    Ok(s)
}

/// Moves each non-empty cluster's centroid to its mean; empty clusters keep theirs.
pub fn update_centroids(centroids: &mut [f32], stats: &ClusterStats) {
    for ((c, &s), &n) in centroids.iter_mut().zip(&stats.sums).zip(&stats.counts) {
        if n > 0 {
            *c = (s / n as f64) as f32;
        }
    }
}
