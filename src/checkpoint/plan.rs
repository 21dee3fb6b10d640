//! The plan of a quantization run, made before any computing: what happens to each tensor (by
//! rule or default), which output tensors it becomes and their sizes, the order they are
//! written in, how big tensors are cut into row blocks, and which output shard gets what.

use std::collections::HashSet;

use safetensors::Dtype;

use super::rules::Rules;
use super::source::{Source, SourceTensor};
use crate::error::{Error, Result};
use crate::format::disk::{self, PartSpec};
use crate::quant::Method;
use crate::quant::spec::{Choice, Half, MethodArgs, resolve};

/// What happens to one input tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Copied unchanged; the reason is shown in plans and reports.
    Keep(String),
    /// Converted to half precision.
    Half(Half),
    /// Quantized.
    Quantize(Method),
}

impl Action {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Action::Keep(why) => format!("keep ({why})"),
            Action::Half(h) => Choice::Half(*h).label(),
            Action::Quantize(m) => m.label(),
        }
    }
}

/// One input tensor's part in the run.
#[derive(Clone, Debug)]
pub struct PlanItem {
    /// The input tensor.
    pub tensor: SourceTensor,
    /// What happens to it.
    pub action: Action,
    /// The rule that decided it (1-based), if any.
    pub rule: Option<usize>,
    /// The output tensors it becomes, in writing order.
    pub outputs: Vec<PartSpec>,
    /// Elements per streamed block: whole rows (slices along axis 0) while a row fits the
    /// block, else, for per-group methods, a run of whole groups cut across rows (see
    /// [`PlanItem::block_shape`]); runs of elements cut inside groups at code-word boundaries
    /// when [`PlanItem::prepass`]; the whole tensor when it cannot be split.
    pub block_elems: usize,
    /// Whether a streaming pre-pass over the tensor gathers each group's range first, so its
    /// blocks, cut inside groups, are quantized with the fixed parameters of whole groups:
    /// uniform minmax/absmax methods whose blocks of whole groups (rows for per-channel, the
    /// tensor for per-tensor) would be larger than the block. Other calibrations, codebooks
    /// and dc need a whole group's values at once: such a group stays in one block however
    /// large (the plan table lists those tensors).
    pub prepass: bool,
}

impl PlanItem {
    /// Bytes written for it.
    pub fn bytes_out(&self) -> usize {
        self.outputs.iter().map(PartSpec::bytes).sum()
    }

    /// Rows along axis 0 (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.tensor.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.tensor.numel() / self.rows().max(1)
    }

    /// The blocks it is processed in, as element ranges of the flattened tensor.
    pub fn blocks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let (n, step) = (self.tensor.numel(), self.block_elems.max(1));
        (0..n.div_ceil(step).max(1)).map(move |b| b * step..((b + 1) * step).min(n))
    }

    /// The shape block `elems` is quantized as: the tensor's own with fewer rows when it is
    /// whole rows, else `[1, len]`, whose groups along the last axis are the same runs of
    /// consecutive elements as in the whole tensor (per-group methods only are cut so).
    pub fn block_shape(&self, elems: &std::ops::Range<usize>) -> Vec<usize> {
        let row = self.row_len().max(1);
        if !(elems.start.is_multiple_of(row) && elems.len().is_multiple_of(row)) {
            return vec![1, elems.len()];
        }
        let mut shape = self.tensor.shape.clone();
        if let Some(r) = shape.first_mut() {
            *r = elems.len() / row;
        }
        shape
    }
}

/// The whole run: items in writing order and the shards they fall in.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Items in the order they are processed and written.
    pub items: Vec<PlanItem>,
    /// Item index ranges of each output shard.
    pub shards: Vec<std::ops::Range<usize>>,
    /// Input f32 bytes per streamed block the plan was made for.
    pub block_bytes: usize,
    /// Rules that do nothing here: they match no tensor, or only 1-D tensors they leave.
    pub warnings: Vec<String>,
}

/// Settings the plan follows.
#[derive(Debug)]
pub struct PlanOptions<'a> {
    /// Rules, first match wins.
    pub rules: &'a Rules,
    /// Settings for tensors no rule names, and for what a rule leaves out.
    pub defaults: MethodArgs,
    /// Quantize 1-D float tensors by default too.
    pub include_1d: bool,
    /// Input f32 bytes per streamed block (before rounding to whole rows).
    pub block_bytes: usize,
    /// Largest output shard in bytes; `None` for one file.
    pub max_shard_bytes: Option<u64>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Rows per block for a tensor of `rows` × `row_len` with `bits`-bit codes: as many as fit
