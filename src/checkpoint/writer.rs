//! Streaming safetensors output: tensor data is appended to a temporary file as it is produced
//! and the header, which must come first, is written last into space reserved at the start
//! (padded with spaces, as the format allows). Nothing appears under the final name until
//! [`Finished::persist`], after every shard is complete.

use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::output::TempOutput;
use crate::error::{Error, Result};

/// Bytes reserved per tensor for its header entry beyond its name: dtype, shape and two
/// offsets of up to 20 digits each, with JSON punctuation.
const HEADER_BYTES_PER_TENSOR: usize = 160;

/// Header space to reserve for `names` and metadata of `metadata_bytes` bytes.
pub fn header_reserve<'a>(names: impl IntoIterator<Item = &'a str>, metadata_bytes: usize) -> u64 {
    let tensors: usize = names
        .into_iter()
        .map(|n| 2 * n.len() + HEADER_BYTES_PER_TENSOR)
        .sum();
    // JSON escaping can double a name or a metadata string; 4 KiB of slack besides.
    ((8 + tensors + 2 * metadata_bytes + 4096) as u64).next_multiple_of(8)
}

struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// One safetensors file being written.
pub struct StreamWriter {
    path: PathBuf,
    tmp: TempOutput,
    out: std::io::BufWriter<std::fs::File>,
    reserved: u64,
    pos: u64,
    entries: Vec<Entry>,
    open: Option<(Entry, u64)>,
}

impl StreamWriter {
    /// Starts `path` (a temporary file beside it) with `reserved` bytes kept for the header.
    pub fn create(path: &Path, reserved: u64) -> Result<Self> {
        let tmp = TempOutput::create(path)?;
        let mut file = tmp.reopen()?;
        file.seek(SeekFrom::Start(reserved))
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.into(),
            tmp,
            out: std::io::BufWriter::with_capacity(4 << 20, file),
            reserved,
            pos: 0,
            entries: Vec::new(),
            open: None,
        })
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.path, e)
    }

    /// Starts tensor `name` of `bytes` bytes; its data follows through [`StreamWriter::write`].
    pub fn begin(&mut self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<()> {
        if self.open.is_some() {
            return Err(Error::param("StreamWriter", "a tensor is still open"));
        }
        let bytes = (shape.iter().product::<usize>() * dtype.bitsize() / 8) as u64;
        let entry = Entry {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            start: self.pos,
            end: self.pos + bytes,
        };
        self.open = Some((entry, bytes));
        Ok(())
    }

    /// Appends data of the open tensor.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((entry, _)) = &self.open else {
            return Err(Error::param("StreamWriter", "no tensor is open"));
        };
        if self.pos + data.len() as u64 > entry.end {
            return Err(Error::param(
                "StreamWriter",
                format!(
                    "tensor '{}' got more bytes than its shape holds",
                    entry.name
                ),
            ));
        }
        self.out.write_all(data).map_err(|e| self.io(e))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Closes the open tensor, checking it got exactly its bytes.
    pub fn end(&mut self) -> Result<()> {
        let Some((entry, _)) = self.open.take() else {
            return Err(Error::param("StreamWriter", "no tensor is open"));
        };
        if self.pos != entry.end {
            return Err(Error::param(
                "StreamWriter",
                format!(
                    "tensor '{}' got {} of {} bytes",
                    entry.name,
                    self.pos - entry.start,
                    entry.end - entry.start
                ),
            ));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// A whole tensor at once.
    pub fn tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Result<()> {
        self.begin(name, dtype, shape)?;
        self.write(data)?;
        self.end()
    }

    /// Bytes of tensor data written so far.
    pub fn data_bytes(&self) -> u64 {
        self.pos
    }

    /// Writes the header and flushes; the file stays temporary until persisted.
    pub fn finish(mut self, metadata: &HashMap<String, String>) -> Result<Finished> {
        if let Some((e, _)) = &self.open {
            return Err(Error::param(
                "StreamWriter",
                format!("tensor '{}' was not finished", e.name),
            ));
        }
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            let meta: BTreeMap<&String, &String> = metadata.iter().collect();
            header.insert("__metadata__".into(), serde_json::json!(meta));
        }
        for e in &self.entries {
            header.insert(
                e.name.clone(),
                serde_json::json!({ "dtype": e.dtype, "shape": e.shape, "data_offsets": [e.start, e.end] }),
            );
        }
        let json =
            serde_json::to_vec(&header).map_err(|e| Error::param("StreamWriter", e.to_string()))?;
        self.out.flush().map_err(|e| self.io(e))?;
        let mut file = self.tmp.reopen()?;
        if json.len() as u64 + 8 > self.reserved {
            // The estimate was short: move the data up to make room (rare; costs one copy).
            let need = (json.len() as u64 + 8).next_multiple_of(8);
            shift_data(&mut file, self.reserved, need, self.pos).map_err(|e| self.io(e))?;
            self.reserved = need;
        }
        let n = self.reserved - 8;
        let mut head = Vec::with_capacity(self.reserved as usize);
        head.extend(n.to_le_bytes());
        head.extend(&json);
        head.resize(self.reserved as usize, b' ');
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        file.write_all(&head).map_err(|e| self.io(e))?;
        file.set_len(self.reserved + self.pos)
            .map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        Ok(Finished {
            tmp: self.tmp,
            path: self.path,
            bytes: self.reserved + self.pos,
        })
    }
}

/// Moves `len` bytes at `from` to `to` (> from), from the end backwards.
fn shift_data(file: &mut std::fs::File, from: u64, to: u64, len: u64) -> std::io::Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; 8 << 20];
    let mut remaining = len;
    while remaining > 0 {
        let n = remaining.min(buf.len() as u64);
        let src = from + remaining - n;
        file.seek(SeekFrom::Start(src))?;
        file.read_exact(&mut buf[..n as usize])?;
        file.seek(SeekFrom::Start(src - from + to))?;
        file.write_all(&buf[..n as usize])?;
        remaining -= n;
    }
    Ok(())
}

/// A complete file waiting under a temporary name.
pub struct Finished {
    tmp: TempOutput,
    path: PathBuf,
    bytes: u64,
}

impl Finished {
    /// Its size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to its final name.
    pub fn persist(self) -> Result<()> {
        self.tmp.persist()
    }

    /// The temporary output, for renaming together with others
    /// ([`super::output::persist_all`]).
    pub fn into_output(self) -> TempOutput {
        self.tmp
    }
}
