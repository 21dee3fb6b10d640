//! Quantizing a checkpoint as a three-stage stream: a reader thread converts row blocks of the
//! memory-mapped input to f32 (checking every value is finite), this thread quantizes them on
//! the chosen backend, and a writer thread appends the results to the output and measures the
//! error. Bounded channels hold at most one block between stages, so reading, compute and
//! writing overlap while memory stays a few blocks, whatever the checkpoint's size.
//!
//! A uniform minmax/absmax tensor whose blocks of whole groups would be larger than a block
//! (a wide row, a big per-tensor tensor) is read twice: the reader first gathers every
//! group's range block by block, the compute stage turns the ranges into (scale, zero point)
//! on the backend, and the blocks, cut inside groups, are quantized with those fixed
//! parameters; the writer stores each group's parameters once.
//! Methods needing all of a group's values at once (percentile, MSE, codebooks, dc) get the
//! whole group as one block, so their memory grows with the largest group.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use safetensors::Dtype;

use super::file::{first_out_of_range, from_f32, half_max};
use super::output::{self, TempOutput};
use super::plan::{Action, Plan, PlanItem, PlanOptions, check_nonempty, make_plan};
use super::report::{ErrorStats, Report, TensorReport, Totals};
use super::rules::Rules;
use super::source::Source;
use super::writer::{Finished, StreamWriter, header_reserve};
use crate::affine::{AffineSegment, GroupRange};
use crate::error::{Error, Result};
use crate::format::disk::{self, PartSpec, TensorRecord};
use crate::format::{QuantizedTensor, pack};
use crate::quant::spec::{Half, MethodArgs};
use crate::quant::{self, Backend, Method, uniform};

/// Input f32 bytes per streamed row block by default.
pub const DEFAULT_BLOCK_BYTES: usize = 64 << 20;

/// What to quantize and how.
#[derive(Debug, Default)]
pub struct QuantizeOptions {
    /// Settings for tensors no rule names (and what rules leave out).
    pub defaults: MethodArgs,
    /// Per-tensor rules; the first match wins.
    pub rules: Rules,
    /// Also quantize 1-D float tensors by default.
    pub include_1d: bool,
    /// Largest output shard; `None` for one file.
    pub max_shard_bytes: Option<u64>,
    /// Input f32 bytes per row block (0 for the default).
    pub block_bytes: usize,
    /// Write the JSON report here too, renamed together with the outputs.
    pub report: Option<PathBuf>,
}

impl QuantizeOptions {
    /// Options quantizing every 2-D+ float tensor with `defaults`.
    pub fn with_defaults(defaults: MethodArgs) -> Self {
        Self {
            defaults,
            ..Default::default()
        }
    }
}

/// The plan `opts` give for `input`, without computing anything (`--dry-run`).
pub fn plan_file(input: &Path, opts: &QuantizeOptions) -> Result<(Source, Plan)> {
    let source = Source::open(input)?;
    let plan = make_plan(&source, &plan_options(opts))?;
    check_nonempty(&plan, &source)?;
    Ok((source, plan))
}

fn plan_options(opts: &QuantizeOptions) -> PlanOptions<'_> {
    PlanOptions {
        rules: &opts.rules,
        defaults: opts.defaults.clone(),
        include_1d: opts.include_1d,
        block_bytes: if opts.block_bytes == 0 {
            DEFAULT_BLOCK_BYTES
        } else {
            opts.block_bytes
        },
        max_shard_bytes: opts.max_shard_bytes,
    }
}

