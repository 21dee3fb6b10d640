//! What both twins of `shaders/int8_matmul.wgsl` read: the integer shape and zero points of
//! a full-integer layer.

use crate::error::{Error, Result};
use crate::format::pack;

/// The integer shape and zero points of a full-integer layer `y = x·Wᵀ + bias`: x [m, k] and
/// W [n, k] are packed 8-bit codes (`format::pack`, stored `u = q − qmin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Layer {
    /// Rows of x and y.
    pub m: usize,
    /// Rows of W, columns of y.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Smallest code of x's scheme (−128, −127 or 0).
    pub x_qmin: i32,
    /// x's zero point.
    pub x_zero: i32,
    /// Smallest code of W's scheme.
    pub w_qmin: i32,
}

impl Int8Layer {
    /// Checks the fields and returns the code words of x and W.
    pub fn check(&self, op: &str) -> Result<(usize, usize)> {
        let ok = |q: i32| [-128, -127, 0].contains(&q);
        if !ok(self.x_qmin) || !ok(self.w_qmin) {
            return Err(Error::param(
                op,
                format!(
                    "8-bit code ranges start at -128, -127 or 0, not {} / {}",
                    self.x_qmin, self.w_qmin
                ),
            ));
        }
        if (self.m * self.k).max(self.n * self.k) >= 1 << 31 || self.m * self.n >= 1 << 31 {
            return Err(Error::param(op, "more than 2^31 elements"));
        }
        Ok((
            pack::packed_words(self.m * self.k, 8),
            pack::packed_words(self.n * self.k, 8),
        ))
    }

    /// x's code offset `zx − qmin_x − 128`: `q − zx = (u − 128) − this`.
    pub fn x_offset(&self) -> i32 {
        self.x_zero - self.x_qmin - 128
    }

    /// W's code offset for a row with zero point `z`.
    pub fn w_offset(&self, z: i32) -> i32 {
        z - self.w_qmin - 128
    }
}
