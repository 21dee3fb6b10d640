//! Turning a wgquant file (or sharded checkpoint) back into plain float tensors with their
//! original names, shapes and dtypes, readable by any safetensors loader. Every tensor is
//! streamed in windows of at most a block of f32 (whole parameter groups, cut inside a group
//! only when one group is larger): this thread decodes a window on the backend and converts it
//! to the original dtype while a writer thread appends the previous one, and mapped pages are
//! released once read, so memory stays a few blocks whatever the tensor's size. Sparse
//! (Huffman) tensors are the exception: their streams are decoded whole into dense codes first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use safetensors::Dtype;

use super::file::{Checkpoint, TensorEntry, check_distinct, from_f32, to_f32};
use super::quantize::{DEFAULT_BLOCK_BYTES, user_metadata};
use super::source::{Source, SourceTensor};
use super::writer::{StreamWriter, header_reserve};
use crate::error::{Error, Result};
use crate::format::QuantizedTensor;
use crate::format::disk::{self, TensorRecord};
use crate::format::window::{self, StoredTensor};
use crate::quant::{self, Backend};

/// How a file is decoded.
#[derive(Clone, Debug, Default)]
pub struct DequantizeOptions {
    /// f32 bytes per decoded window (0 for quantize's default, [`DEFAULT_BLOCK_BYTES`]); on a
    /// GPU also at most the device's storage binding and buffer size. Plain tensors are copied
    /// in blocks of this many bytes.
    pub block_bytes: usize,
}

/// A wgquant tensor of a file: its record and, unless stored in half precision, its parts.
pub struct Loaded {
    /// Logical name.
    pub name: String,
    /// Its record.
    pub record: TensorRecord,
    /// The quantized tensor; `None` for a half-precision cast stored under its own name.
    pub quantized: Option<QuantizedTensor>,
}

/// Every wgquant tensor of `source`, rebuilt from its parts. This holds every tensor's codes
/// at once: `dequantize` and `inspect` stream instead.
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
                check_half(source, &name, &record)?;
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

/// Checks a half-precision cast's record against the tensor stored under its name (shape,
/// 16-bit float dtype), so decoding never writes a shape its data does not fill.
fn check_half(source: &Source, name: &str, record: &TensorRecord) -> Result<()> {
    let bad = |msg: String| Error::Format {
        path: source.path().into(),
        msg,
    };
    let part = source.part(name).ok_or_else(|| {
        bad(format!(
            "half-precision tensor {} is missing",
            disk::quoted(name)
        ))
    })?;
    disk::check_cast(name, record, &part).map_err(|e| bad(e.to_string()))
}

/// Checks every wgquant record of `source` against the parts present, decoding nothing:
/// the records by name. A corrupt file fails here, before any output is written.
pub fn checked_records(source: &Source) -> Result<BTreeMap<String, TensorRecord>> {
    let records = source.records()?;
    for (name, record) in &records {
        let bad = |msg: String| Error::Format {
            path: source.path().into(),
            msg,
        };
        if record.encoding == "half" {
            check_half(source, name, record)?;
        } else {
            window::check(name, record, |n| source.part(n)).map_err(|e| bad(e.to_string()))?;
            // The check read the scales: their pages are not needed again soon.
            for suffix in disk::PART_SUFFIXES {
                let part = format!("{name}{suffix}");
                if let Some(t) = source.tensors().iter().find(|t| t.name == part) {
                    source.shard(t).release(source.data(t));
                }
            }
        }
    }
    Ok(records)
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
    /// A quantized tensor's parts (the first one is `tensor`).
    Decode(&'a str, &'a TensorRecord),
    /// A half-precision cast stored under its own name.
    Cast,
    /// A tensor copied as it is.
    Copy,
}

/// One output tensor.
struct Item<'a> {
    tensor: &'a SourceTensor,
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    origin: Origin<'a>,
}

/// What the writer thread is sent.
enum Msg<'a> {
    Begin(String, Dtype, Vec<usize>),
    Bytes(Vec<u8>),
    /// Mapped bytes copied as they are, then released.
    Mapped(&'a Checkpoint, &'a [u8]),
    End,
}

/// Writes `output` with every wgquant tensor of `input` decoded to its original dtype and
/// every other tensor copied. Returns the number of tensors decoded.
pub fn dequantize_file(backend: &Backend<'_>, input: &Path, output: &Path) -> Result<usize> {
    dequantize_file_with(backend, input, output, &DequantizeOptions::default())
}

/// [`dequantize_file`] with options.
pub fn dequantize_file_with(
    backend: &Backend<'_>,
    input: &Path,
    output: &Path,
    opts: &DequantizeOptions,
) -> Result<usize> {
    check_distinct(input, output)?;
    let source = Source::open(input)?;
    for shard in source.shard_paths() {
        check_distinct(shard, output)?;
    }
    let records = checked_records(&source)?;
    if records.is_empty() {
        return Err(Error::Format {
            path: input.into(),
            msg: "holds no wgquant-quantized tensors (no 'wgquant:' metadata)".into(),
        });
    }
    let mut plan = plan(&source, &records)?;
    // Widest dtypes first keeps every tensor aligned to its element.
    plan.sort_by_key(|i| std::cmp::Reverse(i.dtype.bitsize()));
    let meta = user_metadata(source.metadata());
    let meta_bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let w = StreamWriter::create(
        output,
        header_reserve(plan.iter().map(|i| i.name.as_str()), meta_bytes),
    )?;
    let block_bytes = if opts.block_bytes == 0 {
        DEFAULT_BLOCK_BYTES
    } else {
        opts.block_bytes
    };
    let w = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Msg<'_>>(1);
        let writer = scope.spawn(move || write_all(w, rx));
        let produced = produce(backend, &source, &plan, block_bytes, tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::param("writer", "the writer thread panicked")));
        produced?;
        written
    })?;
    w.finish(&meta)?.persist()?;
    Ok(records.len())
}

