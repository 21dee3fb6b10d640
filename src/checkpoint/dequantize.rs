//! Turning a wgquant file back into plain float tensors with their original names, shapes
//! and dtypes, readable by any safetensors loader.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use safetensors::Dtype;

use super::file::{Checkpoint, OutTensor, check_distinct, from_f32, write_atomic};
use crate::error::{Error, Result};
use crate::format::QuantizedTensor;
use crate::format::disk::{self, StoredPart};
use crate::quant::{self, Backend};

/// The quantized tensors of an opened file, rebuilt from their parts.
pub fn load_quantized(
    ckpt: &Checkpoint,
) -> Result<Vec<(String, disk::TensorRecord, QuantizedTensor)>> {
    let meta = ckpt.metadata()?;
    let records = disk::records(meta.as_ref()).map_err(|msg| Error::Format {
        path: ckpt.path().into(),
        msg,
    })?;
    let tensors = ckpt.tensors()?;
    let get = |n: &str| {
        tensors.iter().find(|t| t.name == n).map(|t| StoredPart {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: t.data,
        })
    };
    records
        .into_iter()
        .map(|(name, rec)| {
            let qt = disk::from_parts(&name, &rec, get).map_err(|e| Error::Format {
                path: ckpt.path().into(),
                msg: e.to_string(),
            })?;
            Ok((name, rec, qt))
        })
        .collect()
}

fn original_dtype(ckpt: &Checkpoint, name: &str, dtype: &str) -> Result<Dtype> {
    match dtype {
        "F32" => Ok(Dtype::F32),
        "F16" => Ok(Dtype::F16),
        "BF16" => Ok(Dtype::BF16),
        other => Err(ckpt.tensor_error(
            name,
            format!("records an unsupported original dtype '{other}'"),
        )),
    }
}

/// Writes `output` with every quantized tensor of `input` decoded to its original dtype and
/// every other tensor copied. Returns the number of tensors decoded.
pub fn dequantize_file(backend: &Backend<'_>, input: &Path, output: &Path) -> Result<usize> {
    check_distinct(input, output)?;
    let ckpt = Checkpoint::open(input)?;
    let quantized = load_quantized(&ckpt)?;
    if quantized.is_empty() {
        return Err(Error::Format {
            path: input.into(),
            msg: "holds no wgquant-quantized tensors (no 'wgquant:' metadata)".into(),
        });
    }
    let parts: HashSet<String> = ckpt
        .tensors()?
        .iter()
        .filter(|t| {
            disk::split_part(&t.name)
                .is_some_and(|(base, _)| quantized.iter().any(|(n, _, _)| n == base))
        })
        .map(|t| t.name.clone())
        .collect();
    let mut outs: Vec<(String, OutTensor<'_>)> = Vec::new();
    for (name, rec, qt) in &quantized {
        let dtype = original_dtype(&ckpt, name, &rec.dtype)?;
        let values =
            quant::dequantize(backend, qt).map_err(|e| ckpt.tensor_error(name, e.to_string()))?;
        outs.push((
            name.clone(),
            OutTensor {
                dtype,
                shape: rec.shape.clone(),
                data: Cow::Owned(from_f32(&values, dtype)?),
            },
        ));
    }
    let tensors = ckpt.tensors()?;
    for t in tensors.iter().filter(|t| !parts.contains(&t.name)) {
        if quantized.iter().any(|(n, _, _)| n == &t.name) {
            return Err(ckpt.tensor_error(&t.name, "is both quantized and stored plain"));
        }
        outs.push((
            t.name.clone(),
            OutTensor {
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: Cow::Borrowed(t.data),
            },
        ));
    }
    let mut meta = ckpt.metadata()?.unwrap_or_default();
    meta.retain(|k, _| k != disk::FILE_KEY && !k.starts_with(disk::TENSOR_KEY_PREFIX));
    write_atomic(output, &outs, meta)?;
    Ok(quantized.len())
}