/// Quantizes `input` (a file or a shard index) into `output`, sharded when the plan says so;
/// returns the report. Nothing appears under an output name unless the whole run succeeds,
/// and the input is only read.
pub fn quantize_file(
    backend: &Backend<'_>,
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Report> {
    let start = Instant::now();
    let (source, plan) = plan_file(input, opts)?;
    let paths = shard_paths(output, plan.shards.len())?;
    let index = (paths.len() > 1).then(|| index_path(output));
    let mut inputs = vec![input];
    inputs.extend(source.shard_paths());
    let outputs: Vec<&Path> = paths
        .iter()
        .map(PathBuf::as_path)
        .chain(index.as_deref())
        .chain(opts.report.as_deref())
        .collect();
    output::check_outputs(&inputs, &outputs)?;
    if let Some(pb) = progress {
        pb.set_length(plan.bytes_in());
    }
    let (finished, tensors) = stream(backend, &source, &plan, &paths, progress)?;
    let report = report(backend, input, output, &plan, tensors, start);
    let mut outs: Vec<TempOutput> = finished.into_iter().map(Finished::into_output).collect();
    if let Some(index) = &index {
        outs.push(output::prepare_text(index, &index_json(&paths, &plan)?)?);
    }
    if let Some(path) = &opts.report {
        outs.push(output::prepare_text(path, &report.to_json()?)?);
    }
    output::persist_all(outs)?;
    Ok(report)
}

/// Output file names: `output` itself, or `stem-0000k-of-0000n.safetensors` beside it.
pub fn shard_paths(output: &Path, shards: usize) -> Result<Vec<PathBuf>> {
    if shards <= 1 {
        return Ok(vec![output.to_path_buf()]);
    }
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".safetensors")
        .ok_or_else(|| Error::Format {
            path: output.into(),
            msg: "a sharded output needs a name ending in .safetensors".into(),
        })?;
    Ok((1..=shards)
        .map(|k| output.with_file_name(format!("{stem}-{k:05}-of-{shards:05}.safetensors")))
        .collect())
}

/// The index written beside sharded output: `stem.safetensors.index.json`.
pub fn index_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    output.with_file_name(format!("{name}.index.json"))
}

/// A row block read and converted.
enum Block<'a> {
    /// Bytes copied unchanged.
    Raw(&'a [u8]),
    /// Values as f32.
    Values(Vec<f32>),
    /// Every group's range, from the pre-pass of a [`PlanItem::prepass`] item; comes before
    /// its blocks and is not one of them.
    Ranges(Vec<GroupRange>),
}

struct ReadBlock<'a> {
    item: usize,
    /// Its elements in the flattened tensor.
    elems: std::ops::Range<usize>,
    block: Block<'a>,
}

/// A block's results for the writer.
enum Out<'a> {
    Raw(&'a [u8]),
    Bytes(Vec<u8>),
    Quantized {
        qt: QuantizedTensor,
        values: Vec<f32>,
    },
    /// A block of a pre-pass item, quantized with its groups' fixed parameters.
    Piece(Piece),
}

/// A block cut inside groups, with the parameters of the groups it touches.
struct Piece {
    codes: Vec<u32>,
    values: Vec<f32>,
    /// Scales and zero points of the groups it touches, from group `first_group` on.
    scale: Vec<f32>,
    zero: Vec<i32>,
    first_group: usize,
    /// How its elements fall in those groups.
    seg: AffineSegment,
}

/// The parameters of a pre-pass item's groups, for its blocks.
struct Fixed {
    item: usize,
    group_len: usize,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

struct WriteBlock<'a> {
    item: usize,
    elems: std::ops::Range<usize>,
    out: Out<'a>,
}

/// Per-tensor results the writer gathers.
struct Gathered {
    err: ErrorStats,
    /// Wall seconds from the previous item's completion to this one's: the stages overlap, so
    /// per-stage times would add up to more than the run took.
    seconds: f64,
    /// Bytes of the item's parts as written (Huffman streams are sized only then).
    bytes: u64,
}

