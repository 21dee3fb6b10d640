//! Turning a wgquant file (or sharded checkpoint) back into plain float tensors with their
//! original names, shapes and dtypes, readable by any safetensors loader. Tensors are decoded
//! and written one at a time, so memory holds one tensor.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use super::file::{check_distinct, from_f32, to_f32};
use super::quantize::user_metadata;
use super::source::{Source, SourceTensor};
use super::writer::{StreamWriter, header_reserve};
use crate::error::{Error, Result};
use crate::format::QuantizedTensor;
use crate::format::disk::{self, TensorRecord};
use crate::quant::{self, Backend};

/// A wgquant tensor of a file: its record and, unless stored in half precision, its parts.
pub struct Loaded {
    /// Logical name.
    pub name: String,
    /// Its record.
    pub record: TensorRecord,
    /// The quantized tensor; `None` for a half-precision cast stored under its own name.
    pub quantized: Option<QuantizedTensor>,
}

/// Every wgquant tensor of `source`, rebuilt from its parts.
pub fn load_quantized(source: &Source) -> Result<Vec<Loaded>> {
    let bad = |msg: String| Error::Format {
        path: source.path().into(),
        msg,
    };
    source
        .records()?
        .into_iter()
        .map(|(name, record)| {
            let quantized = if record.encoding == "half" {
                if source.part(&name).is_none() {
                    return Err(bad(format!("half-precision tensor '{name}' is missing")));
                }
                None
            } else {
                Some(
                    disk::from_parts(&name, &record, |n| source.part(n))
                        .map_err(|e| bad(e.to_string()))?,
                )
            };
            Ok(Loaded {
                name,
                record,
                quantized,
            })
        })
        .collect()
}

fn original_dtype(source: &Source, t: &SourceTensor, dtype: &str) -> Result<Dtype> {
    match dtype {
        "F32" => Ok(Dtype::F32),
        "F16" => Ok(Dtype::F16),
        "BF16" => Ok(Dtype::BF16),
        other => Err(source.tensor_error(
            t,
            format!("records an unsupported original dtype '{other}'"),
        )),
    }
}

/// What one output tensor comes from.
enum Origin<'a> {
    Decode(&'a Loaded),
    Copy,
}

/// Writes `output` with every wgquant tensor of `input` decoded to its original dtype and
/// every other tensor copied. Returns the number of tensors decoded.
pub fn dequantize_file(backend: &Backend<'_>, input: &Path, output: &Path) -> Result<usize> {
    check_distinct(input, output)?;
    let source = Source::open(input)?;
    for shard in source.shard_paths() {
        check_distinct(shard, output)?;
    }
    let loaded = load_quantized(&source)?;
    if loaded.is_empty() {
        return Err(Error::Format {
            path: input.into(),
            msg: "holds no wgquant-quantized tensors (no 'wgquant:' metadata)".into(),
        });
    }
    let by_name: BTreeMap<&str, &Loaded> = loaded.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut plan: Vec<(&SourceTensor, Dtype, Vec<usize>, Origin<'_>)> = Vec::new();
    let mut emitted = std::collections::HashSet::new();
    for t in source.tensors() {
        if let Some((base, _)) = disk::split_part(&t.name)
            && let Some(l) = by_name.get(base)
        {
            // A quantized tensor is emitted once, at its first part.
            if emitted.insert(base) {
                plan.push((
                    t,
                    original_dtype(&source, t, &l.record.dtype)?,
                    l.record.shape.clone(),
                    Origin::Decode(l),
                ));
            }
            continue;
        }
        match by_name.get(t.name.as_str()) {
            Some(l) if l.quantized.is_none() => plan.push((
                t,
                original_dtype(&source, t, &l.record.dtype)?,
                l.record.shape.clone(),
                Origin::Decode(l),
            )),
            Some(_) => return Err(source.tensor_error(t, "is both quantized and stored plain")),
            None => plan.push((t, t.dtype, t.shape.clone(), Origin::Copy)),
        }
    }
    // Widest dtypes first keeps every tensor aligned to its element.
    plan.sort_by_key(|(_, dtype, _, _)| std::cmp::Reverse(dtype.bitsize()));
    let names: Vec<String> = plan
        .iter()
        .map(|(t, _, _, o)| match o {
            Origin::Decode(l) => l.name.clone(),
            Origin::Copy => t.name.clone(),
        })
        .collect();
    let meta = user_metadata(source.metadata());
    let meta_bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let mut w = StreamWriter::create(
        output,
        header_reserve(names.iter().map(String::as_str), meta_bytes),
    )?;
    for ((t, dtype, shape, origin), name) in plan.iter().zip(&names) {
        let data = match origin {
            Origin::Copy => source.data(t).to_vec(),
            Origin::Decode(l) => {
                let values = match &l.quantized {
                    Some(qt) => quant::dequantize(backend, qt)
                        .map_err(|e| source.tensor_error(t, e.to_string()))?,
                    None => {
                        let entry = super::file::TensorEntry {
                            name: t.name.clone(),
                            dtype: t.dtype,
                            shape: t.shape.clone(),
                            data: source.data(t),
                        };
                        to_f32(source.shard(t), &entry)?
                    }
                };
                from_f32(&values, *dtype)?
            }
        };
        w.tensor(name, *dtype, shape, &data)?;
    }
    w.finish(&meta)?.persist()?;
    Ok(loaded.len())
}
