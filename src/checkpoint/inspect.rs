//! Describing a checkpoint: every logical tensor with its shape, scheme, bits per weight and
//! stored size, whether plain or quantized by wgquant. Reads records and part sizes only (each
//! record checked against its parts, nothing decoded), so memory stays small for any file.

use std::path::Path;

use serde::Serialize;

use super::dequantize::checked_records;
use super::source::Source;
use crate::error::Result;
use crate::format::disk;

/// One logical tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorSummary {
    /// Name (the original name for quantized tensors).
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// The stored dtype, or the original dtype of a quantized tensor.
    pub dtype: String,
    /// "plain", or the method and its settings.
    pub scheme: String,
    /// Stored bits per element.
    pub bits_per_weight: f64,
    /// Stored bytes (all parts).
    pub bytes: u64,
}

/// A checkpoint's description.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The file.
    pub path: String,
    /// File size.
    pub file_bytes: u64,
    /// Logical tensors in file order.
    pub tensors: Vec<TensorSummary>,
}

/// Describes the file (or sharded checkpoint) at `path`.
pub fn inspect_file(path: &Path) -> Result<Summary> {
    let source = Source::open(path)?;
    let records = checked_records(&source)?;
    let mut out = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for t in source.tensors() {
        let owner = disk::split_part(&t.name)
            .and_then(|(base, _)| records.get_key_value(base))
            .or_else(|| records.get_key_value(t.name.as_str()));
        if let Some((name, rec)) = owner {
            // A quantized tensor is listed once, at its first part (a cast, at itself).
            if listed.insert(name.clone()) {
                let mode = rec
                    .mode
                    .map(|m| format!(" {m:?}").to_lowercase())
                    .unwrap_or_default();
                // Checked by `checked_records`: the product does not overflow.
                let numel: usize = rec.shape.iter().product();
                out.push(TensorSummary {
                    name: name.clone(),
                    shape: rec.shape.clone(),
                    dtype: rec.dtype.clone(),
                    scheme: format!(
                        "{} {} {}-bit{mode} {}{}",
                        rec.method,
                        rec.encoding,
                        rec.bits,
                        rec.granularity.label(),
                        rec.detail
                            .as_ref()
                            .map(|d| format!(" {d}"))
                            .unwrap_or_default()
                    ),
                    bits_per_weight: rec.bits_per_weight,
                    bytes: (rec.bits_per_weight * numel as f64 / 8.0).round() as u64,
                });
            }
            continue;
        }
        out.push(TensorSummary {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: format!("{:?}", t.dtype),
            scheme: "plain".into(),
            bits_per_weight: t.dtype.bitsize() as f64,
            bytes: t.bytes() as u64,
        });
    }
    let file_bytes = source
        .shard_paths()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    Ok(Summary {
        path: path.display().to_string(),
        file_bytes,
        tensors: out,
    })
}
