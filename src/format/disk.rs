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
use super::quantized::{Encoding, Granularity, MAX_BITS, QuantizedTensor, checked_numel};
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
    // What reading refuses is refused here, so no file is written that cannot be read back.
    if let Some(max) = dtype_max(&format!("{dtype:?}")) {
        qt.check_decoded_range(max)?;
    }
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
                rec.tool.escape_debug(),
                rec.version
            ));
        }
    }
    for (key, value) in meta {
        if let Some(name) = key.strip_prefix(TENSOR_KEY_PREFIX) {
            let rec: TensorRecord = serde_json::from_str(value).map_err(|e| {
                format!(
                    "metadata {} is not a wgquant tensor record: {e}",
                    quoted(key)
                )
            })?;
            if rec.version > FORMAT_VERSION {
                return Err(format!(
                    "metadata {} has format version {}",
                    quoted(key),
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

/// Elements a sparse record may decode to in memory whatever the size of its streams: 2^26
/// (256 MiB of f32 output).
pub const SPARSE_DENSE_FLOOR: usize = 1 << 26;

/// Further elements a sparse record may decode to in memory per byte of its two streams. A
/// kept element costs at least 2 bits (code and gap), so 1024 admits any tensor kept at a
/// density of 1/256 or more; sparser ones beyond the floor are read by `sparse::DenseBlocks`.
pub const SPARSE_ELEMENTS_PER_BYTE: usize = 1024;

/// The largest magnitude a record of original dtype `dtype` may decode to (`None`: a dtype
/// decoding cannot write). Decoded values are computed in f32 and must be finite there; the
/// conversion to F16/BF16 saturates at that dtype's largest value (`checkpoint::file::from_f32`),
/// since a grid end point may lie just past it (an F16 input at ±65504 under symmetric int4
/// has −8·s = −69871).
fn dtype_max(dtype: &str) -> Option<f64> {
    match dtype {
        "F32" | "F16" | "BF16" => Some(f64::from(f32::MAX)),
        _ => None,
    }
}

/// `'name'` with control characters escaped, so that a message naming it stays one line.
pub fn quoted(name: &str) -> String {
    format!("'{}'", name.escape_debug())
}

/// An error about the record of tensor `name`.
fn record_error(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::param("wgquant record", format!("tensor {}: {msg}", quoted(name)))
}

/// The part tensors of quantized tensor `name`, each checked before its bytes are used.
struct Parts<'n, G> {
    name: &'n str,
    get: G,
}

impl<'a, G: Fn(&str) -> Option<StoredPart<'a>>> Parts<'_, G> {
    /// Part `suffix`, which must exist and be of `dtype`.
    fn fetch(&self, suffix: &str, dtype: Dtype) -> Result<&'a [u8]> {
        let name = self.name;
        let p = (self.get)(&format!("{name}{suffix}")).ok_or_else(|| {
            record_error(
                name,
                format!("part {} is missing", quoted(&format!("{name}{suffix}"))),
            )
        })?;
        if p.dtype != dtype {
            return Err(record_error(
                name,
                format!(
                    "part {} is {:?}, expected {dtype:?}",
                    quoted(&format!("{name}{suffix}")),
                    p.dtype
                ),
            ));
        }
        Ok(p.data)
    }

    /// Part `suffix` of exactly `count` 4-byte elements of `dtype`.
    fn exact(&self, suffix: &str, dtype: Dtype, count: usize) -> Result<&'a [u8]> {
        let data = self.fetch(suffix, dtype)?;
        if count.checked_mul(4) != Some(data.len()) {
            return Err(record_error(
                self.name,
                format!(
                    "part {} holds {} bytes, expected {count} {dtype:?} values",
                    quoted(&format!("{}{suffix}", self.name)),
                    data.len()
                ),
            ));
        }
        Ok(data)
    }
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ints(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Checks the element count, bits and dtype of a record read from a file; returns the
/// element count and the largest value the dtype holds.
fn checked_record(name: &str, rec: &TensorRecord) -> Result<(usize, f64)> {
    let numel = checked_numel(&rec.shape).ok_or_else(|| {
        record_error(
            name,
            format!("shape {:?} has more elements than usize holds", rec.shape),
        )
    })?;
    if !(1..=MAX_BITS).contains(&rec.bits) {
        return Err(record_error(
            name,
            format!("{} bits outside 1..={MAX_BITS}", rec.bits),
        ));
    }
    let max = dtype_max(&rec.dtype).ok_or_else(|| {
        record_error(
            name,
            format!("unsupported original dtype {}", quoted(&rec.dtype)),
        )
    })?;
    Ok((numel, max))
}

/// The sparse stream of the sparse-stored tensor `name` (record `rec`), its two Huffman parts
/// decoded and checked, without building the dense tensor: a streaming reader turns it into
/// blocks with `sparse::DenseBlocks`. Allocates at most 4 bytes per stored bit.
pub fn sparse_stream_from_parts<'a>(
    name: &str,
    rec: &TensorRecord,
    get: impl Fn(&str) -> Option<StoredPart<'a>>,
) -> Result<SparseStream> {
    let (numel, _) = checked_record(name, rec)?;
    let bad = |msg: String| record_error(name, msg);
    let index_bits = rec
        .index_bits
        .ok_or_else(|| bad("the record has no index_bits: not sparse storage".into()))?;
    if numel as u64 >= u64::from(u32::MAX) {
        return Err(bad(format!("{numel} elements exceed 2^32 − 1")));
    }
    if !(1..=sparse::MAX_INDEX_BITS).contains(&index_bits) {
        return Err(bad(format!(
            "sparse record with {index_bits} index bits (1..={})",
            sparse::MAX_INDEX_BITS
        )));
    }
    let parts = Parts { name, get };
    let stream = |suffix: &str, alphabet: u64| -> Result<Vec<u32>> {
        let s = HuffmanStream::from_bytes(unpadded(parts.fetch(suffix, Dtype::U32)?))
            .map_err(|e| bad(format!("part {}: {e}", quoted(&format!("{name}{suffix}")))))?;
        if u64::from(s.alphabet) != alphabet {
            return Err(bad(format!(
                "part {} codes {} symbols, expected {alphabet}",
                quoted(&format!("{name}{suffix}")),
                s.alphabet
            )));
        }
        huffman::decode(&s)
            .map_err(|e| bad(format!("part {}: {e}", quoted(&format!("{name}{suffix}")))))
    };
    Ok(SparseStream {
        len: numel as u64,
        index_bits,
        gaps: stream(SPARSE_GAPS, 1 << index_bits)?,
        codes: stream(SPARSE_CODES, 1 << rec.bits)?,
    })
}

/// A record's checked element count, the largest value it may decode to, and its parameters.
struct RecordParams {
    numel: usize,
    dtype_max: f64,
    encoding: Encoding,
}

/// The checked record and its parameters, each part of exactly the size the groups imply.
fn read_params<'a, G: Fn(&str) -> Option<StoredPart<'a>>>(
    name: &str,
    rec: &TensorRecord,
    parts: &Parts<'_, G>,
) -> Result<RecordParams> {
    let bad = |msg: String| record_error(name, msg);
    let (numel, dtype_max) = checked_record(name, rec)?;
    let groups = numel
        / rec
            .granularity
            .group_len(&rec.shape)
            .map_err(|e| bad(e.to_string()))?
            .max(1);
    let encoding = match rec.encoding.as_str() {
        "affine" => {
            let mode = rec
                .mode
                .ok_or_else(|| bad("affine record without mode".into()))?;
            let scheme = AffineScheme::new(rec.bits, mode).map_err(|e| bad(e.to_string()))?;
            let scale = floats(parts.exact(SCALE, Dtype::F32, groups)?);
            // Symmetric zero points are not stored: the scales' bytes justify their count.
            let zero_point = if scheme.is_symmetric() {
                vec![0; groups]
            } else {
                ints(parts.exact(ZERO, Dtype::I32, groups)?)
            };
            Encoding::Affine {
                scheme,
                scale,
                zero_point,
            }
        }
        "codebook" => {
            let count = groups
                .checked_mul(1 << rec.bits)
                .ok_or_else(|| bad(format!("{groups} level tables overflow")))?;
            Encoding::Codebook {
                levels: floats(parts.exact(LEVELS, Dtype::F32, count)?),
                thresholds: None,
            }
        }
        other => return Err(bad(format!("unknown encoding {}", quoted(other)))),
    };
    Ok(RecordParams {
        numel,
        dtype_max,
        encoding,
    })
}

/// Refuses sparse storage whose dense form, allocated whole by [`from_parts`], is more than
/// its streams justify.
fn check_sparse_size<'a, G: Fn(&str) -> Option<StoredPart<'a>>>(
    name: &str,
    numel: usize,
    parts: &Parts<'_, G>,
) -> Result<()> {
    // The dense form is allocated whole here: bounded by what the streams justify.
    let stream_bytes: usize = [SPARSE_CODES, SPARSE_GAPS]
        .iter()
        .map(|suffix| parts.fetch(suffix, Dtype::U32).map(<[u8]>::len))
        .sum::<Result<usize>>()?;
    let allowed = stream_bytes
        .saturating_mul(SPARSE_ELEMENTS_PER_BYTE)
        .saturating_add(SPARSE_DENSE_FLOOR);
    if numel > allowed {
        return Err(record_error(
            name,
            format!(
                "sparse storage of {stream_bytes} bytes claims {numel} elements, more than \
             the {allowed} it may decode to in memory ({SPARSE_DENSE_FLOOR} + \
             {SPARSE_ELEMENTS_PER_BYTE} per byte)"
            ),
        ));
    }
    Ok(())
}

/// Checks the record and parts of `name` as [`from_parts`] does, without decoding or copying
/// its codes (sparse streams: their headers): every part's size against the checked shape,
/// and the parameters (scales, zero points, levels) as [`QuantizedTensor::validate`] checks
/// them. For `inspect`, and for readers that map the codes in windows.
pub fn check_parts<'a>(
    name: &str,
    rec: &TensorRecord,
    get: impl Fn(&str) -> Option<StoredPart<'a>>,
) -> Result<()> {
    let bad = |msg: String| record_error(name, msg);
    let parts = Parts { name, get: &get };
    let RecordParams {
        numel,
        dtype_max,
        encoding,
    } = read_params(name, rec, &parts)?;
    let groups = numel / rec.granularity.group_len(&rec.shape)?.max(1);
    encoding
        .check(rec.bits, groups)
        .and_then(|_| encoding.check_decoded_range(dtype_max))
        .map_err(|e| bad(e.to_string()))?;
    match rec.index_bits {
        None => {
            let code_words = pack::checked_packed_words(numel, rec.bits)
                .ok_or_else(|| bad(format!("{numel} codes of {} bits overflow", rec.bits)))?;
            parts.exact(CODES, Dtype::U32, code_words)?;
            if get(&format!("{name}{MASK}")).is_some() {
                parts.exact(MASK, Dtype::U32, pack::packed_words(numel, 1))?;
            }
        }
        Some(index_bits) => {
            if !matches!(encoding, Encoding::Codebook { .. }) {
                return Err(bad("sparse storage of a non-codebook tensor".into()));
            }
            check_sparse_size(name, numel, &parts)?;
            if !(1..=sparse::MAX_INDEX_BITS).contains(&index_bits) {
                return Err(bad(format!("sparse record with {index_bits} index bits")));
            }
            for (suffix, alphabet) in [
                (SPARSE_CODES, 1u64 << rec.bits),
                (SPARSE_GAPS, 1 << index_bits),
            ] {
                let s = HuffmanStream::from_bytes(unpadded(parts.fetch(suffix, Dtype::U32)?))
                    .map_err(|e| {
                        bad(format!("part {}: {e}", quoted(&format!("{name}{suffix}"))))
                    })?;
                if u64::from(s.alphabet) != alphabet {
                    return Err(bad(format!(
                        "part {} codes {} symbols, expected {alphabet}",
                        quoted(&format!("{name}{suffix}")),
                        s.alphabet
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Rebuilds the quantized tensor `name` from its record and a lookup of part tensors. Every
/// size is checked against the bytes present before anything is allocated, and every value
/// the parameters decode to must be finite and fit the record's original dtype.
pub fn from_parts<'a>(
    name: &str,
    rec: &TensorRecord,
    get: impl Fn(&str) -> Option<StoredPart<'a>>,
) -> Result<QuantizedTensor> {
    let bad = |msg: String| record_error(name, msg);
    let parts = Parts { name, get: &get };
    let RecordParams {
        numel,
        dtype_max,
        encoding,
    } = read_params(name, rec, &parts)?;
    let (codes, mask) = match rec.index_bits {
        None => {
            let code_words = pack::checked_packed_words(numel, rec.bits)
                .ok_or_else(|| bad(format!("{numel} codes of {} bits overflow", rec.bits)))?;
            let codes = words(parts.exact(CODES, Dtype::U32, code_words)?);
            let mask = match get(&format!("{name}{MASK}")) {
                Some(_) => Some(words(parts.exact(
                    MASK,
                    Dtype::U32,
                    pack::packed_words(numel, 1),
                )?)),
                None => None,
            };
            (codes, mask)
        }
        Some(_) => {
            if !matches!(encoding, Encoding::Codebook { .. }) {
                return Err(bad("sparse storage of a non-codebook tensor".into()));
            }
            check_sparse_size(name, numel, &parts)?;
            let s = sparse_stream_from_parts(name, rec, &get)?;
            let (mask, codes) = sparse::decode(&s, rec.bits).map_err(|e| bad(e.to_string()))?;
            (codes, Some(mask))
        }
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
    qt.check_decoded_range(dtype_max)
        .map_err(|e| bad(format!("{e} ({})", rec.dtype)))?;
    Ok(qt)
}

/// Checks the record of a half-precision cast `name` (encoding "half", stored under its own
/// name as `part`) against the stored tensor: the same shape, a float dtype of 16 bits, and
/// an original dtype that decoding can write.
pub fn check_cast(name: &str, rec: &TensorRecord, part: &StoredPart<'_>) -> Result<()> {
    let bad = |msg: String| record_error(name, msg);
    checked_numel(&rec.shape).ok_or_else(|| {
        bad(format!(
            "shape {:?} has more elements than usize holds",
            rec.shape
        ))
    })?;
    dtype_max(&rec.dtype)
        .ok_or_else(|| bad(format!("unsupported original dtype {}", quoted(&rec.dtype))))?;
    if !matches!(part.dtype, Dtype::F16 | Dtype::BF16) {
        return Err(bad(format!(
            "a half-precision cast stored as {:?}",
            part.dtype
        )));
    }
    if rec.shape != part.shape {
        return Err(bad(format!(
            "the record's shape {:?} is not the stored {:?}",
            rec.shape, part.shape
        )));
    }
    Ok(())
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
