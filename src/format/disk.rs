//! The on-disk layout of quantized tensors inside a `.safetensors` file, defined once here.
//!
//! A quantized tensor `NAME` is stored as plain safetensors tensors beside the unquantized
//! ones:
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `NAME.wq_codes` | U32 | \[words\] | packed codes, the u32 words of `format::pack` (little-endian) |
//! | `NAME.wq_scale` | F32 | \[groups\] | affine scales |
//! | `NAME.wq_zero` | I32 | \[groups\] | affine zero points (asymmetric schemes only) |
//! | `NAME.wq_levels` | F32 | \[groups, 2^bits\] | codebook levels |
//! | `NAME.wq_mask` | U32 | \[words\] | keep-mask of pruned tensors, 1 bit per element, packed alike |
//! | `NAME.wq_sparse_codes` | U32 | \[words\] | sparse storage: Huffman-coded codes of the kept elements |
//! | `NAME.wq_sparse_gaps` | U32 | \[words\] | sparse storage: Huffman-coded relative indices |
//!
//! A pruned codebook tensor may be stored sparse (its record then has `index_bits`): instead
//! of codes and mask, the kept elements' codes and their relative indices (`format::sparse`),
//! each Huffman-coded (`format::huffman`, serialized with its code-length table and padded
//! with zero bytes to whole words), beside the levels. Reading rebuilds the dense codes (0
//! where pruned) and the mask exactly.
//!
//! Every part has a 4-byte dtype and a size that is a multiple of 4, so a writer that emits
//! tensors by descending dtype size keeps every tensor aligned to its element.
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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The bytes of `part`, a scale or zero-point part of tensor `name`, holding `scale` or
/// `zero`: for affine parameters written apart from their codes (a tensor quantized in
/// pieces); `None` for any other part.
pub fn affine_param_bytes(name: &str, part: &str, scale: &[f32], zero: &[i32]) -> Option<Vec<u8>> {
    match part.strip_prefix(name)? {
        SCALE => Some(f32_bytes(scale)),
        ZERO => Some(i32_bytes(zero)),
        _ => None,
    }
}

/// How a quantized tensor's values are decoded, as far as its stored parts are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartLayout {
    /// Scales, and zero points unless symmetric.
    Affine {
        /// Zero points are all 0 and not stored.
        symmetric: bool,
    },
    /// Level tables. (Decision thresholds, which only re-quantization needs, are not
    /// stored: decoding reads the levels alone.)
    Codebook,
}

/// The name, dtype and shape of one stored part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSpec {
    /// Full tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape; an upper bound when not `sized`.
    pub shape: Vec<usize>,
    /// Whether the shape is exact before computing (Huffman streams are not).
    pub sized: bool,
}

impl PartSpec {
    /// Bytes of the part.
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

/// How a quantized tensor is stored: codes dense (with a mask when pruned) or sparse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Decoding parameters.
    pub params: PartLayout,
    /// Code storage.
    pub storage: Storage,
    /// A keep-mask (dense storage of a pruned tensor).
    pub masked: bool,
}

/// Words of a Huffman stream of `symbols` symbols from an alphabet of `alphabet`, at most:
/// header, length table, and no code longer than the alphabet's size bound of 24 bits.
fn huffman_words_bound(symbols: usize, alphabet: usize) -> usize {
    (huffman::HEADER_BYTES + alphabet).div_ceil(4) + (symbols * 24).div_ceil(32)
}

/// The parts that store a quantized tensor `name` of `shape` (the streaming writer plans file
/// offsets and shards from them; Huffman streams have an upper bound, not their size).
pub fn part_specs(
    name: &str,
    shape: &[usize],
    bits: u32,
    granularity: Granularity,
    layout: Layout,
) -> Result<Vec<PartSpec>> {
    let numel: usize = shape.iter().product();
    let groups = numel / granularity.group_len(shape)?.max(1);
    let spec = |suffix: &str, dtype, shape| PartSpec {
        name: format!("{name}{suffix}"),
        dtype,
        shape,
        sized: true,
    };
    let mut parts = match layout.storage {
        Storage::Dense => vec![spec(
            CODES,
            Dtype::U32,
            vec![pack::packed_words(numel, bits)],
        )],
        Storage::SparseHuffman { index_bits } => [
            (SPARSE_CODES, 1usize << bits),
            (SPARSE_GAPS, 1 << index_bits),
        ]
        .into_iter()
        .map(|(suffix, alphabet)| PartSpec {
            sized: false,
            ..spec(
                suffix,
                Dtype::U32,
                vec![huffman_words_bound(numel, alphabet)],
            )
        })
        .collect(),
    };
    match layout.params {
        PartLayout::Affine { symmetric } => {
            parts.push(spec(SCALE, Dtype::F32, vec![groups]));
            if !symmetric {
                parts.push(spec(ZERO, Dtype::I32, vec![groups]));
            }
        }
        PartLayout::Codebook => parts.push(spec(LEVELS, Dtype::F32, vec![groups, 1 << bits])),
    }
    if layout.masked && layout.storage == Storage::Dense {
        parts.push(spec(MASK, Dtype::U32, vec![pack::packed_words(numel, 1)]));
    }
    Ok(parts)
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

/// A stream's bytes padded with zeros to whole words.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes
}

