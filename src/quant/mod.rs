//! The methods. Each is written once against operations both backends provide and returns a
//! [`QuantizedTensor`](crate::format::QuantizedTensor) or fake-quantized values.

pub mod codebook;
pub mod spec;
pub mod uniform;
pub mod weq;

use crate::error::{Error, Result};
use crate::gpu::Context;

/// Where a method runs.
#[derive(Clone, Copy, Debug)]
pub enum Backend<'a> {
    /// On this device.
    Gpu(&'a Context),
    /// On the host, with rayon.
    Cpu,
}

impl Backend<'_> {
    /// "gpu" or "cpu".
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Gpu(_) => "gpu",
            Backend::Cpu => "cpu",
        }
    }
}

/// Fails with [`Error::NonFinite`] naming `tensor` and the first NaN or ±Inf in `data`.
pub fn check_finite(tensor: &str, data: &[f32]) -> Result<()> {
    use rayon::prelude::*;
    match data.par_iter().position_first(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            tensor: tensor.to_string(),
            index,
            value: data[index],
        }),
    }
}

use crate::format::{Encoding, QuantizedTensor};

/// A quantization method with its settings, as chosen per tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Uniform affine quantization.
    Uniform(uniform::UniformConfig),
    /// Weighted-entropy quantization to a codebook.
    Weq(weq::WeqConfig),
}

impl Method {
    /// The method's name as recorded in files ("uniform", …).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Uniform(_) => "uniform",
            Method::Weq(_) => "weq",
        }
    }

    /// A short human label, e.g. `int4 sym channel absmax`.
    pub fn label(&self) -> String {
        match self {
            Method::Uniform(c) => {
                let mode = match c.scheme.mode {
                    crate::affine::AffineMode::Symmetric => "sym",
                    crate::affine::AffineMode::SymmetricRestricted => "sym-restricted",
                    crate::affine::AffineMode::Asymmetric => "asym",
                };
                format!(
                    "int{} {mode} {} {}",
                    c.scheme.bits,
                    c.granularity.label(),
                    c.calibration.label()
                )
            }
            Method::Weq(c) => c.label(),
        }
    }

    /// Method details worth recording beside the codes.
    pub fn detail(&self) -> Option<String> {
        match self {
            Method::Uniform(c) => Some(format!("calibration={}", c.calibration.label())),
            Method::Weq(_) => Some("weighted entropy, importance w²; thresholds kept".into()),
        }
    }

    /// Quantizes host data; `name` labels errors.
    pub fn quantize(
        &self,
        backend: &Backend<'_>,
        name: &str,
        data: &[f32],
        shape: &[usize],
    ) -> Result<QuantizedTensor> {
        match self {
            Method::Uniform(c) => uniform::quantize(backend, name, data, shape, c),
            Method::Weq(c) => weq::quantize(backend, name, data, shape, c),
        }
    }

    /// Whether rows (slices along axis 0) can be quantized independently, so a large tensor
    /// can be streamed in row blocks: parameters never span rows.
    pub fn row_separable(&self) -> bool {
        match self {
            Method::Uniform(c) => !matches!(c.granularity, crate::format::Granularity::Tensor),
            Method::Weq(c) => !matches!(c.granularity, crate::format::Granularity::Tensor),
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        match self {
            Method::Uniform(c) => c.scheme.bits,
            Method::Weq(c) => c.bits,
        }
    }

    /// The parts that will store tensor `name` of `shape` (known before computing).
    pub fn part_specs(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<crate::format::disk::PartSpec>> {
        use crate::format::disk::{PartLayout, part_specs};
        match self {
            Method::Uniform(c) => part_specs(
                name,
                shape,
                c.scheme.bits,
                c.granularity,
                PartLayout::Affine {
                    symmetric: c.scheme.is_symmetric(),
                },
                false,
            ),
            Method::Weq(c) => part_specs(
                name,
                shape,
                c.bits,
                c.granularity,
                PartLayout::Codebook,
                false,
            ),
        }
    }

    /// The metadata record of a tensor of `shape` (originally `dtype`) stored as `specs`.
    pub fn record(
        &self,
        shape: &[usize],
        dtype: safetensors::Dtype,
        specs: &[crate::format::disk::PartSpec],
    ) -> crate::format::disk::TensorRecord {
        use crate::format::disk::{PartLayout, record};
        match self {
            Method::Uniform(c) => record(
                self.name(),
                Some(PartLayout::Affine {
                    symmetric: c.scheme.is_symmetric(),
                }),
                Some(c.scheme.mode),
                c.scheme.bits,
                c.granularity,
                shape,
                dtype,
                self.detail(),
                specs,
            ),
            Method::Weq(c) => record(
                self.name(),
                Some(PartLayout::Codebook),
                None,
                c.bits,
                c.granularity,
                shape,
                dtype,
                self.detail(),
                specs,
            ),
        }
    }

    /// Checks that the method applies to a tensor of this shape.
    pub fn check_shape(&self, shape: &[usize]) -> Result<()> {
        match self {
            Method::Uniform(c) => c.group_len(shape).map(|_| ()),
            Method::Weq(c) => c.group_len(shape).map(|_| ()),
        }
    }
}

/// Decodes any quantized tensor to f32 on `backend`; elements a keep-mask drops are 0.
pub fn dequantize(backend: &Backend<'_>, qt: &QuantizedTensor) -> Result<Vec<f32>> {
    let values = match &qt.encoding {
        Encoding::Affine { .. } => uniform::dequantize(backend, qt)?,
        Encoding::Codebook { .. } => codebook::dequantize(backend, qt)?,
    };
    Ok(codebook::apply_mask(values, qt.mask.as_deref()))
}
