//! CPU twin of `shaders/qmatmul.wgsl`: `y = x·Wᵀ (+ bias)` with W decoded from its packed
//! codes row by row on the fly (a few rows at a time, never the whole float matrix), rows of
//! W in parallel. `qmatmul_reference` is the plain per-element form the fast path is tested
//! against.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::pack::{self, get_code};
pub use crate::format::weight::{WeightKind, WeightLayout};
use crate::format::{Encoding, QuantizedTensor};

/// Decoding parameters on the host.
#[derive(Clone, Copy, Debug)]
pub enum Params<'a> {
    /// One scale (and zero point) per group.
    Affine {
        /// Scales.
        scale: &'a [f32],
        /// Zero points; `None` means all zero.
        zero: Option<&'a [i32]>,
        /// Smallest code of the scheme.
        qmin: i32,
    },
    /// `2^bits` levels per group.
    Codebook {
        /// Levels.
        levels: &'a [f32],
    },
    /// The codes are f32 bit patterns.
    Dense,
}

/// A weight W on the host: layout, packed codes, decoding parameters.
#[derive(Clone, Copy, Debug)]
pub struct QWeight<'a> {
    /// Shape, code width and grouping.
    pub layout: WeightLayout,
    /// Packed codes (or f32 bit patterns for dense).
    pub codes: &'a [u32],
    /// Decoding parameters.
    pub params: Params<'a>,
}

impl<'a> QWeight<'a> {
    /// A view of a 2-D quantized tensor.
    pub fn from_quantized(qt: &'a QuantizedTensor) -> Result<Self> {
        let layout = WeightLayout::of(qt)?;
        let params = match &qt.encoding {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => Params::Affine {
                scale,
                zero: (!scheme.is_symmetric()).then_some(zero_point.as_slice()),
                qmin: scheme.qmin(),
            },
            Encoding::Codebook { levels, .. } => Params::Codebook { levels },
        };
        Ok(Self {
            layout,
            codes: &qt.codes,
            params,
        })
    }

    /// A dense f32 matrix [rows, cols].
    pub fn dense(w: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            layout: WeightLayout::dense(rows, cols),
            codes: bytemuck::cast_slice(w),
            params: Params::Dense,
        }
    }

    /// The decoding kind.
    pub fn kind(&self) -> WeightKind {
        match self.params {
            Params::Affine { .. } => WeightKind::Affine,
            Params::Codebook { .. } => WeightKind::Codebook,
            Params::Dense => WeightKind::Dense,
        }
    }

    fn check(&self, op: &str) -> Result<()> {
        let l = &self.layout;
        l.check(op, self.kind())?;
        let bad = |what: &str, got: usize, want: usize| {
            Err(Error::shape(op, format!("{got} {what} for {want}")))
        };
        if self.codes.len() < l.code_words() {
            return bad("code words", self.codes.len(), l.code_words());
        }
        let groups = l.groups();
        match self.params {
            Params::Affine { scale, zero, .. } => {
                if scale.len() != groups {
                    return bad("scales", scale.len(), groups);
                }
                if let Some(z) = zero.filter(|z| z.len() != groups) {
                    return bad("zero points", z.len(), groups);
                }
            }
            Params::Codebook { levels } => {
                if levels.len() != groups << l.bits {
                    return bad("levels", levels.len(), groups << l.bits);
                }
            }
            Params::Dense => {}
        }
        Ok(())
    }

    /// Weight (r, k), decoded from its own code (the plain form).
    fn value(&self, r: usize, k: usize) -> f32 {
        let l = &self.layout;
        let i = r * l.cols + k;
        let u = get_code(self.codes, i, l.bits);
        let (gpr, glen, _) = l.grouping();
        let g = r * gpr as usize + k / glen as usize;
        match self.params {
            Params::Affine { scale, zero, qmin } => {
                let z = zero.map_or(0, |z| z[g]);
                crate::affine::dequantize_code(u as i32 + qmin, scale[g], z)
            }
            Params::Codebook { levels } => levels[(g << l.bits) + u as usize],
            Params::Dense => f32::from_bits(u),
        }
    }

    /// Decodes row `r` into `out` (cols values): the codes first (whole words at a time where
    /// every code of the row sits inside one word), then each group's parameters over its run.
    #[inline(always)]
    fn decode_row(&self, r: usize, out: &mut [f32]) {
        let l = &self.layout;
        let (bits, cols) = (l.bits as usize, l.cols);
        let bit0 = r * cols * bits;
        if let Params::Dense = self.params {
            for (o, &c) in out.iter_mut().zip(&self.codes[r * cols..(r + 1) * cols]) {
                *o = f32::from_bits(c);
            }
            return;
        }
        let words = &self.codes[bit0 / 32..(bit0 + cols * bits).div_ceil(32)];
        if bit0.is_multiple_of(32) && bits == 1 {
            unpack_words::<1>(words, out);
        } else if bit0.is_multiple_of(32) && bits == 2 {
            unpack_words::<2>(words, out);
        } else if bit0.is_multiple_of(32) && bits == 4 {
            unpack_words::<4>(words, out);
        } else if bit0.is_multiple_of(32) && bits == 8 {
            unpack_words::<8>(words, out);
        } else {
            for (k, o) in out.iter_mut().enumerate() {
                *o = get_code(self.codes, r * cols + k, l.bits) as f32;
            }
        }
        let (gpr, glen, _) = l.grouping();
        let (gpr, glen) = (gpr as usize, glen as usize);
        for (gi, run) in out.chunks_mut(glen.max(1)).enumerate() {
            let g = r * gpr + gi;
            match self.params {
                Params::Affine { scale, zero, qmin } => {
                    // (u + qmin − z)·s equals dequantize_code(u + qmin, s, z): u + qmin − z is
                    // an integer below 2^24, exact in f32.
                    let off = qmin.wrapping_sub(zero.map_or(0, |z| z[g])) as f32;
                    let s = scale[g];
                    run.iter_mut().for_each(|v| *v = (*v + off) * s);
                }
                Params::Codebook { levels } => {
                    let table = &levels[g << l.bits..(g + 1) << l.bits];
                    run.iter_mut().for_each(|v| *v = table[*v as usize]);
                }
                Params::Dense => {}
            }
        }
    }
}