fn stream<'a>(
    backend: &Backend<'_>,
    source: &'a Source,
    plan: &'a Plan,
    paths: &[PathBuf],
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Vec<Finished>, Vec<Gathered>)> {
    std::thread::scope(|scope| {
        let (read_tx, read_rx) = sync_channel::<Result<ReadBlock<'a>>>(1);
        let (write_tx, write_rx) = sync_channel::<WriteBlock<'a>>(1);
        let reader = scope.spawn(move || read_all(source, plan, read_tx));
        let writer = scope.spawn(move || write_all(source, plan, paths, write_rx, progress));
        let computed = compute_all(backend, source, plan, read_rx, write_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::param("writer", "the writer thread panicked")));
        // The reader ends on its own once the channel closes.
        let _ = reader.join();
        computed?;
        written
    })
}

/// Reader stage: converts each block to f32 (or borrows raw bytes) and sends it on.
fn read_all<'a>(source: &'a Source, plan: &'a Plan, tx: SyncSender<Result<ReadBlock<'a>>>) {
    for (i, item) in plan.items.iter().enumerate() {
        let data = source.data(&item.tensor);
        let elem = item.tensor.dtype.bitsize() / 8;
        if item.prepass {
            let ranges = prepass_ranges(source, item, data);
            let failed = ranges.is_err();
            let read = ranges.map(|r| ReadBlock {
                item: i,
                elems: 0..0,
                block: Block::Ranges(r),
            });
            if tx.send(read).is_err() || failed {
                return;
            }
        }
        for elems in item.blocks() {
            let bytes =
                &data[(elems.start * elem).min(data.len())..(elems.end * elem).min(data.len())];
            let block = match item.action {
                Action::Keep(_) => Ok(Block::Raw(bytes)),
                _ => to_values(source, item, bytes, elems.start).map(Block::Values),
            };
            if !matches!(item.action, Action::Keep(_)) {
                // Converted: the mapped pages are no longer needed.
                source.shard(&item.tensor).release(bytes);
            }
            let failed = block.is_err();
            if tx
                .send(block.map(|block| ReadBlock {
                    item: i,
                    elems,
                    block,
                }))
                .is_err()
                || failed
            {
                return;
            }
        }
    }
}

/// Every group's range of a pre-pass item, from its blocks converted one at a time (each
/// block's mapped pages released after use, so memory stays one block); fails on the first
/// non-finite value with its index in the whole tensor, as the unsplit read does.
fn prepass_ranges(source: &Source, item: &PlanItem, data: &[u8]) -> Result<Vec<GroupRange>> {
    let Action::Quantize(m) = &item.action else {
        return Err(Error::param(
            "pipeline",
            "pre-pass of an item not quantized",
        ));
    };
    let group_len = m.granularity().group_len(&item.tensor.shape)?;
    let mut ranges = vec![GroupRange::EMPTY; item.tensor.numel() / group_len];
    let elem = item.tensor.dtype.bitsize() / 8;
    for elems in item.blocks() {
        let bytes = &data[(elems.start * elem).min(data.len())..(elems.end * elem).min(data.len())];
        let values = to_values(source, item, bytes, elems.start)?;
        source.shard(&item.tensor).release(bytes);
        crate::cpu::minmax::widen_ranges(&values, elems.start, group_len, &mut ranges)?;
    }
    Ok(ranges)
}

/// Converts F32/F16/BF16 bytes to f32, failing on the first non-finite value with its index
/// in the whole tensor.
fn to_values(source: &Source, item: &PlanItem, bytes: &[u8], first: usize) -> Result<Vec<f32>> {
    let entry = super::file::TensorEntry {
        name: item.tensor.name.clone(),
        dtype: item.tensor.dtype,
        shape: vec![bytes.len() * 8 / item.tensor.dtype.bitsize()],
        data: bytes,
    };
    super::file::to_f32(source.shard(&item.tensor), &entry).map_err(|e| match e {
        Error::Tensor { path, tensor, msg } => Error::Tensor {
            path,
            tensor,
            msg: shift_index(&msg, first),
        },
        other => other,
    })
}

/// Rewrites "at element N" in a message to "at element first + N".
fn shift_index(msg: &str, first: usize) -> String {
    match msg.rsplit_once("at element ") {
        Some((head, n)) => match n.parse::<usize>() {
            Ok(n) => format!("{head}at element {}", n + first),
            Err(_) => msg.to_string(),
        },
        None => msg.to_string(),
    }
}

