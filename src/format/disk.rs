//! The on-disk layout of quantized tensors inside a `.safetensors` file, defined once here.
//!
//! A quantized tensor `NAME` is stored as plain safetensors tensors beside the unquantized
//! ones:
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `NAME.wq_codes` | U8 | [bytes] | packed codes, the u32 words of `format::pack` as little-endian bytes |
//! | `NAME.wq_scale` | F32 | [groups] | affine scales |
//! | `NAME.wq_zero` | I32 | [groups] | affine zero points (asymmetric schemes only) |
//! | `NAME.wq_levels` | F32 | [groups, 2^bits] | codebook levels |
//! | `NAME.wq_mask` | U8 | [bytes] | keep-mask of pruned tensors, 1 bit per element |
//! | `NAME.wq_sparse_codes` | U8 | [bytes] | sparse storage: Huffman-coded codes of the kept elements |
//! | `NAME.wq_sparse_gaps` | U8 | [bytes] | sparse storage: Huffman-coded relative indices |
//!
//! A pruned codebook tensor may be stored sparse (its record then has `index_bits`): instead
//! of codes and mask, the kept elements' codes and their relative indices (`format::sparse`),
//! each Huffman-coded (`format::huffman`, serialized with its code-length table), beside the
//! levels. Reading rebuilds the dense codes (0 where pruned) and the mask exactly.
//!
//! and described by the `__metadata__` entry `wgquant:NAME`, a JSON [`TensorRecord`] carrying
//! its own `version`. The entry `wgquant` holds a [`FileRecord`] naming the tool and version.

use std::collections::BTreeMap;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use super::huffman::{self, HuffmanStream};
use super::pack;
use super::quantized::{Encoding, Granularity, QuantizedTensor};
use super::sparse::{self, SparseStream};
use crate::affine::{AffineMode, AffineScheme};
use crate::error::{Error, Result};

/// Version of the per-tensor records this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// `__metadata__` key of the file record.
pub const FILE_KEY: &str = "wgquant";
/// `__metadata__` key prefix of tensor records.
pub const TENSOR_KEY_PREFIX: &str = "wgquant:";

/// Suffixes of the part tensors.
pub const CODES: &str = ".wq_codes";
/// Scale part.
pub const SCALE: &str = ".wq_scale";
/// Zero-point part.
pub const ZERO: &str = ".wq_zero";
/// Codebook part.
pub const LEVELS: &str = ".wq_levels";
/// Mask part.
pub const MASK: &str = ".wq_mask";
/// Sparse storage: Huffman-coded codes of the kept elements.
pub const SPARSE_CODES: &str = ".wq_sparse_codes";
/// Sparse storage: Huffman-coded relative indices.
pub const SPARSE_GAPS: &str = ".wq_sparse_gaps";

/// How a quantized tensor's codes are laid out in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Packed codes for every element (and the mask, if any).
    Dense,
    /// Kept elements only, by relative index of `index_bits`, codes and gaps Huffman-coded.
    SparseHuffman {
        /// Width of the relative index.
        index_bits: u32,
    },
}

/// The whole-file record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Always "wgquant".
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The writing tool and its version.
    pub tool: String,
}

