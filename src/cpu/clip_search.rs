//! CPU twin of `shaders/clip_search.wgsl`: the MSE-optimal clip ratio per group from the same
//! K candidates, errors accumulated in f64.

use rayon::prelude::*;

use crate::affine::{AffineScheme, GroupRange, dequantize_code, quantize_code};
use crate::error::{Error, Result};

/// Elements per rayon task inside one large group.
const TASK_ELEMS: usize = 1 << 14;

/// Candidate `k` of `candidates`: the range scaled by `(K − k)/K`; mirrors `clipped` in the WGSL.
pub fn clipped(r: &GroupRange, k: u32, candidates: u32) -> GroupRange {
    let ratio = (candidates - k) as f32 / candidates as f32;
    GroupRange {
        lo: r.lo * ratio,
        hi: r.hi * ratio,
        ..*r
    }
}

/// Squared error of fake-quantizing `x` with the range `c` under `scheme`.
pub fn clip_error(x: &[f32], c: &GroupRange, scheme: &AffineScheme) -> f64 {
    let (s, z) = scheme.params_from_range(c.lo, c.hi);
    let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
    x.iter()
        .filter(|v| v.is_finite())
        .map(|&v| {
            let d = v - dequantize_code(quantize_code(v, s, z, qmin, qmax), s, z);
            f64::from(d) * f64::from(d)
        })
        .sum()
}

/// For every group of `x`, the candidate range with the least squared error (first minimum).
pub fn clip_search(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    scheme: &AffineScheme,
    candidates: u32,
) -> Result<Vec<GroupRange>> {
    if group_len == 0 || !x.len().is_multiple_of(group_len) || x.len() / group_len != ranges.len() {
        return Err(Error::shape(
            "clip_search",
            "one range per group of the input is needed",
        ));
    }
    if candidates == 0 {
        return Err(Error::param("clip_search", "no candidate ratios"));
    }
    let best_of = |g: &[f32], r: &GroupRange, parallel: bool| {
        let errors = (0..candidates).map(|k| {
            let c = clipped(r, k, candidates);
            if parallel {
                g.par_chunks(TASK_ELEMS)
                    .map(|p| clip_error(p, &c, scheme))
                    .sum()
            } else {
                clip_error(g, &c, scheme)
            }
        });
        let mut best = (f64::INFINITY, 0);
        for (k, e) in errors.enumerate() {
            if e < best.0 {
                best = (e, k as u32);
            }
        }
        clipped(r, best.1, candidates)
    };
    Ok(if group_len >= TASK_ELEMS {
        x.chunks(group_len)
            .zip(ranges)
            .map(|(g, r)| best_of(g, r, true))
            .collect()
    } else {
        x.par_chunks(group_len)
            .zip(ranges.par_iter())
            .map(|(g, r)| best_of(g, r, false))
            .collect()
    })
}
