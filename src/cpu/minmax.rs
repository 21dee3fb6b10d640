//! CPU twin of `shaders/minmax.wgsl`: per-group ranges with non-finite counts, and their
//! exponential moving average across batches.

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};

/// Elements per rayon task inside one large group.
const TASK_ELEMS: usize = 1 << 16;

/// The range of every group of `group_len` consecutive elements of `x`.
pub fn group_ranges(x: &[f32], group_len: usize) -> Result<Vec<GroupRange>> {
    if group_len == 0 || !x.len().is_multiple_of(group_len) {
        return Err(Error::param(
            "minmax",
            format!(
                "group length {group_len} does not divide {} elements",
                x.len()
            ),
        ));
    }
    let fold = |c: &[f32]| c.iter().fold(GroupRange::EMPTY, |r, &v| r.push(v));
    Ok(if group_len >= TASK_ELEMS {
        x.chunks(group_len)
            .map(|g| {
                g.par_chunks(TASK_ELEMS)
                    .map(fold)
                    .reduce(|| GroupRange::EMPTY, GroupRange::merge)
            })
            .collect()
    } else {
        x.par_chunks(group_len).map(fold).collect()
    })
}

/// Widens `ranges` (one per group of `group_len` elements of the whole tensor) by `x`, the
/// elements `first..first + x.len()` of that tensor: a group's range gathered over pieces is
/// the one [`group_ranges`] gives for the whole group (min and max are exact in any order).
pub fn widen_ranges(
    x: &[f32],
    first: usize,
    group_len: usize,
    ranges: &mut [GroupRange],
) -> Result<()> {
    if group_len == 0 || (first + x.len()).div_ceil(group_len) > ranges.len() {
        return Err(Error::param(
            "minmax",
            format!(
                "elements {first}..{} in groups of {group_len} pass {} ranges",
                first + x.len(),
                ranges.len()
            ),
        ));
    }
    let fold = |c: &[f32]| c.iter().fold(GroupRange::EMPTY, |r, &v| r.push(v));
    let mut i = 0;
    while i < x.len() {
        let g = (first + i) / group_len;
        let end = ((g + 1) * group_len - first).min(x.len());
        let run = &x[i..end];
        let r = if run.len() >= TASK_ELEMS {
            run.par_chunks(TASK_ELEMS)
                .map(fold)
                .reduce(|| GroupRange::EMPTY, GroupRange::merge)
        } else {
            fold(run)
        };
        ranges[g] = ranges[g].merge(r);
        i = end;
    }
    Ok(())
}

/// `state ← batch` when `first`, else `state ← state + momentum·(batch − state)` per group.
pub fn ema_update(
    batch: &[GroupRange],
    state: &mut [GroupRange],
    first: bool,
    momentum: f32,
) -> Result<()> {
    if batch.len() != state.len() {
        return Err(Error::shape(
            "minmax::ema",
            "batch and state ranges differ in size",
        ));
    }
    // A side without finite values (the empty range) never enters the average; mirrors
    // `ema_update` in minmax.wgsl.
    for (s, b) in state.iter_mut().zip(batch) {
        let count = s.nonfinite + b.nonfinite;
        *s = if first {
            *b
        } else if !(b.lo <= b.hi) {
            GroupRange {
                nonfinite: count,
                ..*s
            }
        } else if !(s.lo <= s.hi) {
            GroupRange {
                nonfinite: count,
                ..*b
            }
        } else {
            GroupRange {
                lo: s.lo + momentum * (b.lo - s.lo),
                hi: s.hi + momentum * (b.hi - s.hi),
                nonfinite: count,
                _pad: 0,
            }
        };
    }
    Ok(())
}
