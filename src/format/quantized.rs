//! `QuantizedTensor`: packed codes plus what turns them back into numbers (affine scales and
//! zero points, or codebook levels), per tensor, channel or group.

use serde::{Deserialize, Serialize};

use super::pack;
use crate::affine::{AffineScheme, AffineSegment};
use crate::error::{Error, Result};

/// Widest code of a quantized tensor (affine schemes, codebooks, sparse storage).
pub const MAX_BITS: u32 = 16;

/// Elements of `shape`, or `None` when the product overflows (shapes read from a file).
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

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
        let op = "granularity";
        let numel = checked_numel(shape).ok_or_else(|| {
            Error::shape(
                op,
                format!("shape {shape:?} has more elements than usize holds"),
            )
        })?;
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

impl Encoding {
    /// Checks the parameters of `groups` groups of `bits`-bit codes: their counts, positive
    /// finite scales, zero points in the scheme's range, and values decoding to finite f32.
    pub fn check(&self, bits: u32, groups: usize) -> Result<()> {
        let op = "QuantizedTensor";
        match self {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => {
                if scheme.bits != bits || scale.len() != groups || zero_point.len() != groups {
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
                // The quantizers clamp z to [qmin, qmax] (symmetric: 0), which also keeps
                // q − z from wrapping in i32 on either backend.
                let (lo, hi) = match scheme.is_symmetric() {
                    true => (0, 0),
                    false => (scheme.qmin(), scheme.qmax()),
                };
                if let Some((g, z)) = zero_point
                    .iter()
                    .enumerate()
                    .find(|(_, z)| !(lo..=hi).contains(*z))
                {
                    return Err(Error::param(
                        op,
                        format!("zero point {z} of group {g} outside [{lo}, {hi}]"),
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
                if Some(levels.len()) != groups.checked_mul(1 << bits) {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{} levels for {groups} groups of {} bits",
                            levels.len(),
                            bits
                        ),
                    ));
                }
            }
        }
        self.check_decoded_range(f64::from(f32::MAX))
    }

    /// Checks that every value the parameters can decode to, whatever the codes, is finite
    /// and at most `max` in magnitude (the largest finite value of the dtype it decodes to).
    /// Sizes must already be checked ([`Encoding::check`]).
    pub fn check_decoded_range(&self, max: f64) -> Result<()> {
        let op = "QuantizedTensor";
        match self {
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            } => {
                let (qmin, qmax) = (i64::from(scheme.qmin()), i64::from(scheme.qmax()));
                for (g, (&s, &z)) in scale.iter().zip(zero_point).enumerate() {
                    let steps = (qmax - i64::from(z)).max(i64::from(z) - qmin);
                    let largest = steps as f64 * f64::from(s);
                    if !(largest <= max) {
                        return Err(Error::param(
                            op,
                            format!(
                                "group {g} (scale {s:e}, zero point {z}) decodes to {largest:e}, \
                                 beyond the dtype's largest value {max:e}"
                            ),
                        ));
                    }
                }
            }
            Encoding::Codebook { levels, .. } => {
                if let Some((i, l)) = levels
                    .iter()
                    .enumerate()
                    .find(|(_, l)| !(f64::from(l.abs()) <= max))
                {
                    return Err(Error::param(
                        op,
                        format!("level {i} ({l}) is not a number of magnitude at most {max:e}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl QuantizedTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        // Saturates so that an overflowing (unvalidated) shape cannot panic; validate refuses it.
        checked_numel(&self.shape).unwrap_or(usize::MAX)
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

    /// Checks that codes, mask and parameters have the sizes the shape implies, that zero
    /// points lie in the scheme's range and that every value decodes to a finite f32.
    pub fn validate(&self) -> Result<()> {
        let op = "QuantizedTensor";
        if !(1..=MAX_BITS).contains(&self.bits) {
            return Err(Error::param(
                op,
                format!("{} bits outside 1..={MAX_BITS}", self.bits),
            ));
        }
        let groups = self.groups()?;
        let numel = self.numel();
        if Some(self.codes.len()) != pack::checked_packed_words(numel, self.bits) {
            return Err(Error::shape(
                op,
                format!(
                    "{} code words for {numel} elements of {} bits",
                    self.codes.len(),
                    self.bits
                ),
            ));
        }
        if let Some(mask) = &self.mask
            && mask.len() != pack::packed_words(numel, 1)
        {
            return Err(Error::shape(
                op,
                format!("{} mask words for {numel} elements", mask.len()),
            ));
        }
        self.encoding.check(self.bits, groups)?;
        self.check_decoded_range(f64::from(f32::MAX))
    }

    /// Checks that every value the parameters can decode to, whatever the codes, is finite
    /// and at most `max` in magnitude ([`Encoding::check_decoded_range`]).
    pub fn check_decoded_range(&self, max: f64) -> Result<()> {
        self.encoding.check_decoded_range(max)
    }

    /// The one segment describing this (affine) tensor to the segment kernels, with its
    /// input at element `src`, output at `dst` and parameters at group `param`.
    pub fn affine_segment(&self, src: u32, dst: u32, param: u32) -> Result<AffineSegment> {
        let Encoding::Affine { scheme, .. } = &self.encoding else {
            return Err(Error::param("QuantizedTensor", "not an affine tensor"));
        };
        let too_long = || Error::param("QuantizedTensor", "more than 2^32 − 1 elements");
        Ok(AffineSegment {
            src,
            dst,
            len: u32::try_from(self.numel()).map_err(|_| too_long())?,
            group_len: u32::try_from(self.group_len()?).map_err(|_| too_long())?,
            group_phase: 0,
            param,
            qmin: scheme.qmin(),
            qmax: scheme.qmax(),
            bits: scheme.bits,
        })
    }
}
