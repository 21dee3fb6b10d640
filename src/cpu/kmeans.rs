//! CPU twin of `shaders/kmeans.wgsl`: per-cluster sums and counts of values grouped by their
//! codes (kept elements only under a keep-mask), codes changed since the last assignment, and
//! the k-means centroid update, with the shader's f32 arithmetic in the shader's order, so both
//! devices give bit-identical centroids (on a device whose f32 division is correctly rounded).
//!
//! The order is fixed by the workgroup size and [`elems_per_thread`] alone, never by device
//! limits: thread `t = 256·w + l` sums elements `w·256·E + e·256 + l`, `e = 0..E`, per cluster
//! in `e` order from +0.0; lane `l` of cluster `j` adds the records of threads `t ≡ l (mod 256)`
//! in ascending `t`; then each 16 lanes are added in order, then the 16 block sums in order.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::pack::{self, get_code};
pub use crate::kernel::kmeans::elems_per_thread;

/// Threads of a workgroup (`WORKGROUP_SIZE` of the GPU launchers): the lanes of the combine.
pub const LANES: usize = 256;

/// Lanes added per block in the first step of the workgroup combine.
const BLOCK: usize = 16;

/// Workgroups whose records one rayon batch computes before they are folded in order.
const BATCH_WORKGROUPS: usize = 16;

/// Per-cluster totals of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterStats {
    /// Sum of the values of each cluster, in the shader's f32 order.
    pub sums: Vec<f32>,
    /// Elements of each cluster.
    pub counts: Vec<u64>,
    /// Codes that differ from the previous assignment.
    pub changed: u64,
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

/// The running lane totals of every cluster: `k × LANES` (sum, count), cluster major, and the
/// changed codes.
struct Lanes {
    sums: Vec<f32>,
    counts: Vec<u64>,
    changed: u64,
}

impl Lanes {
    fn new(k: usize) -> Self {
        Self {
            sums: vec![0.0; k * LANES],
            counts: vec![0; k * LANES],
            changed: 0,
        }
    }

    /// Adds one workgroup's records (`LANES × k`, thread major), as `kmeans_update` does.
    fn add(&mut self, rec: &Records, k: usize) {
        for l in 0..LANES {
            for j in 0..k {
                let (sum, count) = rec.records[l * k + j];
                self.sums[j * LANES + l] += sum;
                self.counts[j * LANES + l] += u64::from(count);
            }
        }
        self.changed += rec.changed;
    }

    /// The workgroup combine of `reduce_lanes`: blocks of 16 lanes in order, then the blocks.
    fn finish(self, k: usize) -> ClusterStats {
        let mut out = ClusterStats {
            sums: vec![0.0; k],
            counts: vec![0; k],
            changed: self.changed,
        };
        for j in 0..k {
            let lanes = &self.sums[j * LANES..(j + 1) * LANES];
            let mut total = 0f32;
            for block in lanes.chunks(BLOCK) {
                total += block.iter().fold(0f32, |s, &v| s + v);
            }
            out.sums[j] = total;
            out.counts[j] = self.counts[j * LANES..(j + 1) * LANES].iter().sum();
        }
        out
    }
}

/// One workgroup's per-thread records: `LANES × k` (sum, count), thread major (the pairs side
/// by side: one cache line per element).
struct Records {
    records: Vec<(f32, u32)>,
    changed: u64,
}

/// Whether element `i` is kept, its code, and whether that code changed.
#[inline]
fn element(
    (codes, bits): (&[u32], u32),
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
    i: usize,
) -> Option<(u32, bool)> {
    if mask.is_some_and(|m| get_code(m, i, 1) == 0) {
        return None;
    }
    let code = get_code(codes, i, bits);
    Some((code, old.is_some_and(|o| get_code(o, i, bits) != code)))
}

