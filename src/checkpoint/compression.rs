//! The Deep Compression report of a written file: for every sparse-stored tensor, the size at
//! each stage (pruning, + quantization, + Huffman coding) and the compression ratio against
//! dense f32, per layer and in total, in the manner of Han et al. 2016, Table 1.

use std::path::Path;

use serde::Serialize;

use super::source::Source;
use crate::error::Result;
use crate::quant::deep_compression::StageSizes;

/// One tensor's stages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerStages {
    /// Tensor name.
    pub name: String,
    /// Bits of the shared-weight codes.
    pub bits: u32,
    /// Width of the relative index.
    pub index_bits: u32,
    /// Sizes.
    pub sizes: StageSizes,
    /// Compression ratios: pruning, + quantization, + Huffman.
    pub ratios: [f64; 3],
}

/// Every sparse-stored tensor of a file and the totals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompressionReport {
    /// Per tensor, by name.
    pub layers: Vec<LayerStages>,
    /// All of them together.
    pub total: StageSizes,
    /// Ratios of the total.
    pub ratios: [f64; 3],
}

/// The report of the sparse-stored tensors in `path`.
pub fn compression_report(path: &Path) -> Result<CompressionReport> {
    let source = Source::open(path)?;
    let mut layers = Vec::new();
    let mut total = StageSizes::default();
    // One sparse tensor rebuilt at a time: the others' codes are never loaded.
    for (name, rec) in source.records()? {
        let Some(index_bits) = rec.index_bits else {
            continue;
        };
        let tensor_error = |msg: String| crate::error::Error::Tensor {
            path: path.into(),
            tensor: name.clone(),
            msg,
        };
        let qt = crate::format::disk::from_parts(&name, &rec, |n| source.part(n))
            .map_err(|e| tensor_error(e.to_string()))?;
        let sizes = StageSizes::of(&qt, index_bits).map_err(|e| tensor_error(e.to_string()))?;
        total.add(&sizes);
        layers.push(LayerStages {
            name,
            bits: qt.bits,
            index_bits,
            sizes,
            ratios: sizes.ratios(),
        });
    }
    Ok(CompressionReport {
        layers,
        ratios: total.ratios(),
        total,
    })
}

impl CompressionReport {
    /// A plain-text table: weights, kept fraction, bits per kept weight after quantization
    /// and after Huffman coding (codes and indices together), and the three ratios.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<48} {:>10} {:>7} {:>8} {:>11} {:>13} {:>8} {:>8} {:>8}\n",
            "tensor",
            "weights",
            "kept%",
            "fillers",
            "P+Q bits/nz",
            "P+Q+H bits/nz",
            "prune",
            "+quant",
            "+huffman"
        );
        let row = |name: &str, z: &StageSizes, r: &[f64; 3]| {
            let per_kept = |b: u64| b as f64 / z.kept.max(1) as f64;
            format!(
                "{:<48} {:>10} {:>6.2}% {:>8} {:>11.2} {:>13.2} {:>7.1}x {:>7.1}x {:>7.1}x\n",
                name,
                z.numel,
                100.0 * z.kept as f64 / z.numel.max(1) as f64,
                z.fillers,
                per_kept(z.quantized_bits),
                per_kept(z.huffman_bits),
                r[0],
                r[1],
                r[2]
            )
        };
        for l in &self.layers {
            s += &row(&l.name, &l.sizes, &l.ratios);
        }
        s += &row("total", &self.total, &self.ratios);
        s += "bits/nz: stored bits per kept weight (codes, indices, fillers, codebook). Ratios: \
              dense f32 bits over pruning (kept f32 + relative index), + quantization (code + \
              index per entry, f32 codebook), + Huffman (coded codes and indices with their \
              tables, codebook), as in Deep Compression, Table 1\n";
        s
    }
}