/// Compute stage: quantizes or converts each block.
fn compute_all<'a>(
    backend: &Backend<'_>,
    source: &'a Source,
    plan: &'a Plan,
    rx: Receiver<Result<ReadBlock<'a>>>,
    tx: SyncSender<WriteBlock<'a>>,
) -> Result<()> {
    let mut fixed: Option<Fixed> = None;
    for read in rx {
        let ReadBlock { item, elems, block } = read?;
        let it = &plan.items[item];
        let out = match (&it.action, block) {
            (Action::Quantize(Method::Uniform(c)), Block::Ranges(ranges)) => {
                let (scale, zero) = uniform::params_from_ranges(backend, &c.scheme, &ranges)
                    .map_err(|e| source.tensor_error(&it.tensor, e.to_string()))?;
                fixed = Some(Fixed {
                    item,
                    group_len: it.tensor.numel() / ranges.len().max(1),
                    scale,
                    zero,
                });
                continue;
            }
            (_, Block::Ranges(_)) => {
                return Err(Error::param("pipeline", "ranges of a method without them"));
            }
            (Action::Quantize(Method::Uniform(c)), Block::Values(v)) if it.prepass => {
                let f = fixed
                    .as_ref()
                    .filter(|f| f.item == item)
                    .ok_or_else(|| Error::param("pipeline", "a block came before its ranges"))?;
                Out::Piece(
                    quantize_piece(backend, c, f, &elems, v)
                        .map_err(|e| source.tensor_error(&it.tensor, e.to_string()))?,
                )
            }
            (_, Block::Raw(bytes)) => Out::Raw(bytes),
            (Action::Half(h), Block::Values(v)) => {
                let dtype = if *h == Half::F16 {
                    Dtype::F16
                } else {
                    Dtype::BF16
                };
                // Saturating a value the user asked to store would change it silently.
                if let Some(i) = first_out_of_range(&v, dtype) {
                    return Err(source.tensor_error(
                        &it.tensor,
                        format!(
                            "value {} at element {} is outside {dtype:?}'s range (±{}); store it \
                             as bf16 or leave it unquantized",
                            v[i],
                            elems.start + i,
                            half_max(dtype).unwrap_or(f32::MAX)
                        ),
                    ));
                }
                Out::Bytes(from_f32(&v, dtype)?)
            }
            (Action::Quantize(m), Block::Values(v)) => {
                let shape = it.block_shape(&elems);
                let qt = m
                    .quantize(backend, &it.tensor.name, &v, &shape)
                    .map_err(|e| source.tensor_error(&it.tensor, e.to_string()))?;
                Out::Quantized { qt, values: v }
            }
            (Action::Keep(_), Block::Values(_)) => {
                return Err(Error::param("pipeline", "kept tensor was converted"));
            }
        };
        if tx.send(WriteBlock { item, elems, out }).is_err() {
            // The writer stopped; its error is reported.
            return Ok(());
        }
    }
    Ok(())
}

/// Quantizes block `elems` of a pre-pass item with its groups' fixed parameters `f`.
fn quantize_piece(
    backend: &Backend<'_>,
    c: &uniform::UniformConfig,
    f: &Fixed,
    elems: &std::ops::Range<usize>,
    values: Vec<f32>,
) -> Result<Piece> {
    let first_group = elems.start / f.group_len;
    let end_group = (elems.end.max(elems.start + 1) - 1) / f.group_len + 1;
    let (scale, zero) = (
        f.scale[first_group..end_group].to_vec(),
        f.zero[first_group..end_group].to_vec(),
    );
    let seg = c.piece_segment(elems.start, elems.len(), f.group_len);
    let codes = uniform::quantize_piece(backend, &values, &scale, &zero, &seg)?;
    Ok(Piece {
        codes,
        values,
        scale,
        zero,
        first_group,
        seg,
    })
}

