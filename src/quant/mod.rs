//! The methods. Each is written once against operations both backends provide and returns a
//! [`QuantizedTensor`](crate::format::QuantizedTensor) or fake-quantized values.

pub mod codebook;
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
