//! Quantizing a whole checkpoint: which tensors to quantize, quantizing them on the chosen
//! backend, measuring the error, and writing the self-describing output atomically.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Instant;

use super::file::{Checkpoint, OutTensor, TensorEntry, check_distinct, to_f32, write_atomic};
use super::report::{ErrorStats, Report, TensorReport, Totals};
use crate::error::{Error, Result};
use crate::format::disk;
use crate::quant::{self, Backend, Method};

/// What to quantize and how.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The method for every quantized tensor.
    pub method: Method,
    /// Also quantize 1-D tensors (norms, biases); off by default.
    pub include_1d: bool,
}

/// What happens to one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Quantize,
    PassThrough(&'static str),
}

fn action(t: &TensorEntry<'_>, opts: &QuantizeOptions) -> Action {
    if !t.is_float() {
        Action::PassThrough("not float")
    } else if t.shape.len() < 2 && !opts.include_1d {
        Action::PassThrough("1-D")
    } else if t.numel() == 0 {
        Action::PassThrough("empty")
    } else {
        Action::Quantize
    }
}

/// Quantizes every eligible tensor of `input` into `output`; returns the report. Nothing is
/// written under `output` unless the whole run succeeds, and `input` is only read.
pub fn quantize_file(
    backend: &Backend<'_>,
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Report> {
    let start = Instant::now();
    check_distinct(input, output)?;
    let ckpt = Checkpoint::open(input)?;
    let tensors = ckpt.tensors()?;
    let plan: Vec<Action> = tensors.iter().map(|t| action(t, opts)).collect();
    preflight(&ckpt, &tensors, &plan, opts)?;
    if let Some(pb) = progress {
        pb.set_length(tensors.iter().map(|t| t.data.len() as u64).sum());
    }

    let mut outs: Vec<(String, OutTensor<'_>)> = Vec::new();
    let mut records = BTreeMap::new();
    let mut report = Report {
        input: input.display().to_string(),
        output: output.display().to_string(),
        device: device_label(backend),
        ..Default::default()
    };
    let mut total_err = ErrorStats::default();
    let mut quantized_bits = (0u64, 0u64); // (stored bytes, elements)
    for (t, act) in tensors.iter().zip(&plan) {
        let t0 = Instant::now();
        let bytes_in = t.data.len() as u64;
        let entry = match act {
            Action::PassThrough(why) => {
                outs.push((
                    t.name.clone(),
                    OutTensor {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        data: Cow::Borrowed(t.data),
                    },
                ));
                TensorReport {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    scheme: format!("none ({why})"),
                    bits_per_weight: t.dtype.bitsize() as f64,
                    sqnr_db: None,
                    rel_err: 0.0,
                    bytes_in,
                    bytes_out: bytes_in,
                    seconds: t0.elapsed().as_secs_f64(),
                }
            }
            Action::Quantize => {
                let wrap = |e: Error| match e {
                    e @ Error::Tensor { .. } => e,
                    e => ckpt.tensor_error(&t.name, e.to_string()),
                };
                let values = to_f32(&ckpt, t)?;
                let qt = opts
                    .method
                    .quantize(backend, &t.name, &values, &t.shape)
                    .map_err(wrap)?;
                let approx = quant::dequantize(backend, &qt).map_err(wrap)?;
                let err = ErrorStats::measure(&values, &approx);
                total_err.add(&err);
                let (record, parts) = disk::to_parts(
                    &t.name,
                    &qt,
                    opts.method.name(),
                    t.dtype,
                    opts.method.detail(),
                    opts.method.storage(),
                )
                .map_err(wrap)?;
                let bytes_out: u64 = parts.iter().map(|p| p.data.len() as u64).sum();
                quantized_bits.0 += bytes_out;
                quantized_bits.1 += qt.numel() as u64;
                for p in parts {
                    outs.push((
                        p.name,
                        OutTensor {
                            dtype: p.dtype,
                            shape: p.shape,
                            data: Cow::Owned(p.data),
                        },
                    ));
                }
                records.insert(t.name.clone(), record);
                TensorReport {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    scheme: opts.method.label(),
                    bits_per_weight: bytes_out as f64 * 8.0 / qt.numel().max(1) as f64,
                    sqnr_db: err.sqnr_db(),
                    rel_err: err.rel_err(),
                    bytes_in,
                    bytes_out,
                    seconds: t0.elapsed().as_secs_f64(),
                }
            }
        };
        if let Some(pb) = progress {
            pb.inc(bytes_in);
        }
        report.tensors.push(entry);
    }
    let keep = ckpt.metadata()?;
    let metadata = disk::metadata(&records, keep.as_ref())?;
    write_atomic(output, &outs, metadata)?;

    let quantized = records.len();
    report.totals = Totals {
        quantized,
        passed_through: tensors.len() - quantized,
        bytes_in: report.tensors.iter().map(|t| t.bytes_in).sum(),
        bytes_out: report.tensors.iter().map(|t| t.bytes_out).sum(),
        bits_per_weight: quantized_bits.0 as f64 * 8.0 / quantized_bits.1.max(1) as f64,
        sqnr_db: total_err.sqnr_db(),
        rel_err: total_err.rel_err(),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(report)
}

/// Every check that needs no computation, so a bad tensor fails the run before any work:
/// dtypes, shapes against the method, and name clashes with the parts we would write.
fn preflight(
    ckpt: &Checkpoint,
    tensors: &[TensorEntry<'_>],
    plan: &[Action],
    opts: &QuantizeOptions,
) -> Result<()> {
    let names: HashSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    for (t, act) in tensors.iter().zip(plan) {
        if disk::is_part_name(&t.name) {
            return Err(ckpt.tensor_error(
                &t.name,
                "looks like part of an already quantized tensor; quantize the original checkpoint",
            ));
        }
        if *act != Action::Quantize {
            continue;
        }
        if !t.is_supported_float() {
            return Err(ckpt.tensor_error(
                &t.name,
                format!(
                    "unsupported dtype {:?} (wgquant quantizes F32, F16 and BF16)",
                    t.dtype
                ),
            ));
        }
        opts.method
            .check_shape(&t.shape)
            .map_err(|e| ckpt.tensor_error(&t.name, e.to_string()))?;
        for suffix in disk::PART_SUFFIXES {
            let part = format!("{}{suffix}", t.name);
            if names.contains(part.as_str()) {
                return Err(ckpt.tensor_error(
                    &t.name,
                    format!("output part '{part}' clashes with an input tensor"),
                ));
            }
        }
    }
    Ok(())
}

/// "gpu: adapter" or "cpu".
pub fn device_label(backend: &Backend<'_>) -> String {
    match backend {
        Backend::Gpu(ctx) => format!("gpu: {}", ctx.adapter_summary()),
        Backend::Cpu => format!("cpu: {} threads", rayon::current_num_threads()),
    }
}
