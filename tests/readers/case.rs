//! The byte forms the fuzz targets read, shared by the stable harness (`tests/fuzz.rs`), the
//! libFuzzer targets (`fuzz/`) and the corpus generator, and the calls each target makes.
//!
//! * records: `"WQFZ" | u32 name length | name | u32 record length | record JSON | parts`,
//!   each part `u8 suffix (index into disk::PART_SUFFIXES) | u8 dtype (0 U32, 1 F32, 2 I32,
//!   else U8) | u32 length | bytes`; a truncated tail is dropped.
//! * sparse: `u64 len | u32 index_bits | u32 code_bits | u32 entries | entries × u32 gaps |
//!   the rest as u32 codes`.
//! * huffman: the serialized stream itself (`HuffmanStream::to_bytes`).
//! * safetensors: the file itself.
//!
//! Integers little-endian. A target returns `Ok(true)` when the input was read, `Ok(false)`
//! when it was refused cleanly (or is not of its form), `Err` for a defect short of a panic
//! (an error of several lines, a result that contradicts its input).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use wgquant::format::disk::{self, PART_SUFFIXES, StoredPart};
use wgquant::format::huffman::{self, HuffmanStream};
use wgquant::format::sparse::{self, DenseBlocks, SparseStream};

/// Magic of a records case.
pub const MAGIC: &[u8; 4] = b"WQFZ";

/// A quantized tensor's record and parts, as the records target reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordCase {
    /// Tensor name.
    pub name: String,
    /// The record's JSON text (lossy UTF-8 once mutated).
    pub record: String,
    /// `(suffix index, dtype code, bytes)` per part.
    pub parts: Vec<(u8, u8, Vec<u8>)>,
}

/// Bytes `[at, at + n)` and the offset after them.
fn take(b: &[u8], at: usize, n: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(n)?;
    Some((b.get(at..end)?, end))
}

fn u32_at(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let (v, next) = take(b, at, 4)?;
    Some((u32::from_le_bytes(v.try_into().ok()?), next))
}

impl RecordCase {
    /// The byte form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for text in [&self.name, &self.record] {
            out.extend((text.len() as u32).to_le_bytes());
            out.extend(text.as_bytes());
        }
        for (suffix, dtype, data) in &self.parts {
            out.extend([*suffix, *dtype]);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out
    }

    /// Parses the byte form; `None` without the magic or the two texts.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (magic, at) = take(b, 0, 4)?;
        if magic != MAGIC {
            return None;
        }
        let (n, at) = u32_at(b, at)?;
        let (name, at) = take(b, at, n as usize)?;
        let (n, at) = u32_at(b, at)?;
        let (record, mut at) = take(b, at, n as usize)?;
        let mut parts = Vec::new();
        while let Some((head, next)) = take(b, at, 2) {
            let Some((n, next)) = u32_at(b, next) else {
                break;
            };
            let Some((data, next)) = take(b, next, n as usize) else {
                break;
            };
            parts.push((head[0], head[1], data.to_vec()));
            at = next;
        }
        Some(Self {
            name: String::from_utf8_lossy(name).into_owned(),
            record: String::from_utf8_lossy(record).into_owned(),
            parts,
        })
    }
}

/// The dtype of a part's code.
pub fn dtype_of(code: u8) -> Dtype {
    match code {
        0 => Dtype::U32,
        1 => Dtype::F32,
        2 => Dtype::I32,
        _ => Dtype::U8,
    }
}

/// The code of a part's dtype.
pub fn code_of(dtype: Dtype) -> u8 {
    match dtype {
        Dtype::U32 => 0,
        Dtype::F32 => 1,
        Dtype::I32 => 2,
        _ => 3,
    }
}

