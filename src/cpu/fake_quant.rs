//! CPU twin of `shaders/fake_quant.wgsl`: batched affine fake quantization over host slices,
//! parallel with rayon, with the plain reference beside the fast path.

use rayon::prelude::*;

use crate::affine::{
    AffineSegment, Layout, MAGIC_EXACT, ROUND_MAGIC, check_segments, dequantize_code, quantize_code,
};
use crate::error::Result;

/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const TASK_ELEMS: usize = 1 << 16;

/// Fake-quantizes each segment of `src` into `dst`.
pub fn fake_quant(
    src: &[f32],
    dst: &mut [f32],
    scale: &[f32],
    zero: &[i32],
    segments: &[AffineSegment],
) -> Result<()> {
    check_segments(
        "fake_quant",
        segments,
        (Layout::Elements, src.len()),
        (Layout::Elements, dst.len()),
        scale.len().min(zero.len()),
    )?;
    for seg in segments {
        let input = &src[seg.src as usize..][..seg.len as usize];
        let output = &mut dst[seg.dst as usize..][..seg.len as usize];
        output
            .par_chunks_mut(TASK_ELEMS)
            .enumerate()
            .for_each(|(t, out)| {
                let first = t * TASK_ELEMS;
                let input = &input[first..first + out.len()];
                run_groups(seg, first, Some(input), out, scale, zero);
            });
    }
    Ok(())
}

/// Fake-quantizes each segment of `data` in place (`src` must equal `dst` in every segment).
pub fn fake_quant_inplace(
    data: &mut [f32],
    scale: &[f32],
    zero: &[i32],
    segments: &[AffineSegment],
) -> Result<()> {
    check_segments(
        "fake_quant_inplace",
        segments,
        (Layout::Elements, data.len()),
        (Layout::Elements, data.len()),
        scale.len().min(zero.len()),
    )?;
    if let Some(seg) = segments.iter().find(|s| s.src != s.dst) {
        return Err(crate::error::Error::param(
            "fake_quant_inplace",
            format!("segment {seg:?} has src != dst"),
        ));
    }
    for seg in segments {
        let part = &mut data[seg.dst as usize..][..seg.len as usize];
        part.par_chunks_mut(TASK_ELEMS)
            .enumerate()
            .for_each(|(t, out)| run_groups(seg, t * TASK_ELEMS, None, out, scale, zero));
    }
    Ok(())
}

/// Processes elements `[first, first + out.len())` of a segment, one group run at a time;
/// `input == None` reads `out` itself (in place).
fn run_groups(
    seg: &AffineSegment,
    first: usize,
    input: Option<&[f32]>,
    out: &mut [f32],
    scale: &[f32],
    zero: &[i32],
) {
    let group_len = seg.group_len as usize;
    let mut i = 0;
    while i < out.len() {
        let e = first + i;
        let in_group = (seg.group_phase as usize + e) % group_len;
        let run = (group_len - in_group).min(out.len() - i);
        let g = seg.group_of(e);
        let (s, z) = (scale[g], zero[g]);
        // round(clamp(x/s, qmin−z, qmax−z)) equals clamp(round(x/s)+z, qmin, qmax) − z because
        // the bounds are integers and rounding is monotone.
        let lo = (i64::from(seg.qmin) - i64::from(z)) as f32;
        let hi = (i64::from(seg.qmax) - i64::from(z)) as f32;
        let part_in = input.map(|x| &x[i..i + run]);
        if lo < -MAGIC_EXACT || hi > MAGIC_EXACT {
            // A zero point far outside the code range: the magic rounding would be inexact.
            let (qmin, qmax) = (seg.qmin, seg.qmax);
            let fq = |x: f32| dequantize_code(quantize_code(x, s, z, qmin, qmax), s, z);
            let out = &mut out[i..i + run];
            match part_in {
                Some(x) => out.iter_mut().zip(x).for_each(|(y, &x)| *y = fq(x)),
                None => out.iter_mut().for_each(|y| *y = fq(*y)),
            }
        } else {
            fake_quant_run(part_in, &mut out[i..i + run], s, lo, hi);
        }
        i += run;
    }
}

/// One (scale, range) run, compiled for AVX2 when the CPU has it.
fn fake_quant_run(input: Option<&[f32]>, out: &mut [f32], s: f32, lo: f32, hi: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { fake_quant_run_avx2(input, out, s, lo, hi) };
            return;
        }
    }
    fake_quant_run_portable(input, out, s, lo, hi);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fake_quant_run_avx2(input: Option<&[f32]>, out: &mut [f32], s: f32, lo: f32, hi: f32) {
    fake_quant_run_portable(input, out, s, lo, hi);
}

#[inline(always)]
fn fake_quant_run_portable(input: Option<&[f32]>, out: &mut [f32], s: f32, lo: f32, hi: f32) {
    let fq = |x: f32| {
        let v = (x / s).max(lo).min(hi);
        ((v + ROUND_MAGIC) - ROUND_MAGIC) * s
    };
    match input {
        Some(input) => out.iter_mut().zip(input).for_each(|(y, &x)| *y = fq(x)),
        None => out.iter_mut().for_each(|y| *y = fq(*y)),
    }
}

/// The plain form: one element at a time through [`quantize_code`] and [`dequantize_code`].
pub fn fake_quant_reference(
    src: &[f32],
    dst: &mut [f32],
    scale: &[f32],
    zero: &[i32],
    segments: &[AffineSegment],
) -> Result<()> {
    check_segments(
        "fake_quant_reference",
        segments,
        (Layout::Elements, src.len()),
        (Layout::Elements, dst.len()),
        scale.len().min(zero.len()),
    )?;
    for seg in segments {
        for i in 0..seg.len as usize {
            let g = seg.group_of(i);
            let q = quantize_code(
                src[seg.src as usize + i],
                scale[g],
                zero[g],
                seg.qmin,
                seg.qmax,
            );
            dst[seg.dst as usize + i] = dequantize_code(q, scale[g], zero[g]);
        }
    }
    Ok(())
}
