//! A 2-D quantized weight W [rows, cols] as the matmuls read it, defined once for both
//! backends: its code width, its parameter groups, and where row r's codes start in the packed
//! stream of `format::pack` (bit `r·cols·bits`, mid-word unless `cols·bits` is a multiple of 32;
//! the matmuls read such rows with a funnel shift, so no row-aligned layout is needed).

use super::pack;
use super::{Granularity, QuantizedTensor};
use crate::error::{Error, Result};

/// How a weight decodes, without its data: affine, codebook or dense f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WeightKind {
    /// `w = (u + qmin − z)·s`.
    Affine = 0,
    /// `w = levels[g·2^bits + u]`.
    Codebook = 1,
    /// f32 values stored as 32-bit "codes".
    Dense = 2,
}

/// The shape, code width and parameter grouping of a weight W [rows, cols], shared by both
/// backends. Codes follow `format::pack` over the whole matrix, so row `r` starts at bit
/// `r·cols·bits`, mid-word unless `cols·bits` is a multiple of 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightLayout {
    /// N, the output features.
    pub rows: usize,
    /// K, the input features.
    pub cols: usize,
    /// Bits per code: 1 to 8, or 32 for dense f32.
    pub bits: u32,
    /// Which codes share parameters (groups along K must divide it).
    pub granularity: Granularity,
}

impl WeightLayout {
    /// The layout of a 2-D quantized tensor without a keep-mask.
    pub fn of(qt: &QuantizedTensor) -> Result<Self> {
        let op = "qmatmul";
        qt.validate()?;
        let &[rows, cols] = qt.shape.as_slice() else {
            return Err(Error::shape(
                op,
                format!("weight of shape {:?} is not 2-D", qt.shape),
            ));
        };
        if qt.mask.is_some() {
            return Err(Error::param(
                op,
                "pruned weights (with a keep-mask) are not supported; dequantize them first",
            ));
        }
        Ok(Self {
            rows,
            cols,
            bits: qt.bits,
            granularity: qt.granularity,
        })
    }

    /// A dense f32 matrix.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            bits: 32,
            granularity: Granularity::Tensor,
        }
    }

    /// u32 words holding the codes.
    pub fn code_words(&self) -> usize {
        pack::packed_words(self.rows * self.cols, self.bits)
    }

    /// Parameter groups (scales, zero points or level tables).
    pub fn groups(&self) -> usize {
        match self.granularity {
            Granularity::Tensor => 1,
            Granularity::Channel => self.rows,
            Granularity::Group(g) => self.rows * self.cols / g.max(1),
        }
    }

    /// (groups per row, codes per group, whether every aligned 32-code block of a row lies in
    /// one group): the group of code k of row r is `r·groups_per_row + k / group_len`.
    pub fn grouping(&self) -> (u32, u32, bool) {
        let cols = self.cols.max(1) as u32;
        match self.granularity {
            _ if self.bits == 32 => (0, cols, true),
            Granularity::Tensor => (0, cols, true),
            Granularity::Channel => (1, cols, true),
            Granularity::Group(g) => (cols / g as u32, g as u32, g % 32 == 0),
        }
    }

    /// Checks the layout for a weight of `kind`.
    pub fn check(&self, op: &str, kind: WeightKind) -> Result<()> {
        let ok_bits = match kind {
            WeightKind::Dense => self.bits == 32,
            _ => (1..=8).contains(&self.bits),
        };
        if !ok_bits {
            return Err(Error::param(
                op,
                format!(
                    "{} bits for a {kind:?} weight (1 to 8, dense 32)",
                    self.bits
                ),
            ));
        }
        if (self.rows * self.cols) as u64 * u64::from(self.bits) >= 1 << 40 {
            return Err(Error::param(op, "weight too large"));
        }
        if self.cols > 0 && self.rows > 0 {
            self.granularity.group_len(&[self.rows, self.cols])?;
        }
        Ok(())
    }
}