/// Records target: the record through `disk::records`, then `disk::from_parts` and, for a
/// sparse record, `disk::sparse_stream_from_parts`. `Ok(true)` when the tensor was rebuilt.
pub fn run_records(input: &[u8]) -> Result<bool, String> {
    let Some(case) = RecordCase::from_bytes(input) else {
        return Ok(false);
    };
    let meta: HashMap<String, String> = [
        (
            format!("{}{}", disk::TENSOR_KEY_PREFIX, case.name),
            case.record.clone(),
        ),
        (
            disk::FILE_KEY.to_string(),
            r#"{"format":"wgquant","version":1,"tool":"fuzz"}"#.into(),
        ),
    ]
    .into_iter()
    .collect();
    let records = match disk::records(Some(&meta)) {
        Ok(r) => r,
        Err(e) => return check_one_line(&e).map(|_| false),
    };
    let parts: HashMap<String, (Dtype, &[u8])> = case
        .parts
        .iter()
        .map(|(s, d, data)| {
            let suffix = PART_SUFFIXES[*s as usize % PART_SUFFIXES.len()];
            (
                format!("{}{suffix}", case.name),
                (dtype_of(*d), data.as_slice()),
            )
        })
        .collect();
    let get = |n: &str| {
        parts.get(n).map(|&(dtype, data)| StoredPart {
            dtype,
            shape: vec![data.len() / (dtype.bitsize() / 8).max(1)],
            data,
        })
    };
    let mut rebuilt = false;
    for (name, rec) in &records {
        if rec.index_bits.is_some() {
            let _ = disk::sparse_stream_from_parts(name, rec, get);
        }
        match disk::from_parts(name, rec, get) {
            Ok(qt) => {
                qt.validate()
                    .map_err(|e| format!("rebuilt but invalid: {e}"))?;
                rebuilt = true;
            }
            Err(e) => check_one_line(&e.to_string())?,
        }
    }
    Ok(rebuilt)
}

/// Huffman target: parse, cut back to the header's length, decode. `Ok(true)` when decoded.
pub fn run_huffman(input: &[u8]) -> Result<bool, String> {
    let own = match HuffmanStream::byte_len_from_header(input) {
        Some(n) if n <= input.len() => &input[..n],
        _ => input,
    };
    let s = match HuffmanStream::from_bytes(own) {
        Ok(s) => s,
        Err(e) => return check_one_line(&e.to_string()).map(|_| false),
    };
    match huffman::decode(&s) {
        Ok(symbols) => {
            if symbols.len() as u64 != s.symbols || symbols.iter().any(|&x| x >= s.alphabet) {
                return Err(format!(
                    "decoded {} symbols outside the header",
                    symbols.len()
                ));
            }
            Ok(true)
        }
        Err(e) => check_one_line(&e.to_string()).map(|_| false),
    }
}

/// Largest dense length the sparse target decodes whole (`sparse::decode` allocates it; a
/// reader of files bounds it first, as `disk::from_parts` does).
pub const SPARSE_WHOLE_MAX: u64 = 1 << 22;