impl FileRecord {
    /// The record this build writes.
    pub fn current() -> Self {
        Self {
            format: "wgquant".into(),
            version: FORMAT_VERSION,
            tool: format!("wgquant {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// How one quantized tensor is stored and how to read it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// [`FORMAT_VERSION`] of this record.
    pub version: u32,
    /// The method that produced it ("uniform", "weq", …).
    pub method: String,
    /// "affine" or "codebook".
    pub encoding: String,
    /// Bits per code.
    pub bits: u32,
    /// Affine range placement.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<AffineMode>,
    /// Which elements share parameters.
    pub granularity: Granularity,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// The dtype of the tensor before quantization ("F32", "F16", "BF16").
    pub dtype: String,
    /// Calibration or other method details, free-form.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Effective bits per weight.
    pub bits_per_weight: f64,
    /// Present for sparse storage: the width of the relative index.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index_bits: Option<u32>,
}

/// A part tensor to write: name, dtype, shape, bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Full tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: Vec<u8>,
}

fn part(name: &str, suffix: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Part {
    Part {
        name: format!("{name}{suffix}"),
        dtype,
        shape,
        data,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The sparse entries of a pruned tensor (its mask and codes) and the Huffman coding of their
/// codes (alphabet `2^bits`) and gaps (alphabet `2^index_bits`).
pub fn sparse_streams(
    qt: &QuantizedTensor,
    index_bits: u32,
) -> Result<(SparseStream, HuffmanStream, HuffmanStream)> {
    let mask = qt
        .mask
        .as_ref()
        .ok_or_else(|| Error::param("sparse storage", "the tensor has no keep-mask"))?;
    let s = sparse::encode(mask, &qt.codes, qt.numel(), qt.bits, index_bits)?;
    let codes = huffman::encode(&s.codes, 1 << qt.bits)?;
    let gaps = huffman::encode(&s.gaps, 1 << index_bits)?;
    Ok((s, codes, gaps))
}

/// The parts and record storing `qt` under `name`.
pub fn to_parts(
    name: &str,
    qt: &QuantizedTensor,
    method: &str,
    dtype: Dtype,
    detail: Option<String>,
    storage: Storage,
) -> Result<(TensorRecord, Vec<Part>)> {
    qt.validate()?;
    let groups = qt.groups()?;
    let mut parts = Vec::new();
    match storage {
        Storage::Dense => {
            let codes = pack::words_to_bytes(&qt.codes);
            parts.push(part(name, CODES, Dtype::U8, vec![codes.len()], codes));
        }
        Storage::SparseHuffman { index_bits } => {
            if !matches!(qt.encoding, Encoding::Codebook { .. }) {
                return Err(Error::param(
                    "sparse storage",
                    "only codebook tensors are stored sparse",
                ));
            }
            let (_, codes, gaps) = sparse_streams(qt, index_bits)?;
            for (suffix, stream) in [(SPARSE_CODES, codes), (SPARSE_GAPS, gaps)] {
                let bytes = stream.to_bytes();
                parts.push(part(name, suffix, Dtype::U8, vec![bytes.len()], bytes));
            }
        }
    }
    let (encoding, mode) = match &qt.encoding {
        Encoding::Affine {
            scheme,
            scale,
            zero_point,
        } => {
            parts.push(part(
                name,
                SCALE,
                Dtype::F32,
                vec![groups],
                f32_bytes(scale),
            ));
            if !scheme.is_symmetric() {
                parts.push(part(
                    name,
                    ZERO,
                    Dtype::I32,
                    vec![groups],
                    i32_bytes(zero_point),
                ));
            }
            ("affine", Some(scheme.mode))
        }
        Encoding::Codebook { levels } => {
            let shape = vec![groups, 1 << qt.bits];
            parts.push(part(name, LEVELS, Dtype::F32, shape, f32_bytes(levels)));
            ("codebook", None)
        }
    };
    if let (Some(mask), Storage::Dense) = (&qt.mask, storage) {
        let bytes = pack::words_to_bytes(mask);
        parts.push(part(name, MASK, Dtype::U8, vec![bytes.len()], bytes));
    }
    let stored: usize = parts.iter().map(|p| p.data.len()).sum();
    let record = TensorRecord {
        version: FORMAT_VERSION,
        method: method.to_string(),
        encoding: encoding.into(),
        bits: qt.bits,
        mode,
        granularity: qt.granularity,
        shape: qt.shape.clone(),
        dtype: format!("{dtype:?}"),
        detail,
        bits_per_weight: stored as f64 * 8.0 / qt.numel().max(1) as f64,
        index_bits: match storage {
            Storage::Dense => None,
            Storage::SparseHuffman { index_bits } => Some(index_bits),
        },
    };
    Ok((record, parts))
}

/// The `__metadata__` entries for a file holding `records` (plus any metadata to keep).
pub fn metadata(
    records: &BTreeMap<String, TensorRecord>,
    keep: Option<&std::collections::HashMap<String, String>>,
) -> Result<std::collections::HashMap<String, String>> {
    let mut out = keep.cloned().unwrap_or_default();
    out.retain(|k, _| k != FILE_KEY && !k.starts_with(TENSOR_KEY_PREFIX));
    out.insert(FILE_KEY.into(), to_json(&FileRecord::current())?);
    for (name, rec) in records {
        out.insert(format!("{TENSOR_KEY_PREFIX}{name}"), to_json(rec)?);
    }
    Ok(out)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::param("metadata", e.to_string()))
}

/// The tensor records found in a file's `__metadata__`, by tensor name. Errors name the key.
pub fn records(
    meta: Option<&std::collections::HashMap<String, String>>,
) -> std::result::Result<BTreeMap<String, TensorRecord>, String> {
    let mut out = BTreeMap::new();
    let Some(meta) = meta else { return Ok(out) };
    if let Some(file) = meta.get(FILE_KEY) {
        let rec: FileRecord = serde_json::from_str(file)
            .map_err(|e| format!("metadata '{FILE_KEY}' is not a wgquant file record: {e}"))?;
        if rec.version > FORMAT_VERSION {
            return Err(format!(
                "written by {} (format {}), newer than this build (format {FORMAT_VERSION})",
                rec.tool, rec.version
            ));
        }
    }
    for (key, value) in meta {
        if let Some(name) = key.strip_prefix(TENSOR_KEY_PREFIX) {
            let rec: TensorRecord = serde_json::from_str(value)
                .map_err(|e| format!("metadata '{key}' is not a wgquant tensor record: {e}"))?;
            if rec.version > FORMAT_VERSION {
                return Err(format!(
                    "metadata '{key}' has format version {}",
                    rec.version
                ));
            }
            out.insert(name.to_string(), rec);
        }
    }
    Ok(out)
}

/// A stored part as read from a file.
pub struct StoredPart<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes.
    pub data: &'a [u8],
}

/// Rebuilds the quantized tensor `name` from its record and a lookup of part tensors.
pub fn from_parts<'a>(
    name: &str,
    rec: &TensorRecord,
    get: impl Fn(&str) -> Option<StoredPart<'a>>,
) -> Result<QuantizedTensor> {
    let bad = |msg: String| Error::param("wgquant record", format!("tensor '{name}': {msg}"));
    let fetch = |suffix: &str, dtype: Dtype| -> Result<&'a [u8]> {
        let p = get(&format!("{name}{suffix}"))
            .ok_or_else(|| bad(format!("part '{name}{suffix}' is missing")))?;
        if p.dtype != dtype {
            return Err(bad(format!(
                "part '{name}{suffix}' is {:?}, expected {dtype:?}",
                p.dtype
            )));
        }
        Ok(p.data)
    };
    let words = |bytes: &[u8]| {
        pack::bytes_to_words(bytes).ok_or_else(|| bad("packed bytes are not whole words".into()))
    };
    let floats = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let numel: usize = rec.shape.iter().product();
    let (codes, mask) = match rec.index_bits {
        None => (
            words(fetch(CODES, Dtype::U8)?)?,
            match get(&format!("{name}{MASK}")) {
                Some(p) => Some(words(p.data)?),
                None => None,
            },
        ),
        Some(index_bits) => {
            if numel as u64 >= u64::from(u32::MAX) {
                return Err(bad(format!("{numel} elements exceed 2^32 − 1")));
            }
            let stream = |suffix: &str, alphabet: u64| -> Result<Vec<u32>> {
                let s = HuffmanStream::from_bytes(fetch(suffix, Dtype::U8)?)
                    .map_err(|e| bad(format!("part '{name}{suffix}': {e}")))?;
                if u64::from(s.alphabet) != alphabet {
                    return Err(bad(format!(
                        "part '{name}{suffix}' codes {} symbols, expected {alphabet}",
                        s.alphabet
                    )));
                }
                huffman::decode(&s).map_err(|e| bad(format!("part '{name}{suffix}': {e}")))
            };
            if !(1..=16).contains(&rec.bits) || !(1..=sparse::MAX_INDEX_BITS).contains(&index_bits)
            {
                return Err(bad(format!(
                    "sparse record with {} code bits and {index_bits} index bits",
                    rec.bits
                )));
            }
            let s = SparseStream {
                len: numel as u64,
                index_bits,
                gaps: stream(SPARSE_GAPS, 1 << index_bits)?,
                codes: stream(SPARSE_CODES, 1 << rec.bits)?,
            };
            let (mask, codes) = sparse::decode(&s, rec.bits).map_err(|e| bad(e.to_string()))?;
            (codes, Some(mask))
        }
    };
    let groups = rec
        .granularity
        .group_len(&rec.shape)
        .map(|g| rec.shape.iter().product::<usize>() / g.max(1))?;
    let encoding = match rec.encoding.as_str() {
        "affine" => {
            let mode = rec
                .mode
                .ok_or_else(|| bad("affine record without mode".into()))?;
            let scheme = AffineScheme::new(rec.bits, mode)?;
            let scale = floats(fetch(SCALE, Dtype::F32)?);
            let zero_point = if scheme.is_symmetric() {
                vec![0; groups]
            } else {
                fetch(ZERO, Dtype::I32)?
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            }
        }
        "codebook" => Encoding::Codebook {
            levels: floats(fetch(LEVELS, Dtype::F32)?),
        },
        other => return Err(bad(format!("unknown encoding '{other}'"))),
    };
    let qt = QuantizedTensor {
        shape: rec.shape.clone(),
        bits: rec.bits,
        granularity: rec.granularity,
        codes,
        encoding,
        mask,
    };
    qt.validate().map_err(|e| bad(e.to_string()))?;
    Ok(qt)
}

/// The part suffixes.
pub const PART_SUFFIXES: [&str; 7] = [CODES, SCALE, ZERO, LEVELS, MASK, SPARSE_CODES, SPARSE_GAPS];

/// Whether `tensor` is named like a part tensor of a quantized tensor.
pub fn is_part_name(tensor: &str) -> bool {
    split_part(tensor).is_some()
}

/// `(base, suffix)` when `tensor` is named like a part: `"w.wq_codes"` → `("w", ".wq_codes")`.
pub fn split_part(tensor: &str) -> Option<(&str, &'static str)> {
    PART_SUFFIXES
        .iter()
        .find_map(|s| tensor.strip_suffix(s).map(|base| (base, *s)))
}
