//! Describing a checkpoint: every logical tensor with its shape, scheme, bits per weight and
//! stored size, whether plain or quantized by wgquant.

use std::path::Path;

use serde::Serialize;

use super::dequantize::load_quantized;
use super::file::Checkpoint;
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

/// Describes the file at `path`.
pub fn inspect_file(path: &Path) -> Result<Summary> {
    let ckpt = Checkpoint::open(path)?;
    let quantized = load_quantized(&ckpt)?;
    let tensors = ckpt.tensors()?;
    let mut out = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for t in &tensors {
        let owner = disk::split_part(&t.name)
            .and_then(|(base, _)| quantized.iter().find(|(n, _, _)| n == base));
        if let Some((name, rec, qt)) = owner {
            // A quantized tensor is listed once, at its first part, with all its parts' bytes.
            if listed.insert(name.clone()) {
                let bytes: u64 = tensors
                    .iter()
                    .filter(|p| disk::split_part(&p.name).is_some_and(|(b, _)| b == name))
                    .map(|p| p.data.len() as u64)
                    .sum();
                let mode = rec
                    .mode
                    .map(|m| format!(" {m:?}").to_lowercase())
                    .unwrap_or_default();
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
                    bits_per_weight: bytes as f64 * 8.0 / qt.numel().max(1) as f64,
                    bytes,
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
            bytes: t.data.len() as u64,
        });
    }
    Ok(Summary {
        path: path.display().to_string(),
        file_bytes: ckpt.file_len(),
        tensors: out,
    })
}
