//! The Deep Compression pipeline (Han, Mao, Dally, ICLR 2016; ALGORITHMS.md §5): magnitude
//! pruning to a target sparsity, weight sharing by k-means over the kept weights, and storage
//! as relative-index sparse entries whose codes and gaps are Huffman-coded.
//!
//! In memory the result is a codebook `QuantizedTensor` (per tensor, `2^bits` centroids) with
//! a keep-mask; pruned elements have code 0 and decode to 0. On disk it is stored sparse and
//! Huffman-coded (`format::disk`), and [`StageSizes::of`] gives the bits of each stage as the
//! paper's Table 1 counts them.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{Encoding, Granularity, QuantizedTensor, disk, pack, sparse};

use super::kmeans::{self, KmeansConfig, KmeansInit};
use super::{Backend, check_finite, prune};

/// A Deep Compression recipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DcConfig {
    /// Fraction of weights pruned, in [0, 1].
    pub sparsity: f32,
    /// Bits per shared-weight code: 2^bits centroids (1..=8).
    pub bits: u32,
    /// Width of the relative index (the paper uses 8 for conv and 5 for fc layers).
    pub index_bits: u32,
    /// k-means initialisation.
    pub init: KmeansInit,
    /// k-means iteration cap.
    pub max_iter: u32,
    /// Seed of a Forgy initialisation.
    pub seed: u64,
}

impl DcConfig {
    /// A recipe with linear initialisation, the default cap and a 5-bit index.
    pub fn new(sparsity: f32, bits: u32) -> Self {
        Self {
            sparsity,
            bits,
            index_bits: 5,
            init: KmeansInit::Linear,
            max_iter: kmeans::DEFAULT_MAX_ITER,
            seed: 0,
        }
    }

    /// Checks the recipe.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sparsity) {
            return Err(Error::param(
                "dc",
                format!("sparsity {} outside [0, 1]", self.sparsity),
            ));
        }
        if !(1..=8).contains(&self.bits) {
            return Err(Error::param(
                "dc",
                format!("bits {} outside 1..=8", self.bits),
            ));
        }
        if !(1..=sparse::MAX_INDEX_BITS).contains(&self.index_bits) {
            return Err(Error::param(
                "dc",
                format!(
                    "index bits {} outside 1..={}",
                    self.index_bits,
                    sparse::MAX_INDEX_BITS
                ),
            ));
        }
        if self.max_iter == 0 {
            return Err(Error::param("dc", "the iteration cap must be at least 1"));
        }
        Ok(())
    }

    /// The k-means part.
    pub fn kmeans(&self) -> KmeansConfig {
        KmeansConfig {
            bits: self.bits,
            init: self.init,
            max_iter: self.max_iter,
            seed: self.seed,
        }
    }
}

/// Prunes, clusters and returns the dense view of a tensor; `name` labels errors.
pub fn quantize(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &DcConfig,
) -> Result<QuantizedTensor> {
    cfg.validate()?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "dc",
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    check_finite(name, data)?;
    let mask = prune::keep_mask(backend, data, cfg.sparsity)?;
    let clustering = kmeans::cluster(backend, data, Some(&mask), &cfg.kmeans())?;
    // Pruned elements get code 0, so the dense view is the same before and after storage.
    let mut codes = pack::unpack(&clustering.codes, data.len(), cfg.bits);
    for (i, c) in codes.iter_mut().enumerate() {
        if pack::get_code(&mask, i, 1) == 0 {
            *c = 0;
        }
    }
    let qt = QuantizedTensor {
        shape: shape.to_vec(),
        bits: cfg.bits,
        granularity: Granularity::Tensor,
        codes: pack::pack(&codes, cfg.bits),
        encoding: Encoding::Codebook {
            levels: clustering.centroids,
            thresholds: None,
        },
        mask: Some(mask),
    };
    qt.validate()?;
    Ok(qt)
}

/// Storage of one tensor at each stage of the pipeline, in bits, counted as in Deep
/// Compression's Table 1: the dense f32 original; pruning alone (each kept weight as an f32
/// with its relative index, fillers as an index); with quantization (each kept weight as its
/// `bits`-bit code, plus the f32 codebook); with Huffman coding (the coded streams with their
/// headers and code-length tables, plus the codebook), which is what is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageSizes {
    /// Elements.
    pub numel: u64,
    /// Kept weights.
    pub kept: u64,
    /// Filler entries.
    pub fillers: u64,
    /// Dense f32.
    pub dense_bits: u64,
    /// Pruning only.
    pub pruned_bits: u64,
    /// Pruning + quantization.
    pub quantized_bits: u64,
    /// Pruning + quantization + Huffman coding.
    pub huffman_bits: u64,
}

impl StageSizes {
    /// Sizes of one tensor.
    pub fn of(qt: &QuantizedTensor, index_bits: u32) -> Result<Self> {
        let Encoding::Codebook { levels, .. } = &qt.encoding else {
            return Err(Error::param("dc", "stage sizes need a codebook tensor"));
        };
        let (s, codes, gaps) = disk::sparse_streams(qt, index_bits)?;
        let (kept, entries) = (s.codes.len() as u64, s.gaps.len() as u64);
        let index = entries * u64::from(index_bits);
        let codebook = levels.len() as u64 * 32;
        Ok(Self {
            numel: qt.numel() as u64,
            kept,
            fillers: entries - kept,
            dense_bits: qt.numel() as u64 * 32,
            pruned_bits: kept * 32 + index,
            quantized_bits: s.fixed_width_bits(qt.bits) + codebook,
            // As stored: each stream padded to whole u32 words (format::disk).
            huffman_bits: (codes.byte_len().next_multiple_of(4)
                + gaps.byte_len().next_multiple_of(4)) as u64
                * 8
                + codebook,
        })
    }

    /// Sums another tensor's sizes into these.
    pub fn add(&mut self, o: &StageSizes) {
        self.numel += o.numel;
        self.kept += o.kept;
        self.fillers += o.fillers;
        self.dense_bits += o.dense_bits;
        self.pruned_bits += o.pruned_bits;
        self.quantized_bits += o.quantized_bits;
        self.huffman_bits += o.huffman_bits;
    }

    /// Compression ratios of the three stages against the dense f32 tensor.
    pub fn ratios(&self) -> [f64; 3] {
        let r = |b: u64| self.dense_bits as f64 / b.max(1) as f64;
        [
            r(self.pruned_bits),
            r(self.quantized_bits),
            r(self.huffman_bits),
        ]
    }
}