/// `block_bytes` of f32, a multiple of the rows after which codes end on a word boundary.
fn block_rows(rows: usize, row_len: usize, bits: u32, block_bytes: usize) -> usize {
    let unit = 32 / gcd(row_len * bits as usize % 32, 32).max(1);
    let fit = (block_bytes / 4 / row_len.max(1)).max(1);
    (fit / unit * unit).max(unit).min(rows.max(1))
}

/// Elements per block of a tensor of `rows` × `row_len` with `bits`-bit codes: whole rows
/// ([`block_rows`]) while one row fits `block_bytes` of f32 or no `group` is given; else the
/// most groups of `group` elements that fit, a multiple of the groups after which codes end
/// on a word boundary, so blocks' codes concatenate into the whole tensor's.
fn block_elems(
    rows: usize,
    row_len: usize,
    bits: u32,
    block_bytes: usize,
    group: Option<usize>,
) -> usize {
    let numel = rows * row_len;
    match group {
        Some(g) if row_len.max(1) > block_bytes / 4 && g > 0 => {
            let unit = g * (32 / gcd(g * bits as usize % 32, 32).max(1));
            (block_bytes / 4 / unit * unit).max(unit).min(numel.max(1))
        }
        _ => block_rows(rows, row_len, bits, block_bytes) * row_len.max(1),
    }
}

/// Elements per block of a tensor of `numel` elements with `bits`-bit codes cut anywhere
/// (inside groups): the most that fit `block_bytes` of f32, a multiple of the elements after
/// which codes end on a word boundary.
fn piece_elems(numel: usize, bits: u32, block_bytes: usize) -> usize {
    let unit = 32 / gcd(bits as usize % 32, 32).max(1);
    (block_bytes / 4 / unit * unit).max(unit).min(numel.max(1))
}

/// Why a quantized item is streamed in blocks larger than the block, if it is: its method
/// needs all of a group at once, and a group (or the fewest whole groups whose codes end on a
/// word) is larger.
fn held_whole(item: &PlanItem, block_bytes: usize) -> Option<String> {
    let Action::Quantize(m) = &item.action else {
        return None;
    };
    if item.prepass || item.block_elems <= piece_elems(item.tensor.numel(), m.bits(), block_bytes) {
        return None;
    }
    Some(match m {
        Method::Uniform(c) => format!("{} calibration", c.calibration.label()),
        Method::DeepCompression(_) => "dc".into(),
        _ => "a codebook".into(),
    })
}

/// What happens to `t` and which rule said so.
fn decide(
    t: &SourceTensor,
    opts: &PlanOptions<'_>,
    source: &Source,
) -> Result<(Action, Option<usize>)> {
    let rule = opts.rules.first_match(&t.name);
    if let Some(r) = rule.filter(|r| r.skip) {
        return Ok((Action::Keep("skip".into()), Some(r.index)));
    }
    let explicit = rule.is_some();
    if !t.is_float() {
        if explicit {
            return Err(source.tensor_error(
                t,
                format!(
                    "rule {} quantizes it, but its dtype {:?} is not float",
                    rule.map_or(0, |r| r.index),
                    t.dtype
                ),
            ));
        }
        return Ok((Action::Keep("not float".into()), None));
    }
    // A rule changes only what the defaults would quantize, unless it includes 1-D tensors.
    if t.shape.len() < 2 && !opts.include_1d && !rule.is_some_and(|r| r.include_1d) {
        return Ok((Action::Keep("1-D".into()), None));
    }
    if t.numel() == 0 {
        return Ok((Action::Keep("empty".into()), rule.map(|r| r.index)));
    }
    if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(source.tensor_error(
            t,
            format!(
                "unsupported dtype {:?} (wgquant reads F32, F16 and BF16)",
                t.dtype
            ),
        ));
    }
    let args = rule.map_or_else(|| opts.defaults.clone(), |r| r.args.over(&opts.defaults));
    let where_ = |msg: String| match rule {
        Some(r) => source.tensor_error(t, format!("rule {} ('{}'): {msg}", r.index, r.source)),
        None => source.tensor_error(t, msg),
    };
    let action = match resolve(&args).map_err(&where_)? {
        Choice::Half(h) => Action::Half(h),
        Choice::Quantize(m) => {
            m.check_shape(&t.shape).map_err(|e| where_(e.to_string()))?;
            Action::Quantize(m)
        }
    };
    Ok((action, rule.map(|r| r.index)))
}