/// A padded stream's own bytes: its length follows from its header.
fn unpadded(bytes: &[u8]) -> &[u8] {
    match HuffmanStream::byte_len_from_header(bytes) {
        Some(n) if n <= bytes.len() => &bytes[..n],
        _ => bytes,
    }
}

impl QuantizedTensor {
    /// How this tensor's parts are laid out.
    pub fn part_layout(&self) -> PartLayout {
        match &self.encoding {
            Encoding::Affine { scheme, .. } => PartLayout::Affine {
                symmetric: scheme.is_symmetric(),
            },
            Encoding::Codebook { .. } => PartLayout::Codebook,
        }
    }
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
    let layout = Layout {
        params: qt.part_layout(),
        storage,
        masked: qt.mask.is_some(),
    };
    let specs = part_specs(name, &qt.shape, qt.bits, qt.granularity, layout)?;
    let streams = match storage {
        Storage::Dense => None,
        Storage::SparseHuffman { index_bits } => {
            if !matches!(qt.encoding, Encoding::Codebook { .. }) {
                return Err(Error::param(
                    "sparse storage",
                    "only codebook tensors are stored sparse",
                ));
            }
            let (_, codes, gaps) = sparse_streams(qt, index_bits)?;
            Some((padded(codes.to_bytes()), padded(gaps.to_bytes())))
        }
    };
    let mode = match &qt.encoding {
        Encoding::Affine { scheme, .. } => Some(scheme.mode),
        Encoding::Codebook { .. } => None,
    };
    let encoding = if mode.is_some() { "affine" } else { "codebook" };
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|spec| {
            let suffix = &spec.name[name.len()..];
            match (suffix, &qt.encoding) {
                (CODES, _) => pack::words_to_bytes(&qt.codes),
                (SCALE, Encoding::Affine { scale, .. }) => f32_bytes(scale),
                (ZERO, Encoding::Affine { zero_point, .. }) => i32_bytes(zero_point),
                (LEVELS, Encoding::Codebook { levels, .. }) => f32_bytes(levels),
                (MASK, _) => pack::words_to_bytes(qt.mask.as_deref().unwrap_or(&[])),
                (SPARSE_CODES, _) => streams.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
                (SPARSE_GAPS, _) => streams.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
                _ => Vec::new(),
            }
        })
        .collect();
    let parts: Vec<Part> = specs
        .into_iter()
        .zip(data)
        .map(|(spec, data)| Part {
            name: spec.name,
            dtype: spec.dtype,
            // An unsized part's shape is that of its data.
            shape: if spec.sized {
                spec.shape
            } else {
                vec![data.len() / 4]
            },
            data,
        })
        .collect();
    let stored: usize = parts.iter().map(|p| p.data.len()).sum();
    let record = TensorRecord {
        version: FORMAT_VERSION,
        method: method.to_string(),
        encoding: encoding.to_string(),
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

/// The record of tensor `shape` (originally `dtype`) stored as `specs` by a method.
#[allow(clippy::too_many_arguments)]
pub fn record(
    method: &str,
    layout: Option<PartLayout>,
    mode: Option<AffineMode>,
    bits: u32,
    granularity: Granularity,
    shape: &[usize],
    dtype: Dtype,
    detail: Option<String>,
    index_bits: Option<u32>,
    specs: &[PartSpec],
) -> TensorRecord {
    let numel: usize = shape.iter().product();
    let stored: usize = specs.iter().map(PartSpec::bytes).sum();
    TensorRecord {
        version: FORMAT_VERSION,
        method: method.to_string(),
        encoding: match layout {
            Some(PartLayout::Affine { .. }) => "affine",
            Some(PartLayout::Codebook) => "codebook",
            None => "half",
        }
        .to_string(),
        bits,
        mode,
        granularity,
        shape: shape.to_vec(),
        dtype: format!("{dtype:?}"),
        detail,
        bits_per_weight: stored as f64 * 8.0 / numel.max(1) as f64,
        index_bits,
    }
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
            words(fetch(CODES, Dtype::U32)?)?,
            match get(&format!("{name}{MASK}")) {
                Some(p) if p.dtype == Dtype::U32 => Some(words(p.data)?),
                Some(p) => {
                    return Err(bad(format!(
                        "part '{name}{MASK}' is {:?}, expected U32",
                        p.dtype
                    )));
                }
                None => None,
            },
        ),
        Some(index_bits) => {
            if numel as u64 >= u64::from(u32::MAX) {
                return Err(bad(format!("{numel} elements exceed 2^32 − 1")));
            }
            if !(1..=16).contains(&rec.bits) || !(1..=sparse::MAX_INDEX_BITS).contains(&index_bits)
            {
                return Err(bad(format!(
                    "sparse record with {} code bits and {index_bits} index bits",
                    rec.bits
                )));
            }
            let stream = |suffix: &str, alphabet: u64| -> Result<Vec<u32>> {
                let s = HuffmanStream::from_bytes(unpadded(fetch(suffix, Dtype::U32)?))
                    .map_err(|e| bad(format!("part '{name}{suffix}': {e}")))?;
                if u64::from(s.alphabet) != alphabet {
                    return Err(bad(format!(
                        "part '{name}{suffix}' codes {} symbols, expected {alphabet}",
                        s.alphabet
                    )));
                }
                huffman::decode(&s).map_err(|e| bad(format!("part '{name}{suffix}': {e}")))
            };
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
            thresholds: None,
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
