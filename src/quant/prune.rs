//! Magnitude pruning (Deep Compression §2, Han, Mao, Dally 2016; ALGORITHMS.md §5): the
//! smallest-magnitude fraction S of a tensor's weights is dropped, recorded as a keep-mask
//! (one bit per element, `format::pack` layout) beside the codes.
//!
//! The threshold t is the ⌊S·n⌉-th smallest |w| (found on the host by selection, O(n)), and the
//! device keeps an element when `|w| > t`. Weights tied with t would all be pruned (a constant
//! tensor would lose every weight), so [`keep_mask`] then gives back the tied weights past the
//! quota, the last ones in flat order: exactly ⌊S·n⌉ weights are pruned, whatever the ties.

use crate::affine::AffineSegment;
use crate::cpu;
use crate::error::{Error, Result};
use crate::format::pack;
use crate::gpu::{self, ElemType, GpuTensor};

use super::Backend;

/// The magnitude threshold that prunes the ⌊S·n⌉ smallest |w| (−inf when nothing is pruned).
pub fn magnitude_threshold(data: &[f32], sparsity: f32) -> Result<f32> {
    if !(0.0..=1.0).contains(&sparsity) {
        return Err(Error::param(
            "prune",
            format!("sparsity {sparsity} outside [0, 1]"),
        ));
    }
    let k = (f64::from(sparsity) * data.len() as f64).round() as usize;
    if k == 0 {
        return Ok(f32::NEG_INFINITY);
    }
    let mut mags: Vec<f32> = data.iter().map(|v| v.abs()).collect();
    let (_, t, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
    Ok(*t)
}

/// The keep-mask `|w| > threshold` of `data`, on `backend`.
pub fn mask(backend: &Backend<'_>, data: &[f32], threshold: f32) -> Result<Vec<u32>> {
    let seg = AffineSegment::codebook(data.len(), data.len().max(1), 1);
    let words = pack::packed_words(data.len(), 1);
    if data.is_empty() {
        return Ok(Vec::new());
    }
    match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, &[data.len()])?;
            let t = GpuTensor::from_f32(ctx, &[threshold], &[1])?;
            let out = GpuTensor::zeros(ctx, &[words], ElemType::U32)?;
            gpu::prune::prune_mask(ctx, &input, &out, &t, &[seg])?;
            out.to_u32(ctx)
        }
        Backend::Cpu => {
            let mut out = vec![0u32; words];
            cpu::prune::prune_mask(data, &mut out, &[threshold], &[seg])?;
            Ok(out)
        }
    }
}

/// The keep-mask pruning exactly the ⌊S·n⌉ smallest |w| of `data` on `backend`; of the
/// weights tied at the threshold, the first ones in flat order are pruned.
pub fn keep_mask(backend: &Backend<'_>, data: &[f32], sparsity: f32) -> Result<Vec<u32>> {
    let threshold = magnitude_threshold(data, sparsity)?;
    let mut words = mask(backend, data, threshold)?;
    let want = (f64::from(sparsity) * data.len() as f64).round() as usize;
    let pruned = data.len() - kept(&words);
    if pruned > want {
        // Pruned beyond the quota are all tied at the threshold: keep the last of them.
        let mut excess = pruned - want;
        for (i, v) in data.iter().enumerate().rev() {
            if excess == 0 {
                break;
            }
            if v.abs() == threshold {
                words[i / 32] |= 1 << (i % 32);
                excess -= 1;
            }
        }
    }
    Ok(words)
}

/// Elements a keep-mask keeps.
pub fn kept(mask: &[u32]) -> usize {
    mask.iter().map(|w| w.count_ones() as usize).sum()
}