/// Output dtype size of an item: the order class it is written in.
fn order_class(item: &PlanItem) -> usize {
    item.outputs
        .iter()
        .map(|p| p.dtype.bitsize())
        .max()
        .unwrap_or(8)
}

/// Plans a run over `source`.
pub fn make_plan(source: &Source, opts: &PlanOptions<'_>) -> Result<Plan> {
    let names: HashSet<&str> = source.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut items = Vec::new();
    for t in source.tensors() {
        if disk::is_part_name(&t.name) {
            return Err(source.tensor_error(
                t,
                "looks like part of an already quantized tensor; quantize the original checkpoint",
            ));
        }
        let (action, rule) = decide(t, opts, source)?;
        let whole = PartSpec {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            sized: true,
        };
        let rows = t.shape.first().copied().unwrap_or(1);
        let row_len = t.numel() / rows.max(1);
        let (outputs, block, prepass) = match &action {
            Action::Keep(_) => (vec![whole], t.numel(), false),
            Action::Half(h) => {
                let dtype = if *h == Half::F16 {
                    Dtype::F16
                } else {
                    Dtype::BF16
                };
                // Casting is per element: any cut is valid.
                (
                    vec![PartSpec { dtype, ..whole }],
                    block_elems(rows, row_len, 32, opts.block_bytes, Some(1)),
                    false,
                )
            }
            Action::Quantize(m) => {
                let parts = m.part_specs(&t.name, &t.shape)?;
                if let Some(p) = parts.iter().find(|p| names.contains(p.name.as_str())) {
                    return Err(source.tensor_error(
                        t,
                        format!("output part '{}' clashes with an input tensor", p.name),
                    ));
                }
                // Per-group methods may cut inside rows (groups are consecutive runs, and a
                // flat run of whole groups is a tensor of its own); per-channel ones need a
                // whole row for its statistics, per-tensor and sparse ones the whole tensor.
                let group = match m.granularity() {
                    crate::format::Granularity::Group(g) if m.row_separable() => Some(g),
                    _ => None,
                };
                let clean = if !m.row_separable() || t.shape.is_empty() {
                    t.numel()
                } else if t.shape.len() >= 2 {
                    block_elems(rows, row_len, m.bits(), opts.block_bytes, group)
                } else if group.is_some() {
                    block_elems(1, t.numel(), m.bits(), opts.block_bytes, group)
                } else {
                    // 1-D per-channel: every element is its own group (a row of one).
                    block_elems(rows, 1, m.bits(), opts.block_bytes, None)
                };
                // Uniform minmax/absmax blocks of whole groups larger than the block (a wide
                // row, a per-tensor tensor) are cut anywhere instead, the ranges gathered by
                // a pre-pass (see `PlanItem::prepass`). Only groups of more than block / 32
                // elements get there, so the ranges stay small.
                let piece = piece_elems(t.numel(), m.bits(), opts.block_bytes);
                let prepass =
                    matches!(m, Method::Uniform(c) if c.range_is_minmax()) && clean > piece;
                (parts, if prepass { piece } else { clean }, prepass)
            }
        };
        items.push(PlanItem {
            tensor: t.clone(),
            action,
            rule,
            outputs,
            block_elems: block,
            prepass,
        });
    }
    // Widest dtypes first keeps every tensor aligned to its element (safetensors' own order).
    items.sort_by_key(|i| std::cmp::Reverse(order_class(i)));
    let shards = split_shards(&items, opts.max_shard_bytes);
    Ok(Plan {
        items,
        shards,
        block_bytes: opts.block_bytes,
        warnings: idle_rules(source, opts),
    })
}

