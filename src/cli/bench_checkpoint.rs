//! `wgquant bench checkpoint`: the scale test. Builds (once) a synthetic BF16 checkpoint with
//! Llama-7B shapes of the requested size, then quantizes it with int4 group-128 on the GPU
//! and on the CPU, reporting wall time, input GB/s and peak resident memory of each run, beside
//! the input read speed and the method's own throughput on one block.

use std::path::PathBuf;
use std::time::Instant;

use wgquant::checkpoint::source::Source;
use wgquant::checkpoint::synthetic::{LlmShapes, write_llm};
use wgquant::checkpoint::{self, QuantizeOptions};
use wgquant::quant::Backend;
use wgquant::quant::spec::{Choice, MethodArgs, resolve};

use super::{CliError, DeviceChoice, open_device};
use crate::outln;

#[derive(Debug, clap::Args)]
pub struct CheckpointBenchArgs {
    /// Size of the synthetic BF16 checkpoint in GB (more than 0, at most 1000).
    #[arg(long, default_value_t = 8.0, value_parser = parse_size_gb)]
    size_gb: f64,
    /// Directory for the checkpoint and outputs (reused between runs).
    #[arg(long, default_value = "target/bench-checkpoint")]
    dir: PathBuf,
    /// Which backends to run.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    run: Which,
    /// Keep the quantized outputs.
    #[arg(long)]
    keep: bool,
}

/// A size in GB that can be built: finite, positive and at most 1000 (NaN or inf would
/// size the checkpoint without bound).
fn parse_size_gb(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
        return Err(format!(
            "--size-gb {s}: must be more than 0 and at most 1000"
        ));
    }
    Ok(v)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Gpu,
    Cpu,
    Both,
}

/// Peak resident set (VmHWM) in bytes, from /proc/self/status.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM so the next phase's peak is its own (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn int4_g128() -> MethodArgs {
    MethodArgs {
        scheme: Some("int4".into()),
        granularity: Some("group:128".into()),
        calib: Some("absmax".into()),
        ..Default::default()
    }
}

/// GB/s of reading the whole input through the map and converting BF16 to f32 (the reader
/// stage alone).
fn read_speed(model: &std::path::Path) -> Result<f64, CliError> {
    let source = Source::open(model)?;
    let t0 = Instant::now();
    let mut bytes = 0u64;
    for t in source.tensors() {
        let data = source.data(t);
        for piece in data.chunks(64 << 20) {
            let entry = checkpoint::file::TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: vec![piece.len() / 2],
                data: piece,
            };
            let v = checkpoint::file::to_f32(source.shard(t), &entry)?;
            std::hint::black_box(&v);
            source.shard(t).release(piece);
            bytes += piece.len() as u64;
        }
    }
    Ok(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

/// GB/s (of BF16 input) of the method alone on one 4096 × 4096 block.
fn method_speed(backend: &Backend<'_>) -> Result<f64, CliError> {
    let Choice::Quantize(method) = resolve(&int4_g128()).map_err(CliError::Other)? else {
        return Err(CliError::Other("int4 is a quantizer".into()));
    };
    let shape = [4096usize, 4096];
    let values: Vec<f32> = (0..shape[0] * shape[1])
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    method.quantize(backend, "block", &values, &shape)?;
    let t0 = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        std::hint::black_box(method.quantize(backend, "block", &values, &shape)?);
    }
    Ok((values.len() * 2 * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

pub fn run(args: CheckpointBenchArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.dir).map_err(|e| wgquant::Error::io(&args.dir, e))?;
    let shapes = LlmShapes::for_bytes((args.size_gb * 1e9) as u64);
    let model = args.dir.join(format!(
        "llm-{}x{}-{}l.safetensors",
        shapes.hidden, shapes.ffn, shapes.layers
    ));
    if !model.exists() {
        outln!(
            "writing {} ({} layers of Llama-7B shapes, BF16)…",
            model.display(),
            shapes.layers
        );
        let t0 = Instant::now();
        let bytes = write_llm(&model, &shapes, 2026)?;
        outln!(
            "  {:.2} GB in {:.1} s",
            bytes as f64 / 1e9,
            t0.elapsed().as_secs_f64()
        );
    }
    let input_bytes = std::fs::metadata(&model)
        .map_err(|e| wgquant::Error::io(&model, e))?
        .len();
    let ctx = if args.run == Which::Cpu {
        None
    } else {
        open_device(DeviceChoice::Gpu)?
    };
    let read = read_speed(&model)?;
    outln!(
        "input: {} ({:.2} GB); read + BF16→f32 {:.2} GB/s",
        model.display(),
        input_bytes as f64 / 1e9,
        read
    );
    let mut runs: Vec<(String, Backend<'_>)> = Vec::new();
    if let Some(c) = &ctx {
        runs.push((format!("gpu ({})", c.adapter_summary()), Backend::Gpu(c)));
    }
    if args.run != Which::Gpu {
        runs.push((
            format!("cpu ({} threads)", rayon::current_num_threads()),
            Backend::Cpu,
        ));
    }
    outln!("");
    outln!(
        "{:<52} {:>9} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "int4 group-128",
        "wall s",
        "in GB/s",
        "method",
        "bound",
        "of bound",
        "peak RSS"
    );
    for (label, backend) in &runs {
        let method = method_speed(backend)?;
        let out = args.dir.join("out.safetensors");
        let opts = QuantizeOptions::with_defaults(int4_g128());
        reset_peak_rss();
        let t0 = Instant::now();
        let report = checkpoint::quantize_file(backend, &model, &out, &opts, None)?;
        let wall = t0.elapsed().as_secs_f64();
        let peak = peak_rss().unwrap_or(0);
        let rate = report.totals.bytes_in as f64 / wall / 1e9;
        let bound = read.min(method);
        outln!(
            "{:<52} {:>9.1} {:>10.2} {:>10.2} {:>10} {:>11.0}% {:>6.2} GiB",
            label,
            wall,
            rate,
            method,
            if method < read { "method" } else { "read" },
            100.0 * rate / bound,
            gib(peak)
        );
        outln!(
            "  {} tensors quantized, {:.2} → {:.2} GB, SQNR {:.2} dB",
            report.totals.quantized,
            report.totals.bytes_in as f64 / 1e9,
            report.totals.bytes_out as f64 / 1e9,
            report.totals.sqnr_db.unwrap_or(f64::INFINITY)
        );
        if !args.keep {
            let _ = std::fs::remove_file(&out);
        }
    }
    Ok(())
}