/// Writer stage: streams each item's outputs into its shard, the codes part block by block and
/// the small parameter parts after them; measures the error of quantized blocks.
fn write_all<'a>(
    source: &'a Source,
    plan: &'a Plan,
    paths: &[PathBuf],
    rx: Receiver<WriteBlock<'a>>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Vec<Finished>, Vec<Gathered>)> {
    let mut finished = Vec::new();
    let mut gathered: Vec<Gathered> = Vec::with_capacity(plan.items.len());
    let mut rx = rx.into_iter();
    let mut mark = Instant::now();
    for (s, range) in plan.shards.iter().enumerate() {
        let items = &plan.items[range.clone()];
        let names = items
            .iter()
            .flat_map(|i| i.outputs.iter().map(|p| p.name.as_str()));
        // The records are known in full only once written (Huffman streams' sizes): the
        // planned ones size the header's reserve.
        let planned = items.iter().map(|i| (i, i.outputs.clone()));
        let estimate = disk::metadata(&shard_records(planned), source.metadata())?;
        let meta_bytes: usize = estimate.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        let mut w = StreamWriter::create(&paths[s], header_reserve(names, meta_bytes))?;
        let mut written = Vec::with_capacity(items.len());
        for (k, item) in items.iter().enumerate() {
            let index = range.start + k;
            let (mut g, specs) = write_item(&mut w, index, item, &mut rx, progress)?;
            g.seconds = mark.elapsed().as_secs_f64();
            mark = Instant::now();
            gathered.push(g);
            written.push((item, specs));
        }
        let meta = disk::metadata(&shard_records(written.into_iter()), source.metadata())?;
        finished.push(w.finish(&meta)?);
    }
    Ok((finished, gathered))
}

/// Writes one item from its blocks; returns what was gathered and the parts as written.
fn write_item<'a>(
    w: &mut StreamWriter,
    index: usize,
    item: &PlanItem,
    rx: &mut impl Iterator<Item = WriteBlock<'a>>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Gathered, Vec<PartSpec>)> {
    if item.outputs.iter().any(|p| !p.sized) {
        return write_unsized(w, index, item, rx, progress);
    }
    let first = &item.outputs[0];
    w.begin(&first.name, first.dtype, &first.shape)?;
    // Parts after the first (scales, zero points, levels, masks) are small: gathered, then
    // written once the streamed part is complete.
    let mut rest: Vec<Vec<u8>> = vec![Vec::new(); item.outputs.len() - 1];
    let mut g = Gathered {
        err: ErrorStats::default(),
        seconds: 0.0,
        bytes: item.bytes_out() as u64,
    };
    // Groups whose parameters are written: blocks cut inside groups share a group's.
    let mut groups_done = 0;
    for _ in 0..item.blocks().count() {
        let b = next_block(rx, index, item)?;
        match b.out {
            Out::Raw(bytes) => w.write(bytes)?,
            Out::Bytes(bytes) => w.write(&bytes)?,
            Out::Quantized { qt, values } => {
                let parts = block_parts(item, &qt)?;
                w.write(&parts[0].data)?;
                for (buf, p) in rest.iter_mut().zip(&parts[1..]) {
                    buf.extend_from_slice(&p.data);
                }
                g.err.add(&block_error(&qt, &values)?);
            }
            Out::Piece(p) => {
                w.write(&pack::words_to_bytes(&p.codes))?;
                let new = groups_done.max(p.first_group) - p.first_group;
                for (buf, spec) in rest.iter_mut().zip(&item.outputs[1..]) {
                    let bytes = disk::affine_param_bytes(
                        &item.tensor.name,
                        &spec.name,
                        &p.scale[new.min(p.scale.len())..],
                        &p.zero[new.min(p.zero.len())..],
                    )
                    .ok_or_else(|| {
                        Error::param("pipeline", format!("part '{}' of a piece", spec.name))
                    })?;
                    buf.extend_from_slice(&bytes);
                }
                groups_done = groups_done.max(p.first_group + p.scale.len());
                let (signal, noise) = crate::cpu::dequantize::squared_error(
                    &p.codes, &p.values, &p.scale, &p.zero, &p.seg,
                )?;
                g.err.add(&ErrorStats { signal, noise });
            }
        }
        tick(progress, item, &b.elems);
    }
    w.end()?;
    for (p, data) in item.outputs[1..].iter().zip(&rest) {
        w.tensor(&p.name, p.dtype, &p.shape, data)?;
    }
    Ok((g, item.outputs.clone()))
}