/// Sparse stream of the sparse byte form.
pub fn sparse_case(input: &[u8]) -> Option<(SparseStream, u32)> {
    let (len, at) = take(input, 0, 8)?;
    let len = u64::from_le_bytes(len.try_into().ok()?);
    let (index_bits, at) = u32_at(input, at)?;
    let (code_bits, at) = u32_at(input, at)?;
    let (entries, at) = u32_at(input, at)?;
    let words: Vec<u32> = input[at..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let split = (entries as usize).min(words.len());
    Some((
        SparseStream {
            len,
            index_bits,
            gaps: words[..split].to_vec(),
            codes: words[split..].to_vec(),
        },
        code_bits,
    ))
}

/// The sparse byte form of a stream.
pub fn sparse_bytes(s: &SparseStream, code_bits: u32) -> Vec<u8> {
    let mut out = s.len.to_le_bytes().to_vec();
    for v in [s.index_bits, code_bits, s.gaps.len() as u32] {
        out.extend(v.to_le_bytes());
    }
    out.extend(s.gaps.iter().chain(&s.codes).flat_map(|w| w.to_le_bytes()));
    out
}

/// Sparse target: whole decoding when the length is small, and the first 64 blocks of 4096
/// elements whatever the length; both must agree. `Ok(true)` when decoded.
pub fn run_sparse(input: &[u8]) -> Result<bool, String> {
    let Some((s, code_bits)) = sparse_case(input) else {
        return Ok(false);
    };
    let whole = (s.len <= SPARSE_WHOLE_MAX).then(|| sparse::decode(&s, code_bits));
    let blocks = match DenseBlocks::new(&s, code_bits, 4096) {
        // 65 calls: up to 64 blocks and the check of what the stream holds after them.
        Ok(b) => b.take(65).collect::<Result<Vec<_>, _>>(),
        Err(e) => Err(e),
    };
    match (&whole, &blocks) {
        (Some(Ok((mask, _))), Ok(b)) => {
            let words: usize = b.iter().map(|b| b.mask.len()).sum();
            if s.len <= 64 * 4096 && words != mask.len() {
                return Err(format!(
                    "blocks hold {words} mask words, whole {}",
                    mask.len()
                ));
            }
            Ok(true)
        }
        (Some(Ok(_)), Err(e)) if s.len <= 64 * 4096 => {
            Err(format!("whole decoding succeeded, blocks failed: {e}"))
        }
        (Some(Err(e)), Ok(_)) if s.len <= 64 * 4096 => {
            Err(format!("blocks succeeded, whole decoding failed: {e}"))
        }
        _ => {
            for e in whole
                .iter()
                .filter_map(|w| w.as_ref().err())
                .chain(blocks.as_ref().err())
            {
                check_one_line(&e.to_string())?;
            }
            Ok(false)
        }
    }
}

/// Safetensors target: `Checkpoint::open` and its listing, `Source::open` and its records,
/// every quantized tensor rebuilt (`load_quantized`), `inspect_file`, and when the tensors
/// are small (at most `dequantize_max` elements in all) `dequantize_file` on the CPU into
/// `out`. `Ok(true)` when the file was dequantized.
pub fn run_safetensors(path: &Path, out: &Path, dequantize_max: usize) -> Result<bool, String> {
    use wgquant::checkpoint::{self, Checkpoint, dequantize, source::Source};
    if let Ok(c) = Checkpoint::open(path) {
        let _ = c.metadata();
        let _ = c.tensors();
    }
    let source = match Source::open(path) {
        Ok(s) => s,
        Err(e) => return check_one_line(&e.to_string()).map(|_| false),
    };
    let _ = source.records();
    let loaded = match dequantize::load_quantized(&source) {
        Ok(l) => l,
        Err(e) => return check_one_line(&e.to_string()).map(|_| false),
    };
    if let Err(e) = checkpoint::inspect_file(path) {
        check_one_line(&e.to_string())?;
    }
    let elements: usize = loaded
        .iter()
        .filter_map(|l| l.quantized.as_ref())
        .map(|q| q.numel())
        .chain(source.tensors().iter().map(|t| t.numel()))
        .fold(0, usize::saturating_add);
    if elements > dequantize_max {
        return Ok(false);
    }
    match checkpoint::dequantize_file(&wgquant::quant::Backend::Cpu, path, out) {
        Ok(_) => Ok(true),
        Err(e) => check_one_line(&e.to_string()).map(|_| false),
    }
}

/// An error message must be one line.
pub fn check_one_line(msg: &str) -> Result<(), String> {
    if msg.lines().count() > 1 {
        return Err(format!("error of several lines: {msg}"));
    }
    Ok(())
}

/// GGUF target: the header reader over a whole file. `Ok(true)` when it parsed; every tensor
/// it accepts must lie within the file.
pub fn run_gguf(input: &[u8]) -> Result<bool, String> {
    let path = std::path::Path::new("case.gguf");
    match wgquant::format::gguf_read::read_header(path, input, input.len() as u64) {
        Ok(h) => {
            for t in &h.tensors {
                let end = h.data_start + t.offset + t.bytes;
                if end > input.len() as u64 {
                    return Err(format!("tensor '{}' accepted past the end", t.name));
                }
            }
            Ok(true)
        }
        Err(e) => check_one_line(&e.to_string()).map(|_| false),
    }
}
