//! CPU twin of `shaders/weq_act_forward.wgsl`: the fake-quant forward of the weighted-entropy
//! log quantizer of activations (ALGORITHMS.md §3), ReLU merged. Codes and levels:
//!
//! - code 0 is the level 0: finite x ≤ 0 (and −Inf), and positive x whose log index rounds
//!   below the first level (q < 0);
//! - code c = q + 1 ≥ 1 is r_c = 2^((o + q·step)/16), with q = min(L − 2, ⌊(k − o + h)/step⌋),
//!   k = floor(16·log2 x) exact (see `weq_act_histogram`), h = step/2;
//! - NaN passes through unchanged; +Inf takes the top level.
//!
//! ⌊(k − o + h)/step⌋ is round((16·log2 x − o)/step) with ties rounded up: the boundaries
//! between levels, o + q·step + h, are integers, so a whole histogram bin [k, k + 1) lies on one
//! side of each and the histogram predicts every code exactly. Half-to-even would differ only
//! for an x exactly on a boundary, a power of two 2^((o + q·step + h)/16) with q odd.

use rayon::prelude::*;

use super::weq_act_histogram::{is_nonfinite, klog, pow16};
use crate::error::{Error, Result};

/// Code of x (bits `b`, not NaN) under `levels` = L − 1 non-zero levels, step and offset.
/// Mirrors `weq_act_code` in the WGSL.
#[inline]
pub fn code(b: u32, levels: u32, step: u32, offset: i32) -> u32 {
    // x ≤ 0: sign set, or +0.
    if b == 0 || b >= 0x8000_0000 {
        return 0;
    }
    let t = klog(b) - offset + (step / 2) as i32;
    if t < 0 {
        return 0;
    }
    (t as u32 / step).min(levels - 1) + 1
}

/// Level of code c ≥ 1: 2^((o + (c − 1)·step)/16).
#[inline]
pub fn level(c: u32, step: u32, offset: i32) -> f32 {
    pow16(offset + ((c - 1) * step) as i32)
}

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// `y = x̂` for every element of `x` at `bits` with the given step and offset.
pub fn weq_act_forward(x: &[f32], y: &mut [f32], bits: u32, step: u32, offset: i32) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::shape("weq_act_forward", "lengths differ"));
    }
    if !(1..=8).contains(&bits) || step == 0 || !step.is_multiple_of(2) {
        return Err(Error::param(
            "weq_act_forward",
            format!("{bits} bits, step {step}"),
        ));
    }
    let levels = (1u32 << bits) - 1;
    y.par_chunks_mut(TASK_ELEMS)
        .zip(x.par_chunks(TASK_ELEMS))
        .for_each(|(out, inp)| {
            for (o, v) in out.iter_mut().zip(inp) {
                let b = v.to_bits();
                *o = if is_nonfinite(b) && b & 0x7f_ffff != 0 {
                    *v
                } else {
                    match code(b, levels, step, offset) {
                        0 => 0.0,
                        c => level(c, step, offset),
                    }
                };
            }
        });
    Ok(())
}
