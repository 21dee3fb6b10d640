//! Reading a GGUF header (versions 2 and 3): every metadata value type, arrays of arrays,
//! `general.alignment`, and the tensor table, checked against the file's length before
//! anything is sized from it (the checks ggml's `gguf.cpp` makes, plus ours: every count is
//! bounded by the bytes that remain, so no allocation follows an unchecked field).

use std::collections::HashSet;
use std::path::Path;

use super::gguf::{ALIGNMENT, GgmlType, MAGIC, MAX_DIMS, MAX_NAME_BYTES};
use crate::error::{Error, Result};

/// Nesting depth of arrays of arrays accepted (the reference has no limit; recursion must).
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value, any of GGUF's thirteen types.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8 (bytes as stored; GGUF promises UTF-8 but readers must not trust it).
    String(Vec<u8>),
    /// Type 9: element type id and the elements.
    Array(u32, Vec<MetaValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// One tensor of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    /// Name.
    pub name: String,
    /// Shape, outermost first (GGUF stores innermost first).
    pub shape: Vec<usize>,
    /// Encoding.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

/// A parsed header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// 2 or 3.
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// File offset of the data section.
    pub data_start: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            msg: format!("GGUF: {}", msg.into()),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!("{what} runs past the end of the file")));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// A count of items of at least `min_bytes` each, refused if they cannot fit in what
    /// remains (so nothing is allocated from a lying count).
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err(self.err(format!("{what} {n} cannot fit in the file")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<Vec<u8>> {
        let n = self.count(1, &format!("{what} length"))?;
        Ok(self.take(n, what)?.to_vec())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        let b = |c: &mut Self, n| c.take(n, "metadata value");
        Ok(match ty {
            0 => MetaValue::U8(b(self, 1)?[0]),
            1 => MetaValue::I8(b(self, 1)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(b(self, 2)?.try_into().unwrap())),
            3 => MetaValue::I16(i16::from_le_bytes(b(self, 2)?.try_into().unwrap())),
            4 => MetaValue::U32(u32::from_le_bytes(b(self, 4)?.try_into().unwrap())),
            5 => MetaValue::I32(i32::from_le_bytes(b(self, 4)?.try_into().unwrap())),
            6 => MetaValue::F32(f32::from_le_bytes(b(self, 4)?.try_into().unwrap())),
            7 => match b(self, 1)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                v => return Err(self.err(format!("boolean value {v}"))),
            },
            8 => MetaValue::String(self.string("metadata string")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32("array type")?;
                let min = min_value_bytes(elem)
                    .ok_or_else(|| self.err(format!("unknown metadata value type {elem}")))?;
                let n = self.count(min, "array length")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                MetaValue::Array(elem, items)
            }
            10 => MetaValue::U64(self.u64("metadata value")?),
            11 => MetaValue::I64(self.u64("metadata value")? as i64),
            12 => MetaValue::F64(f64::from_le_bytes(b(self, 8)?.try_into().unwrap())),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

/// The fewest bytes a value of type `ty` occupies; `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

/// Parses the header of a GGUF file of `file_len` bytes whose first bytes are `bytes` (all of
/// the header; the whole file will do). `path` names the file in errors.
pub fn read_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<GgufHeader> {
    let mut c = Cursor { bytes, at: 0, path };
    if c.u32("magic")? != MAGIC {
        return Err(c.err("not a GGUF file (bad magic)"));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(c.err(format!("version {version} is not supported (2 and 3 are)")));
    }
    let n_tensors = c.u64("tensor count")?;
    // Smallest tensor info: name length, dims count, type, offset.
    if n_tensors > (c.remaining() / 24) as u64 {
        return Err(c.err(format!("tensor count {n_tensors} cannot fit in the file")));
    }
    // Smallest pair: key length, value type, one byte.
    let n_kv = c.count(13, "metadata count")?;
    let mut metadata = Vec::with_capacity(n_kv);
    let mut keys = HashSet::new();
    for _ in 0..n_kv {
        let key = String::from_utf8(c.string("metadata key")?)
            .map_err(|_| c.err("a metadata key is not UTF-8"))?;
        if !keys.insert(key.clone()) {
            return Err(c.err(format!("duplicate metadata key '{}'", key.escape_debug())));
        }
        let ty = c.u32("metadata type")?;
        let value = c.value(ty, 0)?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => ALIGNMENT,
        Some((_, MetaValue::U32(a))) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(c.err(format!("general.alignment {v:?} is not a power of two u32")));
        }
    };
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let raw = c.string("tensor name")?;
        let name = String::from_utf8(raw).map_err(|_| c.err("a tensor name is not UTF-8"))?;
        let terr = |msg: String| Error::Tensor {
            path: path.to_path_buf(),
            // Names come from the file: escaped, so an error stays one printable line.
            tensor: name.escape_debug().to_string(),
            msg,
        };
        if name.len() >= MAX_NAME_BYTES {
            return Err(terr(format!(
                "name of {} bytes (limit {})",
                name.len(),
                MAX_NAME_BYTES - 1
            )));
        }
        if !names.insert(name.clone()) {
            return Err(terr("appears twice in the tensor table".into()));
        }
        let n_dims = c.u32("tensor dimension count")? as usize;
        if n_dims > MAX_DIMS {
            return Err(terr(format!(
                "{n_dims} axes (GGUF allows at most {MAX_DIMS})"
            )));
        }
        let mut shape = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            shape.push(c.u64("tensor dimension")?);
        }
        shape.reverse();
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d).filter(|&n| n < 1 << 62))
            .ok_or_else(|| terr(format!("shape {shape:?} has too many elements")))?;
        let id = c.u32("tensor type")?;
        let ty = GgmlType::from_id(id).ok_or_else(|| terr(format!("unknown ggml type {id}")))?;
        let inner = shape.last().copied().unwrap_or(1);
        if inner % ty.block_size() as u64 != 0 {
            return Err(terr(format!(
                "innermost axis {inner} does not fill {}-element {} blocks",
                ty.block_size(),
                ty.name()
            )));
        }
        let bytes = numel / ty.block_size() as u64 * ty.type_size() as u64;
        let offset = c.u64("tensor offset")?;
        if offset % alignment != 0 {
            return Err(terr(format!(
                "offset {offset} is not a multiple of {alignment}"
            )));
        }
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| terr("an axis does not fit this machine's usize".into()))?;
        tensors.push(GgufTensor {
            name,
            shape,
            ty,
            offset,
            bytes,
        });
    }
    let data_start = (c.at as u64).next_multiple_of(alignment);
    for t in &tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.bytes));
        if end.is_none_or(|e| e > file_len) {
            return Err(Error::Tensor {
                path: path.to_path_buf(),
                tensor: t.name.escape_debug().to_string(),
                msg: format!(
                    "data ({} bytes at {}) runs past the end of the file",
                    t.bytes, t.offset
                ),
            });
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}
