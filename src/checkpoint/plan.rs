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
    /// Rows (slices along axis 0) per streamed block; all rows when it cannot be split.
    pub block_rows: usize,
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

    /// The row blocks it is processed in.
    pub fn blocks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let (rows, step) = (self.rows(), self.block_rows.max(1));
        (0..rows.div_ceil(step).max(1)).map(move |b| b * step..((b + 1) * step).min(rows))
    }
}

/// The whole run: items in writing order and the shards they fall in.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Items in the order they are processed and written.
    pub items: Vec<PlanItem>,
    /// Item index ranges of each output shard.
    pub shards: Vec<std::ops::Range<usize>>,
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
    if !explicit && t.shape.len() < 2 && !opts.include_1d {
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
        let (outputs, block) = match &action {
            Action::Keep(_) => (vec![whole], t.shape.first().copied().unwrap_or(1)),
            Action::Half(h) => {
                let dtype = if *h == Half::F16 {
                    Dtype::F16
                } else {
                    Dtype::BF16
                };
                let rows = t.shape.first().copied().unwrap_or(1);
                (
                    vec![PartSpec { dtype, ..whole }],
                    block_rows(rows, t.numel() / rows.max(1), 32, opts.block_bytes),
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
                let rows = t.shape.first().copied().unwrap_or(1);
                let block = if m.row_separable() && t.shape.len() >= 2 {
                    block_rows(rows, t.numel() / rows.max(1), m.bits(), opts.block_bytes)
                } else {
                    rows
                };
                (parts, block)
            }
        };
        items.push(PlanItem {
            tensor: t.clone(),
            action,
            rule,
            outputs,
            block_rows: block,
        });
    }
    // Widest dtypes first keeps every tensor aligned to its element (safetensors' own order).
    items.sort_by_key(|i| std::cmp::Reverse(order_class(i)));
    let shards = split_shards(&items, opts.max_shard_bytes);
    Ok(Plan { items, shards })
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
        s
    }
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
