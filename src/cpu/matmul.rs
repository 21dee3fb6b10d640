//! CPU twin of `shaders/matmul.wgsl`: f32 `C = op(A)·op(B) (+ bias)`, rows of C in parallel,
//! the inner dimension summed in ascending order like the shader.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// A row-major matrix as stored and whether the product uses its transpose.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// Values, row-major.
    pub data: &'a [f32],
    /// Stored rows.
    pub rows: usize,
    /// Stored columns.
    pub cols: usize,
    /// Use the transpose.
    pub transposed: bool,
}

impl Mat<'_> {
    fn dims(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// Element (i, j) of op(X).
    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        if self.transposed {
            self.data[j * self.cols + i]
        } else {
            self.data[i * self.cols + j]
        }
    }
}

/// `c = op(a)·op(b) (+ bias)`, or `c += …` with `accumulate`; `c` is M×N row-major.
pub fn matmul(
    a: Mat<'_>,
    b: Mat<'_>,
    bias: Option<&[f32]>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (m, k) = a.dims();
    let (k2, n) = b.dims();
    if k != k2
        || c.len() != m * n
        || a.data.len() != a.rows * a.cols
        || b.data.len() != b.rows * b.cols
    {
        return Err(Error::shape(
            "matmul",
            format!("{m}×{k} · {k2}×{n} into {} values", c.len()),
        ));
    }
    if bias.is_some_and(|b| b.len() != n) {
        return Err(Error::shape(
            "matmul",
            "bias length differs from the columns",
        ));
    }
    if n == 0 {
        return Ok(());
    }
    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, out) in row.iter_mut().enumerate() {
            let mut acc = 0f32;
            for kk in 0..k {
                acc += a.at(i, kk) * b.at(kk, j);
            }
            let mut v = acc + bias.map_or(0.0, |b| b[j]);
            if accumulate {
                v += *out;
            }
            *out = v;
        }
    });
    Ok(())
}