/// A warning for each rule that changes nothing in `source`: its pattern matches no tensor,
/// or only 1-D tensors, which it leaves unless it says `include_1d = true`.
fn idle_rules(source: &Source, opts: &PlanOptions<'_>) -> Vec<String> {
    opts.rules
        .iter()
        .filter_map(|r| {
            let matched: Vec<&SourceTensor> = source
                .tensors()
                .iter()
                .filter(|t| r.matches(&t.name))
                .collect();
            let all_1d = matched.iter().all(|t| t.shape.len() < 2);
            if matched.is_empty() {
                Some(format!(
                    "rule {} ('{}') matches no tensor",
                    r.index, r.source
                ))
            } else if all_1d && !r.skip && !r.include_1d && !opts.include_1d {
                Some(format!(
                    "rule {} ('{}') matches only 1-D tensors, which it leaves as they are \
                     (add include_1d = true to change them)",
                    r.index, r.source
                ))
            } else {
                None
            }
        })
        .collect()
}

/// Consecutive items into shards of at most `max` bytes (an item larger than `max` alone).
fn split_shards(items: &[PlanItem], max: Option<u64>) -> Vec<std::ops::Range<usize>> {
    let Some(max) = max else {
        return vec![0..items.len()];
    };
    let mut shards = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, item) in items.iter().enumerate() {
        let b = item.bytes_out() as u64;
        if i > start && bytes + b > max {
            shards.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += b;
    }
    shards.push(start..items.len());
    shards
}

impl Plan {
    /// Bytes read from the input.
    pub fn bytes_in(&self) -> u64 {
        self.items.iter().map(|i| i.tensor.bytes() as u64).sum()
    }

    /// Bytes written (tensor data).
    pub fn bytes_out(&self) -> u64 {
        self.items.iter().map(|i| i.bytes_out() as u64).sum()
    }

    /// The plan as a table (`--dry-run`): tensor, shape, action, bytes before and after.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<52} {:>18} {:<34} {:>12} {:>12} {:>5}\n",
            "tensor", "shape", "action", "bytes in", "bytes out", "rule"
        );
        for item in &self.items {
            s += &format!(
                "{:<52} {:>18} {:<34} {:>12} {:>12} {:>5}\n",
                item.tensor.name,
                format!("{:?}", item.tensor.shape),
                item.action.label(),
                item.tensor.bytes(),
                item.bytes_out(),
                item.rule.map_or("-".into(), |r| r.to_string())
            );
        }
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s += &format!(
            "total: {} tensors, {} -> {} bytes ({:.2}x) in {} shard(s)\n",
            self.items.len(),
            self.bytes_in(),
            self.bytes_out(),
            self.bytes_in() as f64 / self.bytes_out().max(1) as f64,
            self.shards.len()
        );
        if self
            .items
            .iter()
            .any(|i| i.outputs.iter().any(|p| !p.sized))
        {
            s += "entropy-coded parts (Huffman) are counted at their upper bound; the written size is smaller\n";
        }
        let mib = self.block_bytes as f64 / (1 << 20) as f64;
        let prepass: Vec<&str> = self
            .items
            .iter()
            .filter(|i| i.prepass)
            .map(|i| i.tensor.name.as_str())
            .collect();
        if !prepass.is_empty() {
            s += &format!(
                "{} tensor(s) are read twice, ranges first, then quantized in blocks of \
                 {mib:.2} MiB of f32 cut inside groups (whole groups would not fit): {}\n",
                prepass.len(),
                name_list(&prepass)
            );
        }
        let whole: Vec<String> = self
            .items
            .iter()
            .filter_map(|i| {
                held_whole(i, self.block_bytes).map(|why| {
                    format!(
                        "{} ({why}, {:.1} MiB of f32 per block)",
                        i.tensor.name,
                        i.block_elems as f64 * 4.0 / (1 << 20) as f64
                    )
                })
            })
            .collect();
        if !whole.is_empty() {
            let names: Vec<&str> = whole.iter().map(String::as_str).collect();
            s += &format!(
                "{} tensor(s) are held in memory in blocks of whole groups larger than a block, \
                 their method needing all of a group at once: {}\n",
                whole.len(),
                name_list(&names)
            );
        }
        s
    }
}

/// The first few of `names`, then how many more.
fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 4;
    let mut s = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

/// Rejects an empty plan with a clear message.
pub fn check_nonempty(plan: &Plan, source: &Source) -> Result<()> {
    if plan.items.is_empty() {
        return Err(Error::Format {
            path: source.path().into(),
            msg: "holds no tensors".into(),
        });
    }
    Ok(())
}
