//! The methods. Each is written once against operations both backends provide and returns a
//! [`QuantizedTensor`](crate::format::QuantizedTensor) or fake-quantized values.

pub mod uniform;

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