/// The B-bit codes of whole words as floats (B divides 32; the width is a constant so the
/// shifts unroll and vectorize).
#[inline(always)]
fn unpack_words<const B: usize>(words: &[u32], out: &mut [f32]) {
    let per_word = 32 / B;
    let mask = pack::mask(B as u32);
    let full = out.len() / per_word;
    let mut chunks = out.chunks_exact_mut(per_word);
    for (&word, chunk) in words.iter().zip(&mut chunks) {
        for (c, o) in chunk.iter_mut().enumerate() {
            *o = ((word >> (c * B)) & mask) as f32;
        }
    }
    let tail = chunks.into_remainder();
    if let Some(&word) = words.get(full) {
        for (c, o) in tail.iter_mut().enumerate() {
            *o = ((word >> (c * B)) & mask) as f32;
        }
    }
}

fn check_shapes(
    op: &str,
    x: &[f32],
    m: usize,
    w: &QWeight<'_>,
    bias: Option<&[f32]>,
    y: &[f32],
) -> Result<()> {
    w.check(op)?;
    let (n, k) = (w.layout.rows, w.layout.cols);
    if x.len() != m * k || y.len() != m * n || bias.is_some_and(|b| b.len() != n) {
        return Err(Error::shape(
            op,
            format!(
                "x of {} values, y of {}, bias of {:?} for M = {m}, W [{n}, {k}]",
                x.len(),
                y.len(),
                bias.map(<[f32]>::len)
            ),
        ));
    }
    Ok(())
}

/// `y = x·Wᵀ (+ bias)` summing in ascending k, one element at a time (the reference).
pub fn qmatmul_reference(
    x: &[f32],
    m: usize,
    w: &QWeight<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_shapes("qmatmul_reference", x, m, w, bias, y)?;
    let (n, k) = (w.layout.rows, w.layout.cols);
    for i in 0..m {
        for r in 0..n {
            let mut acc = 0f32;
            for kk in 0..k {
                acc += w.value(r, kk) * x[i * k + kk];
            }
            y[i * n + r] = acc + bias.map_or(0.0, |b| b[r]);
        }
    }
    Ok(())
}

/// W rows decoded together by one task: each row of x is then read once per block.
const ROWS_PER_TASK: usize = 8;

/// `y = x·Wᵀ (+ bias)`: x [m, K], W [N, K], y [m, N], all row-major. Blocks of W rows are
/// decoded and multiplied in parallel, with 8-wide partial sums (so the sum order differs from
/// the reference by f32 reassociation only).
pub fn qmatmul(
    x: &[f32],
    m: usize,
    w: &QWeight<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    check_shapes("qmatmul", x, m, w, bias, y)?;
    let n = w.layout.rows;
    if n == 0 || m == 0 {
        return Ok(());
    }
    // Each task returns its rows' outputs transposed ([row][m]); scattered after.
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|t| row_block(w, t * ROWS_PER_TASK, x, m))
        .collect();
    for (t, block) in blocks.iter().enumerate() {
        let r0 = t * ROWS_PER_TASK;
        for (j, col) in block.chunks(m).enumerate() {
            let b = bias.map_or(0.0, |b| b[r0 + j]);
            for (i, &v) in col.iter().enumerate() {
                y[i * n + r0 + j] = v + b;
            }
        }
    }
    Ok(())
}

/// Outputs of W rows [r0, r0 + ROWS_PER_TASK) for every row of x, transposed: the rows
/// decoded, then dotted with each row of x. Compiled for AVX2 where the CPU has it (decoding
/// and the 8-wide sums vectorize; DESIGN.md's CPU note).
fn row_block(w: &QWeight<'_>, r0: usize, x: &[f32], m: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { row_block_avx2(w, r0, x, m) };
        }
    }
    row_block_plain(w, r0, x, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_block_avx2(w: &QWeight<'_>, r0: usize, x: &[f32], m: usize) -> Vec<f32> {
    row_block_plain(w, r0, x, m)
}

#[inline(always)]
fn row_block_plain(w: &QWeight<'_>, r0: usize, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.layout.rows, w.layout.cols);
    let rows = ROWS_PER_TASK.min(n - r0);
    let mut wrows = vec![0f32; rows * k];
    for (j, out) in wrows.chunks_mut(k.max(1)).enumerate().take(rows) {
        w.decode_row(r0 + j, out);
    }
    let mut out = vec![0f32; rows * m];
    for i in 0..m {
        let xi = &x[i * k..(i + 1) * k];
        for j in 0..rows {
            out[j * m + i] = dot_plain(&wrows[j * k..(j + 1) * k], xi);
        }
    }
    out
}

#[inline(always)]
fn dot_plain(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (pa, pb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += pa[i] * pb[i];
        }
    }
    let mut tail = 0f32;
    for (p, q) in ra.iter().zip(rb) {
        tail += p * q;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