/// An item whose parts' sizes are known only once computed (Huffman streams): one block,
/// its parts written as they came.
fn write_unsized<'a>(
    w: &mut StreamWriter,
    index: usize,
    item: &PlanItem,
    rx: &mut impl Iterator<Item = WriteBlock<'a>>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Gathered, Vec<PartSpec>)> {
    let b = next_block(rx, index, item)?;
    let Out::Quantized { qt, values } = b.out else {
        return Err(Error::param(
            "pipeline",
            "an unsized item must be quantized",
        ));
    };
    if item.blocks().count() != 1 {
        return Err(Error::param(
            "pipeline",
            "an unsized item must come in one block",
        ));
    }
    let parts = block_parts(item, &qt)?;
    let mut specs = Vec::with_capacity(parts.len());
    for (p, planned) in parts.iter().zip(&item.outputs) {
        if p.name != planned.name || p.dtype != planned.dtype {
            return Err(Error::param(
                "pipeline",
                format!("part '{}' differs from the plan", p.name),
            ));
        }
        w.tensor(&p.name, p.dtype, &p.shape, &p.data)?;
        specs.push(PartSpec {
            name: p.name.clone(),
            dtype: p.dtype,
            shape: p.shape.clone(),
            sized: true,
        });
    }
    let g = Gathered {
        err: block_error(&qt, &values)?,
        seconds: 0.0,
        bytes: specs.iter().map(|p| p.bytes() as u64).sum(),
    };
    tick(progress, item, &b.elems);
    Ok((g, specs))
}

fn next_block<'a>(
    rx: &mut impl Iterator<Item = WriteBlock<'a>>,
    index: usize,
    item: &PlanItem,
) -> Result<WriteBlock<'a>> {
    let b = rx.next().ok_or_else(|| {
        Error::param(
            "pipeline",
            format!("stream ended before tensor '{}'", item.tensor.name),
        )
    })?;
    if b.item != index {
        return Err(Error::param("pipeline", "blocks arrived out of order"));
    }
    Ok(b)
}

/// The stored parts of one block of a quantized item.
fn block_parts(item: &PlanItem, qt: &QuantizedTensor) -> Result<Vec<disk::Part>> {
    let Action::Quantize(m) = &item.action else {
        return Err(Error::param(
            "pipeline",
            "quantized block of an item that is not quantized",
        ));
    };
    let (_, parts) = disk::to_parts(
        &item.tensor.name,
        qt,
        m.name(),
        item.tensor.dtype,
        None,
        m.storage(),
    )?;
    Ok(parts)
}

/// Σx² and Σ(x − x̂)² of a quantized block against its values.
fn block_error(qt: &QuantizedTensor, values: &[f32]) -> Result<ErrorStats> {
    let (signal, noise) = quant::squared_error(qt, values)?;
    Ok(ErrorStats { signal, noise })
}

fn tick(
    progress: Option<&indicatif::ProgressBar>,
    item: &PlanItem,
    elems: &std::ops::Range<usize>,
) {
    if let Some(pb) = progress {
        let elem = item.tensor.dtype.bitsize() / 8;
        pb.inc((elems.len() * elem) as u64);
    }
}

