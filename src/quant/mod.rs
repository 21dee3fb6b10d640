//! The methods. Each is written once against operations both backends provide and returns a
//! [`QuantizedTensor`] or fake-quantized values.

pub mod codebook;
pub mod deep_compression;
pub mod discretize;
pub mod discretize_study;
pub mod kmeans;
pub mod prune;
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
    match first_non_finite(data) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            tensor: tensor.to_string(),
            index,
            value: data[index],
        }),
    }
}

/// Index of the first NaN or ±Inf in `data`. Scans fixed chunks in parallel: rayon items of
/// one element cost ~6 ns each, more than the scan itself.
pub fn first_non_finite(data: &[f32]) -> Option<usize> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let bad = |c: &[f32]| c.iter().position(|v| !v.is_finite());
    let chunk = data
        .par_chunks(CHUNK)
        .position_first(|c| bad(c).is_some())?;
    let start = chunk * CHUNK;
    bad(&data[start..(start + CHUNK).min(data.len())]).map(|i| start + i)
}

use crate::affine::AffineMode;
use crate::format::disk::{
    Layout, PartLayout, PartSpec, Storage, TensorRecord, part_specs, record,
};
use crate::format::{Encoding, Granularity, QuantizedTensor};

/// A quantization method with its settings, as chosen per tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Uniform affine quantization.
    Uniform(uniform::UniformConfig),
    /// Weighted-entropy quantization to a codebook.
    Weq(weq::WeqConfig),
    /// Correlation-maximising linear or exponential discretization (codebook).
    Discretize(discretize::DiscretizeConfig),
    /// Deep Compression: pruning, k-means weight sharing, sparse Huffman storage.
    DeepCompression(deep_compression::DcConfig),
}

impl Method {
    /// The method's name as recorded in files ("uniform", …).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Uniform(_) => "uniform",
            Method::Weq(_) => "weq",
            Method::Discretize(_) => "discretize",
            Method::DeepCompression(_) => "deep_compression",
        }
    }

    /// A short human label, e.g. `int4 sym channel absmax`.
    pub fn label(&self) -> String {
        match self {
            Method::Uniform(c) => {
                let mode = match c.scheme.mode {
                    AffineMode::Symmetric => "sym",
                    AffineMode::SymmetricRestricted => "sym-restricted",
                    AffineMode::Asymmetric => "asym",
                };
                format!(
                    "int{} {mode} {} {}",
                    c.scheme.bits,
                    c.granularity.label(),
                    c.calibration.label()
                )
            }
            Method::Weq(c) => c.label(),
            Method::Discretize(c) => format!("{} {}", c.scheme(), c.granularity.label()),
            Method::DeepCompression(c) => format!(
                "dc sparsity {} {}-bit idx{}",
                c.sparsity, c.bits, c.index_bits
            ),
        }
    }

    /// Method details worth recording beside the codes.
    pub fn detail(&self) -> Option<String> {
        match self {
            Method::Uniform(c) => Some(format!("calibration={}", c.calibration.label())),
            Method::Weq(_) => Some("weighted entropy, importance w²".into()),
            Method::Discretize(c) => Some(format!(
                "partition={} candidates={} rounds={}",
                c.partition.short(),
                c.candidates,
                c.rounds
            )),
            Method::DeepCompression(c) => Some(format!(
                "sparsity={} index_bits={} init={} max_iter={}",
                c.sparsity,
                c.index_bits,
                c.init.label(),
                c.max_iter
            )),
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
            Method::Discretize(c) => discretize::quantize(backend, name, data, shape, c),
            Method::DeepCompression(c) => deep_compression::quantize(backend, name, data, shape, c),
        }
    }

    /// Checks that the method applies to a tensor of this shape.
    pub fn check_shape(&self, shape: &[usize]) -> Result<()> {
        match self {
            Method::Uniform(c) => c.group_len(shape).map(|_| ()),
            Method::Weq(c) => c.group_len(shape).map(|_| ()),
            Method::Discretize(c) => c.group_len(shape).map(|_| ()),
            Method::DeepCompression(c) => {
                c.validate()?;
                if shape.iter().product::<usize>() as u64 >= u64::from(u32::MAX) {
                    return Err(Error::param("dc", "more than 2^32 − 1 elements"));
                }
                Ok(())
            }
        }
    }

    /// How the method's tensors are laid out on disk.
    pub fn storage(&self) -> Storage {
        match self {
            Method::DeepCompression(c) => Storage::SparseHuffman {
                index_bits: c.index_bits,
            },
            _ => Storage::Dense,
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        match self {
            Method::Uniform(c) => c.scheme.bits,
            Method::Weq(c) => c.bits,
            Method::Discretize(c) => c.bits,
            Method::DeepCompression(c) => c.bits,
        }
    }

    /// Which elements share parameters.
    pub fn granularity(&self) -> Granularity {
        match self {
            Method::Uniform(c) => c.granularity,
            Method::Weq(c) => c.granularity,
            Method::Discretize(c) => c.granularity,
            Method::DeepCompression(_) => Granularity::Tensor,
        }
    }

    /// The affine range placement, for uniform methods.
    fn mode(&self) -> Option<AffineMode> {
        match self {
            Method::Uniform(c) => Some(c.scheme.mode),
            _ => None,
        }
    }

    /// The stored layout of the method's tensors.
    pub fn layout(&self) -> Layout {
        let params = match self {
            Method::Uniform(c) => PartLayout::Affine {
                symmetric: c.scheme.is_symmetric(),
            },
            _ => PartLayout::Codebook,
        };
        Layout {
            params,
            storage: self.storage(),
            masked: matches!(self, Method::DeepCompression(_)),
        }
    }

    /// Whether rows (slices along axis 0) can be quantized independently, so a large tensor
    /// can be streamed in row blocks: parameters never span rows and codes are dense.
    pub fn row_separable(&self) -> bool {
        self.storage() == Storage::Dense && !matches!(self.granularity(), Granularity::Tensor)
    }

    /// The parts that will store tensor `name` of `shape` (known before computing; sparse
    /// streams with an upper bound).
    pub fn part_specs(&self, name: &str, shape: &[usize]) -> Result<Vec<PartSpec>> {
        part_specs(name, shape, self.bits(), self.granularity(), self.layout())
    }

    /// The metadata record of a tensor of `shape` (originally `dtype`) stored as `specs`.
    pub fn record(
        &self,
        shape: &[usize],
        dtype: safetensors::Dtype,
        specs: &[PartSpec],
    ) -> TensorRecord {
        let index_bits = match self.storage() {
            Storage::SparseHuffman { index_bits } => Some(index_bits),
            Storage::Dense => None,
        };
        record(
            self.name(),
            Some(self.layout().params),
            self.mode(),
            self.bits(),
            self.granularity(),
            shape,
            dtype,
            self.detail(),
            index_bits,
            specs,
        )
    }
}

