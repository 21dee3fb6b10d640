//! Reading `.safetensors` files through a read-only memory map, converting their float
//! tensors to f32 with every NaN/Inf reported, and writing files atomically (a temporary file
//! in the destination directory, renamed at the end).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, View};

use crate::error::{Error, Result};

/// An opened, validated safetensors file. The input is only ever mapped read-only.
pub struct Checkpoint {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .finish()
    }
}

/// One tensor of a checkpoint: name, dtype, shape and its bytes inside the mapped file.
#[derive(Clone, Debug)]
pub struct TensorEntry<'a> {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: &'a [u8],
}

impl TensorEntry<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether wgquant can quantize this dtype.
    pub fn is_supported_float(&self) -> bool {
        matches!(self.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }

    /// Whether this is a floating-point dtype of any width.
    pub fn is_float(&self) -> bool {
        matches!(
            self.dtype,
            Dtype::F32
                | Dtype::F16
                | Dtype::BF16
                | Dtype::F64
                | Dtype::F4
                | Dtype::F6_E2M3
                | Dtype::F6_E3M2
                | Dtype::F8_E4M3
                | Dtype::F8_E5M2
                | Dtype::F8_E8M0
                | Dtype::F8_E4M3FNUZ
                | Dtype::F8_E5M2FNUZ
        )
    }
}

/// Turns a safetensors parse error into a one-line description.
fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => {
            "not a safetensors file (shorter than its 8-byte header length)".into()
        }
        E::HeaderTooLarge | E::InvalidHeaderLength => {
            "not a safetensors file (the header length is impossible), or the file is truncated"
                .into()
        }
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) => {
            "not a safetensors file (the header is not valid JSON metadata)".into()
        }
        E::MetadataIncompleteBuffer => {
            "truncated or padded: the tensor data does not match the header's offsets".into()
        }
        E::InvalidOffset(name) => format!("the header's offsets for tensor '{name}' are invalid"),
        E::TensorInvalidInfo => {
            "the header describes a tensor whose shape and bytes disagree".into()
        }
        E::ValidationOverflow => "the header's shapes overflow".into(),
        other => other.to_string(),
    }
}

impl Checkpoint {
    /// Opens and validates `path` (header, offsets, sizes).
    pub fn open(path: &Path) -> Result<Self> {
        // Before opening: a FIFO's open blocks until a writer appears.
        super::output::check_input(path)?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private; wgquant never writes through it. A file
        // truncated by another process while mapped would fault, as with any mmap reader.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| Error::io(path, e))?;
        SafeTensors::read_metadata(&map).map_err(|e| Error::Format {
            path: path.into(),
            msg: describe(&e),
        })?;
        Ok(Self {
            path: path.into(),
            map,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    fn parsed(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|e| Error::Format {
            path: self.path.clone(),
            msg: describe(&e),
        })
    }

    /// The `__metadata__` map, if any.
    pub fn metadata(&self) -> Result<Option<HashMap<String, String>>> {
        let (_, meta) = SafeTensors::read_metadata(&self.map).map_err(|e| Error::Format {
            path: self.path.clone(),
            msg: describe(&e),
        })?;
        Ok(meta.metadata().clone())
    }

    /// All tensors in file order (by data offset), borrowing the mapped bytes.
    pub fn tensors(&self) -> Result<Vec<TensorEntry<'_>>> {
        let st = self.parsed()?;
        let base = self.map.as_ptr() as usize;
        let mut out: Vec<TensorEntry<'_>> = st
            .tensors()
            .into_iter()
            .map(|(name, v)| TensorEntry {
                name,
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: v.data(),
            })
            .collect();
        out.sort_by_key(|t| t.data.as_ptr() as usize - base);
        Ok(out)
    }

    /// Drops the mapped pages under `data` (a slice of this file's map) from the process, so
    /// streaming a large file does not grow the resident set; the page cache keeps them and a
    /// later access reads them back.
    pub fn release(&self, data: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        if start < base || start + data.len() > base + self.map.len() || data.is_empty() {
            return;
        }
        // SAFETY: the map is a private read-only file mapping: MADV_DONTNEED only discards our
        // copies of pages whose content the file still holds; nothing reads stale memory.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start - base,
                data.len(),
            )
        };
    }

    /// Wraps an error about tensor `name` with this file's path.
    pub fn tensor_error(&self, name: &str, msg: impl Into<String>) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            msg: msg.into(),
        }
    }
}