/// The output tensors in file order, each with where it comes from.
fn plan<'a>(
    source: &'a Source,
    records: &'a BTreeMap<String, TensorRecord>,
) -> Result<Vec<Item<'a>>> {
    let mut items = Vec::new();
    let mut emitted = std::collections::HashSet::new();
    for t in source.tensors() {
        if let Some((base, _)) = disk::split_part(&t.name)
            && let Some((name, rec)) = records.get_key_value(base)
            && rec.encoding != "half"
        {
            // A quantized tensor is emitted once, at its first part.
            if emitted.insert(base) {
                items.push(Item {
                    tensor: t,
                    name: name.clone(),
                    dtype: original_dtype(source, t, &rec.dtype)?,
                    shape: rec.shape.clone(),
                    origin: Origin::Decode(name, rec),
                });
            }
            continue;
        }
        let item = match records.get(t.name.as_str()) {
            Some(rec) if rec.encoding == "half" => Item {
                tensor: t,
                name: t.name.clone(),
                dtype: original_dtype(source, t, &rec.dtype)?,
                shape: rec.shape.clone(),
                origin: Origin::Cast,
            },
            Some(_) => return Err(source.tensor_error(t, "is both quantized and stored plain")),
            None => Item {
                tensor: t,
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                origin: Origin::Copy,
            },
        };
        items.push(item);
    }
    Ok(items)
}

/// Elements per decoded window: `block_bytes` of f32, within one binding and one buffer of
/// the device.
fn window_elems(backend: &Backend<'_>, block_bytes: usize) -> usize {
    let mut elems = (block_bytes / 4).max(1);
    if let Backend::Gpu(ctx) = backend {
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
        let binding = ctx.work_limits().max_binding_bytes.saturating_sub(align);
        let buffer = ctx.limits().max_buffer_size;
        let cap = usize::try_from(binding.min(buffer) / 4).unwrap_or(usize::MAX);
        elems = elems.min(cap.max(1));
    }
    elems
}

/// Decoding stage: sends every item's bytes, window by window, to the writer.
fn produce<'a>(
    backend: &Backend<'_>,
    source: &'a Source,
    plan: &[Item<'a>],
    block_bytes: usize,
    tx: SyncSender<Msg<'a>>,
) -> Result<()> {
    let elems = window_elems(backend, block_bytes);
    // A closed channel means the writer failed; its error is the one reported.
    let send = |m: Msg<'a>| tx.send(m).is_ok();
    for item in plan {
        let t = item.tensor;
        let shard = source.shard(t);
        if !send(Msg::Begin(
            item.name.clone(),
            item.dtype,
            item.shape.clone(),
        )) {
            return Ok(());
        }
        match item.origin {
            Origin::Copy => {
                for chunk in source.data(t).chunks(block_bytes.max(1)) {
                    if !send(Msg::Mapped(shard, chunk)) {
                        return Ok(());
                    }
                }
            }
            Origin::Cast => {
                let elem = t.dtype.bitsize() / 8;
                for chunk in source.data(t).chunks((elems * elem).max(elem)) {
                    let entry = TensorEntry {
                        name: t.name.clone(),
                        dtype: t.dtype,
                        shape: vec![chunk.len() / elem.max(1)],
                        data: chunk,
                    };
                    let values = to_f32(shard, &entry)?;
                    shard.release(chunk);
                    if !send(Msg::Bytes(from_f32(&values, item.dtype)?)) {
                        return Ok(());
                    }
                }
            }
            Origin::Decode(name, rec) => {
                let stored = StoredTensor::open(name, rec, |n| source.part(n)).map_err(|e| {
                    Error::Format {
                        path: source.path().into(),
                        msg: e.to_string(),
                    }
                })?;
                let decode = |r: std::ops::Range<usize>| -> Result<Vec<u8>> {
                    let qt = stored.window(r.clone())?;
                    for bytes in stored.mapped(&r) {
                        shard.release(bytes);
                    }
                    from_f32(&quant::dequantize(backend, &qt)?, item.dtype)
                };
                for r in stored.spans(elems) {
                    let bytes = decode(r).map_err(|e| source.tensor_error(t, e.to_string()))?;
                    if !send(Msg::Bytes(bytes)) {
                        return Ok(());
                    }
                }
            }
        }
        if !send(Msg::End) {
            return Ok(());
        }
    }
    Ok(())
}

/// Writer stage: appends what it is sent and returns the writer once the stream ends.
fn write_all(mut w: StreamWriter, rx: Receiver<Msg<'_>>) -> Result<StreamWriter> {
    for msg in rx {
        match msg {
            Msg::Begin(name, dtype, shape) => w.begin(&name, dtype, &shape)?,
            Msg::Bytes(bytes) => w.write(&bytes)?,
            Msg::Mapped(shard, bytes) => {
                w.write(bytes)?;
                shard.release(bytes);
            }
            Msg::End => w.end()?,
        }
    }
    Ok(w)
}