/// Metadata records of items with the parts they are (or will be) stored as.
fn shard_records<'p>(
    items: impl Iterator<Item = (&'p PlanItem, Vec<PartSpec>)>,
) -> BTreeMap<String, TensorRecord> {
    items
        .filter_map(|(item, specs)| {
            let t = &item.tensor;
            let rec = match &item.action {
                Action::Keep(_) => return None,
                Action::Quantize(m) => m.record(&t.shape, t.dtype, &specs),
                Action::Half(h) => disk::record(
                    "cast",
                    None,
                    None,
                    16,
                    crate::format::Granularity::Tensor,
                    &t.shape,
                    t.dtype,
                    Some(format!(
                        "stored as {}",
                        if *h == Half::F16 { "F16" } else { "BF16" }
                    )),
                    None,
                    &specs,
                ),
            };
            Some((t.name.clone(), rec))
        })
        .collect()
}

/// The index of a sharded output: every output tensor's shard file, and the total size.
fn index_json(paths: &[PathBuf], plan: &Plan) -> Result<String> {
    let mut weight_map = BTreeMap::new();
    for (s, range) in plan.shards.iter().enumerate() {
        let file = paths[s]
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for item in &plan.items[range.clone()] {
            for p in &item.outputs {
                weight_map.insert(p.name.clone(), file.clone());
            }
        }
    }
    let json = serde_json::json!({
        "metadata": { "total_size": plan.bytes_out() },
        "weight_map": weight_map,
    });
    serde_json::to_string_pretty(&json).map_err(|e| Error::param("index", e.to_string()))
}

fn report(
    backend: &Backend<'_>,
    input: &Path,
    output: &Path,
    plan: &Plan,
    gathered: Vec<Gathered>,
    start: Instant,
) -> Report {
    let mut total_err = ErrorStats::default();
    let (mut q_bytes, mut q_elems, mut quantized) = (0u64, 0u64, 0usize);
    let bytes_out = gathered.iter().map(|g| g.bytes).sum();
    let tensors: Vec<TensorReport> = plan
        .items
        .iter()
        .zip(gathered)
        .map(|(item, g)| {
            let t = &item.tensor;
            let bytes_out = g.bytes;
            let is_quant = matches!(item.action, Action::Quantize(_));
            if is_quant {
                total_err.add(&g.err);
                q_bytes += bytes_out;
                q_elems += t.numel() as u64;
                quantized += 1;
            }
            TensorReport {
                name: t.name.clone(),
                shape: t.shape.clone(),
                scheme: item.action.label(),
                bits_per_weight: bytes_out as f64 * 8.0 / t.numel().max(1) as f64,
                sqnr_db: if is_quant { g.err.sqnr_db() } else { None },
                rel_err: if is_quant { g.err.rel_err() } else { 0.0 },
                bytes_in: t.bytes() as u64,
                bytes_out,
                seconds: g.seconds,
            }
        })
        .collect();
    Report {
        input: input.display().to_string(),
        output: output.display().to_string(),
        device: device_label(backend),
        totals: Totals {
            quantized,
            passed_through: plan.items.len() - quantized,
            bytes_in: plan.bytes_in(),
            bytes_out,
            bits_per_weight: q_bytes as f64 * 8.0 / q_elems.max(1) as f64,
            sqnr_db: total_err.sqnr_db(),
            rel_err: total_err.rel_err(),
            seconds: start.elapsed().as_secs_f64(),
        },
        tensors,
    }
}

/// "gpu: adapter" or "cpu: N threads".
pub fn device_label(backend: &Backend<'_>) -> String {
    match backend {
        Backend::Gpu(ctx) => format!("gpu: {}", ctx.adapter_summary()),
        Backend::Cpu => format!("cpu: {} threads", rayon::current_num_threads()),
    }
}

/// Metadata keys a plain copy of `meta` keeps (everything but wgquant's own).
pub fn user_metadata(meta: Option<&HashMap<String, String>>) -> HashMap<String, String> {
    let mut out = meta.cloned().unwrap_or_default();
    out.retain(|k, _| k != disk::FILE_KEY && !k.starts_with(disk::TENSOR_KEY_PREFIX));
    out
}
