//! `QuantizedTensor`: packed codes plus what turns them back into numbers (affine scales and
//! zero points, or codebook levels), per tensor, channel or group.

use serde::{Deserialize, Serialize};

use super::pack;
use crate::affine::{AffineScheme, AffineSegment};
use crate::error::{Error, Result};

/// Which elements share quantization parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One set for the whole tensor.
    Tensor,
    /// One set per slice along axis 0 (an output channel of a weight).
    Channel,
    /// One set per run of `G` consecutive elements along the last axis.
    Group(usize),
}

impl Granularity {
    /// Elements per parameter group for a tensor of `shape`, or why the shape does not allow it.
    pub fn group_len(&self, shape: &[usize]) -> Result<usize> {
        let numel: usize = shape.iter().product();
        let op = "granularity";
        match *self {
            Granularity::Tensor => Ok(numel.max(1)),
            Granularity::Channel => {
                let rows = *shape.first().ok_or_else(|| {
                    Error::param(op, "per-channel quantization needs at least one axis")
                })?;
                if rows == 0 {
                    return Err(Error::param(op, "axis 0 is empty"));
                }
                Ok((numel / rows).max(1))
            }
            Granularity::Group(g) => {
                let last = *shape.last().ok_or_else(|| {
                    Error::param(op, "per-group quantization needs at least one axis")
                })?;
                if g == 0 || last % g != 0 {
                    return Err(Error::param(
                        op,
                        format!("group size {g} does not divide the last axis ({last})"),
                    ));
                }
                Ok(g)
            }
        }
    }

    /// The CLI spelling: `tensor`, `channel` or `group:N`.
    pub fn label(&self) -> String {
        match self {
            Granularity::Tensor => "tensor".into(),
            Granularity::Channel => "channel".into(),
            Granularity::Group(g) => format!("group:{g}"),
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tensor" => Ok(Granularity::Tensor),
            "channel" => Ok(Granularity::Channel),
            _ => {
                let n = s
                    .strip_prefix("group:")
                    .ok_or_else(|| format!("'{s}' is not tensor, channel or group:N"))?;
                let g: usize = n
                    .parse()
                    .map_err(|_| format!("group size '{n}' is not a number"))?;
                if g == 0 {
                    return Err("group size must be positive".into());
                }
                Ok(Granularity::Group(g))
            }
        }
    }
}

/// How codes turn back into numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum Encoding {
    /// `x̂ = (q − z)·s`, with `q = u + qmin` for the stored code `u`.
    Affine {
        /// Bits and range.
        scheme: AffineScheme,
        /// One scale per group.
        scale: Vec<f32>,
        /// One zero point per group (all 0 for symmetric schemes).
        zero_point: Vec<i32>,
    },
    /// `x̂ = levels[group][u]`.
    Codebook {
        /// `2^bits` levels per group, groups consecutive.
        levels: Vec<f32>,
        /// The decision thresholds that assigned the codes, when they are not the midpoints
        /// of the levels (WEQ's cluster boundaries): `2^bits` per group, the first
        /// `2^bits − 1` sorted, a value's code being the number at or below it. Only
        /// re-quantization needs them, so they do not count as stored bits per weight.
        thresholds: Option<Vec<f32>>,
    },
}

/// A quantized tensor: its shape, packed codes (layout in [`pack`]), the parameters that
/// decode them and, for pruned tensors, a keep-mask (one bit per element, same packing).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedTensor {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Bits per code.
    pub bits: u32,
    /// Which elements share parameters.
    pub granularity: Granularity,
    /// Packed codes.
    pub codes: Vec<u32>,
    /// Decoding parameters.
    pub encoding: Encoding,
    /// Keep-mask of pruned tensors (bit set = kept).
    pub mask: Option<Vec<u32>>,
}

impl QuantizedTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per parameter group.
    pub fn group_len(&self) -> Result<usize> {
        self.granularity.group_len(&self.shape)
    }

    /// Number of parameter groups.
    pub fn groups(&self) -> Result<usize> {
        Ok(self.numel() / self.group_len()?.max(1))
    }

    /// Bytes stored: codes, parameters, mask.
    pub fn storage_bytes(&self) -> usize {
        let params = match &self.encoding {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => {
                scale.len() * 4
                    + if scheme.is_symmetric() {
                        0
                    } else {
                        zero_point.len() * 4
                    }
            }
            Encoding::Codebook { levels, .. } => levels.len() * 4,
        };
        self.codes.len() * 4 + params + self.mask.as_ref().map_or(0, |m| m.len() * 4)
    }

    /// Effective bits per weight: every stored bit (codes, scales, zero points, codebooks,
    /// masks) over the element count.
    pub fn bits_per_weight(&self) -> f64 {
        self.storage_bytes() as f64 * 8.0 / self.numel().max(1) as f64
    }

    /// Checks that codes and parameters have the sizes the shape implies.
    pub fn validate(&self) -> Result<()> {
        let op = "QuantizedTensor";
        let groups = self.groups()?;
        if self.codes.len() != pack::packed_words(self.numel(), self.bits) {
            return Err(Error::shape(
                op,
                format!(
                    "{} code words for {} elements of {} bits",
                    self.codes.len(),
                    self.numel(),
                    self.bits
                ),
            ));
        }
        match &self.encoding {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => {
                if scheme.bits != self.bits || scale.len() != groups || zero_point.len() != groups {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{} scales and {} zero points for {groups} groups",
                            scale.len(),
                            zero_point.len()
                        ),
                    ));
                }
                if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                    return Err(Error::param(
                        op,
                        format!("scale {s} is not a positive number"),
                    ));
                }
            }
            Encoding::Codebook { levels, thresholds } => {
                if let Some(t) = thresholds
                    && t.len() != levels.len()
                {
                    return Err(Error::shape(
                        op,
                        format!("{} thresholds for {} levels", t.len(), levels.len()),
                    ));
                }
                if levels.len() != groups << self.bits {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{} levels for {groups} groups of {} bits",
                            levels.len(),
                            self.bits
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The one segment describing this (affine) tensor to the segment kernels, with its
    /// input at element `src`, output at `dst` and parameters at group `param`.
    pub fn affine_segment(&self, src: u32, dst: u32, param: u32) -> Result<AffineSegment> {
        let Encoding::Affine { scheme, .. } = &self.encoding else {
            return Err(Error::param("QuantizedTensor", "not an affine tensor"));
        };
        Ok(AffineSegment {
            src,
            dst,
            len: self.numel() as u32,
            group_len: self.group_len()? as u32,
            group_phase: 0,
            param,
            qmin: scheme.qmin(),
            qmax: scheme.qmax(),
            bits: scheme.bits,
        })
    }
}