/// The records of workgroup `w`, its elements visited in memory order: element `e·256 + l`
/// of the workgroup goes to thread `l`, so each thread still adds its elements in `e` order.
fn workgroup_records(
    (values, codes, bits): (&[f32], &[u32], u32),
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
    w: usize,
) -> Records {
    let k = 1usize << bits;
    let span = LANES * elems_per_thread(bits);
    let mut rec = Records {
        records: vec![(0.0, 0); LANES * k],
        changed: 0,
    };
    // Rows of 256 elements: element `e·256 + l` of the workgroup goes to thread `l`.
    let (first, end) = (w * span, ((w + 1) * span).min(values.len()));
    for row in (first..end).step_by(LANES) {
        let row_end = (row + LANES).min(end);
        for (l, i) in (row..row_end).enumerate() {
            if let Some((code, moved)) = element((codes, bits), mask, old, i) {
                let r = l * k + code as usize;
                rec.records[r].0 += values[i];
                rec.records[r].1 += 1;
                rec.changed += u64::from(moved);
            }
        }
    }
    rec
}

/// Per-cluster sums and counts of `values` by their packed `codes` (kept elements only when
/// `mask` is given; codes differing from `old` counted when given), bit for bit the GPU's:
/// workgroups' records in parallel batches, folded into the lanes in workgroup order.
pub fn cluster_sums(
    values: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
) -> Result<ClusterStats> {
    check(values, codes, bits, mask, old)?;
    let k = 1usize << bits;
    let span = LANES * elems_per_thread(bits);
    let workgroups = values.len().div_ceil(span);
    let mut lanes = Lanes::new(k);
    let batch = BATCH_WORKGROUPS.max(2 * rayon::current_num_threads());
    for w0 in (0..workgroups).step_by(batch) {
        let records: Vec<Records> = (w0..(w0 + batch).min(workgroups))
            .into_par_iter()
            .map(|w| workgroup_records((values, codes, bits), mask, old, w))
            .collect();
        for rec in &records {
            lanes.add(rec, k);
        }
    }
    Ok(lanes.finish(k))
}

/// [`cluster_sums`] written as the shader reads: each thread's elements in a sequential loop,
/// each lane's threads in order, then the blocks. The plain reference; bit-identical.
pub fn cluster_sums_reference(
    values: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
    old: Option<&[u32]>,
) -> Result<ClusterStats> {
    check(values, codes, bits, mask, old)?;
    let (n, k, per) = (values.len(), 1usize << bits, elems_per_thread(bits));
    let threads = n.div_ceil(LANES * per) * LANES;
    let mut lane_sums = vec![vec![0f32; LANES]; k];
    let mut counts = vec![0u64; k];
    let mut changed = 0;
    for t in 0..threads {
        let (w, l) = (t / LANES, t % LANES);
        let mut sums = vec![0f32; k];
        for e in 0..per {
            let i = w * LANES * per + e * LANES + l;
            if i >= n {
                break;
            }
            if let Some((code, moved)) = element((codes, bits), mask, old, i) {
                sums[code as usize] += values[i];
                counts[code as usize] += 1;
                changed += u64::from(moved);
            }
        }
        for j in 0..k {
            lane_sums[j][l] += sums[j];
        }
    }
    let sums = lane_sums
        .iter()
        .map(|lanes| {
            let mut total = 0f32;
            for b in 0..LANES / BLOCK {
                let mut block = 0f32;
                for v in &lanes[b * BLOCK..(b + 1) * BLOCK] {
                    block += v;
                }
                total += block;
            }
            total
        })
        .collect();
    Ok(ClusterStats {
        sums,
        counts,
        changed,
    })
}

/// Moves each non-empty cluster's centroid to its mean, `sum / f32(count)` in f32 as the
/// shader's `new_centroid`; empty clusters keep theirs.
pub fn update_centroids(centroids: &mut [f32], stats: &ClusterStats) {
    for ((c, &s), &n) in centroids.iter_mut().zip(&stats.sums).zip(&stats.counts) {
        if n > 0 {
            *c = s / n as f32;
        }
    }
}
