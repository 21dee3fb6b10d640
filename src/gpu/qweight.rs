//! Quantized weights resident on the device, as the dequantizing matmul (`qmatmul`) reads
//! them: packed codes plus their decoding tensors, borrowed ([`QWeight`]) or owned
//! ([`GpuQWeight`], uploaded from a [`QuantizedTensor`]).

use super::context::Context;
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::format::weight::{WeightKind, WeightLayout};
use crate::format::{Encoding, QuantizedTensor};

/// How W's codes decode, with its parameter tensors on the device.
#[derive(Clone, Copy, Debug)]
pub enum GpuDecoding<'a> {
    /// `w = (u + qmin − z)·s`; `scale` f32 and `zero` i32 hold one value per group.
    Affine {
        /// Scales.
        scale: &'a GpuTensor,
        /// Zero points; `None` means all zero.
        zero: Option<&'a GpuTensor>,
        /// Smallest code of the scheme.
        qmin: i32,
    },
    /// `w = levels[g·2^bits + u]`.
    Codebook {
        /// `2^bits` f32 levels per group.
        levels: &'a GpuTensor,
    },
    /// The codes are f32 values (bits = 32): the dense float baseline.
    Dense,
}

/// A quantized weight W [rows, cols] on the device: its packed codes and how they decode.
#[derive(Clone, Copy, Debug)]
pub struct QWeight<'a> {
    /// Shape, code width and grouping.
    pub layout: WeightLayout,
    /// Packed codes (U32, layout of `format::pack`), or f32 values for [`GpuDecoding::Dense`].
    pub codes: &'a GpuTensor,
    /// Decoding parameters.
    pub decoding: GpuDecoding<'a>,
}

/// A [`QuantizedTensor`] uploaded for matmuls, owning its device tensors.
#[derive(Clone, Debug)]
pub struct GpuQWeight {
    /// Shape, code width and grouping.
    pub layout: WeightLayout,
    /// Packed codes.
    pub codes: GpuTensor,
    /// Scales or codebook levels.
    pub table: GpuTensor,
    /// Zero points of an asymmetric affine tensor.
    pub zero: Option<GpuTensor>,
    /// Smallest code of an affine scheme; `None` for a codebook.
    pub qmin: Option<i32>,
}

impl GpuQWeight {
    /// Uploads a 2-D quantized tensor (no keep-mask).
    pub fn upload(ctx: &Context, qt: &QuantizedTensor) -> Result<Self> {
        let layout = WeightLayout::of(qt)?;
        let codes = GpuTensor::from_u32(ctx, &qt.codes, &[qt.codes.len()])?;
        let (table, zero, qmin) = match &qt.encoding {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => {
                let zero = if scheme.is_symmetric() {
                    None
                } else {
                    Some(GpuTensor::from_i32(ctx, zero_point, &[zero_point.len()])?)
                };
                let table = GpuTensor::from_f32(ctx, scale, &[scale.len()])?;
                (table, zero, Some(scheme.qmin()))
            }
            Encoding::Codebook { levels, .. } => (
                GpuTensor::from_f32(ctx, levels, &[levels.len()])?,
                None,
                None,
            ),
        };
        Ok(Self {
            layout,
            codes,
            table,
            zero,
            qmin,
        })
    }

    /// The borrowed form the kernels take.
    pub fn weight(&self) -> QWeight<'_> {
        let decoding = match self.qmin {
            Some(qmin) => GpuDecoding::Affine {
                scale: &self.table,
                zero: self.zero.as_ref(),
                qmin,
            },
            None => GpuDecoding::Codebook {
                levels: &self.table,
            },
        };
        QWeight {
            layout: self.layout,
            codes: &self.codes,
            decoding,
        }
    }
}

impl<'a> QWeight<'a> {
    /// A dense f32 matrix [rows, cols] as a weight of the same kernels (the float baseline).
    pub fn dense(w: &'a GpuTensor) -> Result<Self> {
        w.expect_dtype("qmatmul", ElemType::F32)?;
        let &[rows, cols] = w.shape() else {
            return Err(Error::shape(
                "qmatmul",
                format!("dense weight of shape {:?} is not 2-D", w.shape()),
            ));
        };
        Ok(Self {
            layout: WeightLayout::dense(rows, cols),
            codes: w,
            decoding: GpuDecoding::Dense,
        })
    }

    /// The decoding kind.
    pub fn kind(&self) -> WeightKind {
        match self.decoding {
            GpuDecoding::Affine { .. } => WeightKind::Affine,
            GpuDecoding::Codebook { .. } => WeightKind::Codebook,
            GpuDecoding::Dense => WeightKind::Dense,
        }
    }

    /// Checks the tensors against the layout.
    pub(crate) fn check(&self, op: &str) -> Result<()> {
        let l = &self.layout;
        l.check(op, self.kind())?;
        let words = l.code_words();
        let dtype = if l.bits == 32 {
            ElemType::F32
        } else {
            ElemType::U32
        };
        self.codes.expect_dtype(op, dtype)?;
        if self.codes.numel() < words {
            return Err(Error::shape(
                op,
                format!("{} code words for {words}", self.codes.numel()),
            ));
        }
        let groups = l.groups();
        let need = |t: &GpuTensor, dtype: ElemType, len: usize, what: &str| -> Result<()> {
            t.expect_dtype(op, dtype)?;
            if t.numel() != len {
                return Err(Error::shape(op, format!("{} {what} for {len}", t.numel())));
            }
            Ok(())
        };
        match self.decoding {
            GpuDecoding::Affine { scale, zero, .. } => {
                need(scale, ElemType::F32, groups, "scales")?;
                if let Some(z) = zero {
                    need(z, ElemType::I32, groups, "zero points")?;
                }
            }
            GpuDecoding::Codebook { levels } => {
                need(levels, ElemType::F32, groups << l.bits, "levels")?;
            }
            GpuDecoding::Dense => {}
        }
        Ok(())
    }
}
