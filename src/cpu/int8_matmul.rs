//! CPU twin of `shaders/int8_matmul.wgsl`: the full-integer matmul (int8 × int8 → int32, plus
//! int32 bias, then int32 accumulators or requantized int8) and the standalone requantization,
//! bit-identical to the GPU. `int8_accumulators_reference` is the plain i64 form.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::pack::{self, get_code, put_code};
pub use crate::kernel::int8_matmul::Int8Layer;
use crate::requant::{OutputQuant, QuantizedMultiplier, requantize as requantize_one};

/// Where the accumulators go.
#[derive(Debug)]
pub enum Int8Out<'a> {
    /// int32 accumulators, [m, n].
    Accumulators(&'a mut [i32]),
    /// int8 codes packed 4 to a word ([m·n] codes), requantized with one multiplier per
    /// column (n of them) or one for all.
    Requantized {
        /// Packed output codes.
        y: &'a mut [u32],
        /// Multipliers.
        multipliers: &'a [QuantizedMultiplier],
        /// Output quantization.
        quant: OutputQuant,
    },
}

fn check(
    op: &str,
    layer: &Int8Layer,
    x: &[u32],
    w: &[u32],
    w_zero: Option<&[i32]>,
    bias: Option<&[i32]>,
    out: &Int8Out<'_>,
) -> Result<()> {
    let (xw, ww) = layer.check(op)?;
    let n = layer.n;
    let bad = x.len() < xw
        || w.len() < ww
        || w_zero.is_some_and(|z| z.len() != n)
        || bias.is_some_and(|b| b.len() != n);
    let out_bad = match out {
        Int8Out::Accumulators(acc) => acc.len() != layer.m * n,
        Int8Out::Requantized {
            y,
            multipliers,
            quant,
        } => {
            quant.check(op)?;
            for m in multipliers.iter() {
                m.validate(op)?;
            }
            y.len() != pack::packed_words(layer.m * n, 8)
                || !(multipliers.len() == 1 || multipliers.len() == n)
        }
    };
    if bad || out_bad {
        return Err(Error::shape(
            op,
            format!("operand lengths do not match the layer {layer:?}"),
        ));
    }
    Ok(())
}

/// The int32 accumulators `Σ_k (qx − zx)(qw − zw) (+ bias)` in exact i64 arithmetic, element
/// by element, wrapped to i32 at the end (the reference; wrapping commutes with the sums, so
/// the optimized and GPU paths agree even where the true value leaves i32).
pub fn int8_accumulators_reference(
    layer: &Int8Layer,
    x: &[u32],
    w: &[u32],
    w_zero: Option<&[i32]>,
    bias: Option<&[i32]>,
) -> Result<Vec<i32>> {
    let mut acc = vec![0i32; layer.m * layer.n];
    check(
        "int8_matmul_reference",
        layer,
        x,
        w,
        w_zero,
        bias,
        &Int8Out::Accumulators(&mut acc),
    )?;
    let (m, n, k) = (layer.m, layer.n, layer.k);
    for i in 0..m {
        for r in 0..n {
            let zw = w_zero.map_or(0, |z| z[r]);
            let mut s = 0i64;
            for kk in 0..k {
                let qx = i64::from(get_code(x, i * k + kk, 8)) + i64::from(layer.x_qmin);
                let qw = i64::from(get_code(w, r * k + kk, 8)) + i64::from(layer.w_qmin);
                s += (qx - i64::from(layer.x_zero)) * (qw - i64::from(zw));
            }
            s += bias.map_or(0, |b| i64::from(b[r]));
            acc[i * n + r] = s as i32;
        }
    }
    Ok(acc)
}

/// The signed bytes `u − 128` of codes `[first, first + len)`.
fn signed_bytes(codes: &[u32], first: usize, len: usize, out: &mut Vec<i8>) {
    out.clear();
    out.extend((first..first + len).map(|i| (get_code(codes, i, 8) as u8 ^ 0x80) as i8));
}

/// Rows of W per rayon task.
const ROWS_PER_TASK: usize = 16;

/// `y = x·Wᵀ (+ bias)` in integers, as the GPU computes it: per output
/// `Σa·w − zw'·Σa − zx'·Σw + k·zx'·zw'` over signed bytes, wrapping int32.
pub fn int8_matmul(
    layer: &Int8Layer,
    x: &[u32],
    w: &[u32],
    w_zero: Option<&[i32]>,
    bias: Option<&[i32]>,
    out: Int8Out<'_>,
) -> Result<()> {
    check("int8_matmul", layer, x, w, w_zero, bias, &out)?;
    let (m, n, k) = (layer.m, layer.n, layer.k);
    let zx = layer.x_offset();
    let mut xs: Vec<Vec<i8>> = Vec::with_capacity(m);
    let mut sums_x = Vec::with_capacity(m);
    for i in 0..m {
        let mut row = Vec::new();
        signed_bytes(x, i * k, k, &mut row);
        sums_x.push(row.iter().map(|&a| i32::from(a)).sum::<i32>());
        xs.push(row);
    }
    // Accumulators transposed per task ([row][i]), scattered after.
    let blocks: Vec<Vec<i32>> = (0..n.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|t| {
            let r0 = t * ROWS_PER_TASK;
            let mut wrow = Vec::with_capacity(k);
            let mut out = Vec::with_capacity(ROWS_PER_TASK.min(n - r0) * m);
            for r in r0..(r0 + ROWS_PER_TASK).min(n) {
                signed_bytes(w, r * k, k, &mut wrow);
                let sw: i32 = wrow.iter().map(|&b| i32::from(b)).sum();
                let zw = layer.w_offset(w_zero.map_or(0, |z| z[r]));
                let b = bias.map_or(0, |b| b[r]);
                for (xi, &sa) in xs.iter().zip(&sums_x) {
                    let dot = dot_i8(xi, &wrow);
                    let acc = dot
                        .wrapping_sub(zw.wrapping_mul(sa))
                        .wrapping_sub(zx.wrapping_mul(sw))
                        .wrapping_add((k as i32).wrapping_mul(zx).wrapping_mul(zw))
                        .wrapping_add(b);
                    out.push(acc);
                }
            }
            out
        })
        .collect();
    let acc_at = |i: usize, r: usize| blocks[r / ROWS_PER_TASK][(r % ROWS_PER_TASK) * m + i];
    match out {
        Int8Out::Accumulators(acc) => {
            for i in 0..m {
                for r in 0..n {
                    acc[i * n + r] = acc_at(i, r);
                }
            }
        }
        Int8Out::Requantized {
            y,
            multipliers,
            quant,
        } => {
            y.fill(0);
            for i in 0..m {
                for r in 0..n {
                    let mq = multipliers[if multipliers.len() == 1 { 0 } else { r }];
                    let q = requantize_one(acc_at(i, r), mq, quant.zero, quant.qmin, quant.qmax);
                    put_code(y, i * n + r, 8, (q - quant.qmin) as u32 & 0xff);
                }
            }
        }
    }
    Ok(())
}

/// Σ a·b over signed bytes, wrapping int32 (exact below 2^31 / 2^14 terms).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |s, (&p, &q)| {
        s.wrapping_add(i32::from(p) * i32::from(q))
    })
}