/// Σx² and Σ(x − x̂)² of the originals `values` against `qt`'s decoding, on the CPU, in f64
/// and element order: an unmasked affine tensor in one pass over its codes, the others by
/// decoding first.
pub fn squared_error(qt: &QuantizedTensor, values: &[f32]) -> Result<(f64, f64)> {
    if values.len() != qt.numel() {
        return Err(Error::shape(
            "squared_error",
            format!("{} values for a tensor of {}", values.len(), qt.numel()),
        ));
    }
    if let (
        Encoding::Affine {
            scale, zero_point, ..
        },
        None,
    ) = (&qt.encoding, &qt.mask)
    {
        qt.validate()?;
        let seg = qt.affine_segment(0, 0, 0)?;
        return crate::cpu::dequantize::squared_error(&qt.codes, values, scale, zero_point, &seg);
    }
    let approx = dequantize(&Backend::Cpu, qt)?;
    Ok(squared_difference(values, &approx))
}

/// Σx² and Σ(x − y)² over two equally long slices, in f64: fixed chunks summed in parallel,
/// their partial sums added in order, so every run gives the same bits.
pub fn squared_difference(exact: &[f32], approx: &[f32]) -> (f64, f64) {
    use crate::cpu::dequantize::squared_sums;
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let parts: Vec<(f64, f64)> = exact
        .par_chunks(CHUNK)
        .zip(approx.par_chunks(CHUNK))
        .map(|(x, y)| squared_sums(x.iter().copied().zip(y.iter().copied())))
        .collect();
    parts
        .into_iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Decodes any quantized tensor to f32 on `backend`; elements a keep-mask drops are 0.
pub fn dequantize(backend: &Backend<'_>, qt: &QuantizedTensor) -> Result<Vec<f32>> {
    let values = match &qt.encoding {
        Encoding::Affine { .. } => uniform::dequantize(backend, qt)?,
        Encoding::Codebook { .. } => codebook::dequantize(backend, qt)?,
    };
    Ok(codebook::apply_mask(values, qt.mask.as_deref()))
}
