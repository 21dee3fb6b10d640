//! Codebook quantization shared by WEQ, linear/exponential discretization and k-means: codes
//! from sorted per-group thresholds and decoding through per-group level tables, on either
//! backend.

use crate::affine::AffineSegment;
use crate::cpu;
use crate::error::{Error, Result};
use crate::format::{Encoding, Granularity, QuantizedTensor};
use crate::gpu::{self, ElemType, GpuTensor};

use super::{Backend, check_finite};

/// The single segment of a whole tensor for the codebook kernels.
pub fn segment(numel: usize, group_len: usize, bits: u32) -> AffineSegment {
    AffineSegment::codebook(numel, group_len, bits)
}

/// Nearest-level thresholds for sorted levels: `2^bits` levels per group in, the midpoints
/// between neighbours out (ties go to the upper level), the last entry of each group +inf.
pub fn midpoint_thresholds(levels: &[f32], bits: u32) -> Vec<f32> {
    let per = 1usize << bits;
    levels
        .chunks(per)
        .flat_map(|g| {
            (0..per).map(move |j| {
                if j + 1 < per {
                    // Halving each level first cannot overflow.
                    g[j] * 0.5 + g[j + 1] * 0.5
                } else {
                    f32::INFINITY
                }
            })
        })
        .collect()
}

fn check_table(op: &str, table: &[f32], groups: usize, bits: u32) -> Result<()> {
    if !(1..=16).contains(&bits) {
        return Err(Error::param(op, format!("bits {bits} outside 1..=16")));
    }
    if table.len() != groups << bits {
        return Err(Error::shape(
            op,
            format!(
                "{} table entries for {groups} groups of {bits} bits",
                table.len()
            ),
        ));
    }
    Ok(())
}

/// Packed codes of `data` (shape `shape`, groups by `granularity`): the number of the group's
/// thresholds at or below each value.
pub fn assign(
    backend: &Backend<'_>,
    data: &[f32],
    shape: &[usize],
    granularity: Granularity,
    bits: u32,
    thresholds: &[f32],
) -> Result<Vec<u32>> {
    let group_len = granularity.group_len(shape)?;
    check_table("codebook::assign", thresholds, data.len() / group_len, bits)?;
    let seg = segment(data.len(), group_len, bits);
    match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, &[data.len()])?;
            let table = GpuTensor::from_f32(ctx, thresholds, &[thresholds.len()])?;
            let codes = GpuTensor::zeros(ctx, &[seg.packed_words()], ElemType::U32)?;
            gpu::codebook_assign::codebook_assign(ctx, &input, &codes, &table, &[seg])?;
            codes.to_u32(ctx)
        }
        Backend::Cpu => {
            let mut codes = vec![0u32; seg.packed_words()];
            cpu::codebook_assign::codebook_assign(data, &mut codes, thresholds, &[seg])?;
            Ok(codes)
        }
    }
}

/// A codebook tensor with each value mapped to its nearest level (`2^bits` sorted levels per
/// group).
pub fn quantize_nearest(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    granularity: Granularity,
    bits: u32,
    levels: Vec<f32>,
) -> Result<QuantizedTensor> {
    check_finite(name, data)?;
    let thresholds = midpoint_thresholds(&levels, bits);
    let codes = assign(backend, data, shape, granularity, bits, &thresholds)?;
    let qt = QuantizedTensor {
        shape: shape.to_vec(),
        bits,
        granularity,
        codes,
        encoding: Encoding::Codebook {
            levels,
            thresholds: None,
        },
        mask: None,
    };
    qt.validate()?;
    Ok(qt)
}

/// Decodes a codebook tensor to f32 (the keep-mask, if any, is applied by
/// [`super::dequantize`]).
pub fn dequantize(backend: &Backend<'_>, qt: &QuantizedTensor) -> Result<Vec<f32>> {
    qt.validate()?;
    let Encoding::Codebook { levels, .. } = &qt.encoding else {
        return Err(Error::param(
            "codebook::dequantize",
            "not a codebook tensor",
        ));
    };
    let seg = segment(qt.numel(), qt.group_len()?, qt.bits);
    match backend {
        Backend::Gpu(ctx) => {
            let codes = GpuTensor::from_u32(ctx, &qt.codes, &[qt.codes.len()])?;
            let table = GpuTensor::from_f32(ctx, levels, &[levels.len()])?;
            let out = GpuTensor::zeros(ctx, &[qt.numel()], ElemType::F32)?;
            gpu::codebook_dequantize::codebook_dequantize(ctx, &codes, &out, &table, &[seg])?;
            out.to_f32(ctx)
        }
        Backend::Cpu => {
            let mut out = vec![0f32; qt.numel()];
            cpu::codebook_dequantize::codebook_dequantize(&qt.codes, &mut out, levels, &[seg])?;
            Ok(out)
        }
    }
}

/// Zeroes the elements a keep-mask (1 bit per element, `format::pack` layout) drops.
pub fn apply_mask(mut values: Vec<f32>, mask: Option<&[u32]>) -> Vec<f32> {
    if let Some(mask) = mask {
        for (i, v) in values.iter_mut().enumerate() {
            if crate::format::pack::get_code(mask, i, 1) == 0 {
                *v = 0.0;
            }
        }
    }
    values
}