/// Converts a float tensor (F32, F16, BF16) to f32, failing on the first NaN or ±Inf with
/// the tensor named.
pub fn to_f32(ckpt: &Checkpoint, t: &TensorEntry<'_>) -> Result<Vec<f32>> {
    let values = match t.dtype {
        Dtype::F32 => decode(t.data, f32::from_le_bytes),
        Dtype::F16 => decode(t.data, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => decode(t.data, |b| half::bf16::from_le_bytes(b).to_f32()),
        other => {
            return Err(ckpt.tensor_error(
                &t.name,
                format!("unsupported dtype {other:?} (wgquant reads F32, F16 and BF16)"),
            ));
        }
    };
    if let Some(i) = crate::quant::first_non_finite(&values) {
        return Err(ckpt.tensor_error(
            &t.name,
            format!("holds a non-finite value ({}) at element {i}", values[i]),
        ));
    }
    Ok(values)
}

/// Elements per parallel task when decoding: big enough that the inner loop vectorizes and
/// rayon's per-task cost vanishes (per-element rayon items ran at ~0.3 GB/s).
const DECODE_CHUNK: usize = 1 << 16;

/// Little-endian `W`-byte values to f32, in parallel over fixed chunks.
fn decode<const W: usize>(data: &[u8], f: impl Fn([u8; W]) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; data.len() / W];
    out.par_chunks_mut(DECODE_CHUNK)
        .zip(data.par_chunks(DECODE_CHUNK * W))
        .for_each(|(out, bytes)| {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(W)) {
                let mut word = [0u8; W];
                word.copy_from_slice(b);
                *o = f(word);
            }
        });
    out
}

/// Largest finite magnitude of F16 / BF16 as f32, `None` for other dtypes.
pub fn half_max(dtype: Dtype) -> Option<f32> {
    match dtype {
        Dtype::F16 => Some(half::f16::MAX.to_f32()),
        Dtype::BF16 => Some(half::bf16::MAX.to_f32()),
        _ => None,
    }
}

/// The first value whose magnitude exceeds `dtype`'s largest finite one (F16, BF16), which
/// [`from_f32`] would have to saturate.
pub fn first_out_of_range(values: &[f32], dtype: Dtype) -> Option<usize> {
    let max = half_max(dtype)?;
    values.iter().position(|v| v.abs() > max)
}

/// Encodes f32 values in `dtype` (F32, F16 or BF16; half precision rounds to nearest even and
/// saturates at its largest finite value, never to Inf: a decoded grid point may lie just past
/// the range of the dtype its input came from).
pub fn from_f32(values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    let max = half_max(dtype).unwrap_or(f32::MAX);
    Ok(match dtype {
        Dtype::F32 => values
            .par_iter()
            .flat_map_iter(|v| v.to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .par_iter()
            .flat_map_iter(|&v| half::f16::from_f32(v.clamp(-max, max)).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .par_iter()
            .flat_map_iter(|&v| half::bf16::from_f32(v.clamp(-max, max)).to_le_bytes())
            .collect(),
        other => {
            return Err(Error::UnsupportedDType {
                op: "from_f32".into(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

/// A tensor to write: borrowed from an input file or owned.
#[derive(Clone, Debug)]
pub struct OutTensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes.
    pub data: Cow<'a, [u8]>,
}

impl View for &OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Refuses an input that is not a regular file and an output that is the input itself, a
/// device, a FIFO or a directory, or lies in a missing directory ([`super::output`]).
pub fn check_distinct(input: &Path, output: &Path) -> Result<()> {
    super::output::check_input(input)?;
    super::output::check_outputs(&[input], &[output])
}

/// Writes a safetensors file atomically: into a temporary file beside `path`, renamed over
/// `path` only once complete, so a failure leaves nothing under the final name.
pub fn write_atomic(
    path: &Path,
    tensors: &[(String, OutTensor<'_>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let tmp = super::output::TempOutput::create(path)?;
    let items = tensors.iter().map(|(n, t)| (n.as_str(), t));
    safetensors::serialize_to_file(items, Some(metadata), tmp.temp_path()?).map_err(
        |e| match e {
            safetensors::SafeTensorError::IoError(io) => Error::io(path, plain_os_error(io)),
            other => Error::Format {
                path: path.into(),
                msg: other.to_string(),
            },
        },
    )?;
    tmp.persist()
}

/// The OS error alone, without the temporary file's name that `tempfile` adds: the user
/// asked for `path`, not for our temporary.
pub fn plain_os_error(e: std::io::Error) -> std::io::Error {
    e.raw_os_error()
        .map_or(e, std::io::Error::from_raw_os_error)
}
