//! Argument parsing and the subcommands. Each subcommand turns its arguments into library
//! calls; nothing here computes.

mod bench_checkpoint;
mod bench_matmul;
mod demo;
mod plot;
mod study;
mod study_discretize;
mod study_weq;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use wgquant::checkpoint::rules::Rules;
use wgquant::checkpoint::{self, QuantizeOptions, output};
use wgquant::format::Granularity;
use wgquant::gpu::{self, Context};
use wgquant::quant::Backend;
use wgquant::quant::spec::{MethodArgs, resolve};
use wgquant::quant::uniform::Calibration;

/// Quantize neural-network checkpoints with WebGPU compute shaders (any Vulkan, Metal, DX12
/// or GL device), with a CPU implementation of every operation.
#[derive(Debug, Parser)]
#[command(name = "wgquant", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize the float tensors of a .safetensors checkpoint.
    Quantize(QuantizeArgs),
    /// Decode a wgquant file back to float tensors in their original dtypes.
    Dequantize(DequantizeArgs),
    /// List a checkpoint's tensors: shapes, schemes, bits per weight, sizes.
    Inspect(InspectArgs),
    /// Quantize a built-in synthetic transformer with every scheme on GPU and CPU.
    Demo(demo::DemoArgs),
    /// Compare methods on synthetic tensors and checkpoint weights (`study weq`).
    Study(study::StudyArgs),
    /// Pictures as SVG (`plot levels`: a weight histogram with each method's levels).
    Plot(plot::PlotArgs),
    /// List the GPU adapters wgpu can see and the one wgquant would pick.
    Adapters,
    /// Measurements at scale.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Quantize a synthetic multi-GB BF16 checkpoint (int4 group-128) on GPU and CPU: wall
    /// time, input GB/s, peak RSS.
    Checkpoint(bench_checkpoint::CheckpointBenchArgs),
    /// The dequantizing matmul at LLM shapes: GB/s of W, GFLOP/s, against the f32 kernel, the
    /// CPU twin and the copy shader.
    Matmul(bench_matmul::MatmulBenchArgs),
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU when one is usable, else the CPU, saying why (with only a software
    /// adapter such as llvmpipe the CPU backend is the faster one).
    Auto,
    /// The GPU; an error when no adapter is usable.
    Gpu,
    /// The CPU.
    Cpu,
}

#[derive(Debug, clap::Args)]
struct QuantizeArgs {
    /// Input .safetensors file, or a sharded checkpoint's .safetensors.index.json (only read).
    input: PathBuf,
    /// Output file (written atomically; sharded as NAME-0000k-of-0000n.safetensors with
    /// NAME.safetensors.index.json when --max-shard-size splits it).
    #[arg(short, long)]
    output: PathBuf,
    /// intN (uniform affine, N = 1..8: int8, int4, int3, int2, …), weqN (weighted-entropy
    /// codebook), linN / expN (correlation-maximising discretization, N = 2..8), dc (Deep
    /// Compression), f16 or bf16; with --format gguf: q8_0, q4_0, f16 or f32.
    #[arg(long, default_value = "int8", value_parser = check_scheme)]
    scheme: String,
    /// safetensors (wgquant's self-describing layout) or gguf (llama.cpp blocks).
    #[arg(long, value_enum, default_value_t = Format::Safetensors)]
    format: Format,
    /// symmetric (default), restricted (TFLite int8, [−127, 127]) or asymmetric; intN only.
    #[arg(long)]
    mode: Option<String>,
    /// tensor, channel, or group:N (N consecutive elements of the last axis) [default:
    /// channel; dc: tensor].
    #[arg(long, value_parser = check_granularity)]
    granularity: Option<String>,
    /// minmax, absmax, percentile:P or mse (default: absmax if symmetric, else minmax).
    #[arg(long, value_parser = check_calib)]
    calib: Option<String>,
    /// A TOML file of per-tensor rules (name globs or regexes to settings or skip; first match
    /// wins).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Print the plan (tensor, shape, action, bytes before and after) and stop.
    #[arg(long)]
    dry_run: bool,
    /// Split the output into shards of at most this size (e.g. 2GB, 500MiB, 1000000).
    #[arg(long, value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Also quantize 1-D tensors (norms, biases).
    #[arg(long)]
    include_1d: bool,
    /// dc: fraction of each tensor's weights pruned by magnitude [default: 0.5].
    #[arg(long)]
    sparsity: Option<f32>,
    /// dc: bits per shared-weight code (2^B k-means centroids per tensor), 1..=8 [default: 5].
    #[arg(long)]
    bits: Option<u32>,
    /// dc: width of the relative index of the sparse storage, 1..=16 [default: 5].
    #[arg(long)]
    index_bits: Option<u32>,
    /// dc: k-means initialisation: linear, forgy or density [default: linear].
    #[arg(long)]
    kmeans_init: Option<String>,
    /// dc: k-means iteration cap [default: 30].
    #[arg(long)]
    kmeans_iters: Option<u32>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn check_scheme(s: &str) -> Result<String, String> {
    if checkpoint::gguf::parse_type(s).is_some() {
        return Ok(s.to_string());
    }
    resolve(&MethodArgs {
        scheme: Some(s.into()),
        ..Default::default()
    })
    .map(|_| s.to_string())
}

/// Output file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// .safetensors with wgquant's per-tensor records.
    Safetensors,
    /// GGUF v3 with F16 / Q8_0 / Q4_0 blocks.
    Gguf,
}

fn check_granularity(s: &str) -> Result<String, String> {
    s.parse::<Granularity>().map(|_| s.to_string())
}

fn check_calib(s: &str) -> Result<String, String> {
    s.parse::<Calibration>().map(|_| s.to_string())
}

/// Bytes from `123`, `500MB`, `2GB`, `1GiB`, `64MiB`, `10kB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a size"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit '{other}'")),
    };
    let bytes = (n * mult).round();
    if bytes < 1.0 {
        return Err(format!("size '{s}' must be positive"));
    }
    Ok(bytes as u64)
}

#[derive(Debug, clap::Args)]
struct DequantizeArgs {
    /// Input wgquant .safetensors file.
    input: PathBuf,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// A .safetensors file, quantized or not.
    file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Errors the CLI prints: the library's, or its own.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the library.
    #[error(transparent)]
    Lib(#[from] wgquant::Error),
    /// The GPU was requested but is not usable.
    #[error("--device gpu: {0}; run with --device cpu to use the CPU")]
    NoGpu(wgquant::Error),
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

/// Opens the device the user asked for. `None` means the CPU.
pub fn open_device(choice: DeviceChoice) -> Result<Option<Context>, CliError> {
    open(choice, false)
}

/// [`open_device`], except that `Auto` also takes a software adapter: for the demo and the
/// benches, whose job is to compare the shaders with the CPU on whatever device there is.
pub fn open_any_device(choice: DeviceChoice) -> Result<Option<Context>, CliError> {
    open(choice, true)
}

/// `Auto` passes over a software adapter unless `software_ok`: on llvmpipe/lavapipe the CPU
/// backend runs every method faster (MiniLM, 2 cores: int4 0.18 s vs 0.79 s, WEQ 5 s vs 42 s).
fn open(choice: DeviceChoice, software_ok: bool) -> Result<Option<Context>, CliError> {
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Gpu => Context::new().map(Some).map_err(CliError::NoGpu),
        DeviceChoice::Auto => match Context::new() {
            Ok(ctx) if ctx.is_software() && !software_ok => {
                eprintln!(
                    "wgquant: note: the only adapter is a software one ({}); running on the CPU, \
                     which is faster there (--device gpu runs the shaders anyway)",
                    ctx.adapter_summary()
                );
                Ok(None)
            }
            Ok(ctx) => Ok(Some(ctx)),
            Err(e) => {
                eprintln!("wgquant: warning: {e}; running on the CPU");
                Ok(None)
            }
        },
    }
}

fn backend(ctx: &Option<Context>) -> Backend<'_> {
    match ctx {
        Some(c) => Backend::Gpu(c),
        None => Backend::Cpu,
    }
}

/// `text` with every control character but newline and tab written as `\uXXXX`: a tensor
/// name or path holding an escape sequence must not drive the terminal. The same escape is
/// valid inside a JSON string, where serde leaves DEL and the C1 controls raw.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Prints to stdout, [`terminal_safe`]; a closed pipe (`wgquant inspect f | head`) ends the
/// program quietly instead of panicking.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(terminal_safe(text).as_bytes())
        .and_then(|_| out.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("wgquant: error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Quantize(a) => quantize(a),
        Command::Dequantize(a) => dequantize(a),
        Command::Inspect(a) => inspect(a),
        Command::Demo(a) => demo::run(a),
        Command::Study(a) => study::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Adapters => adapters(),
        Command::Bench(BenchCommand::Checkpoint(a)) => bench_checkpoint::run(a),
        Command::Bench(BenchCommand::Matmul(a)) => bench_matmul::run(a),
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

fn quantize(a: QuantizeArgs) -> Result<(), CliError> {
    if a.format == Format::Gguf {
        return quantize_gguf(a);
    }
    let defaults = MethodArgs {
        scheme: Some(a.scheme.clone()),
        mode: a.mode.clone(),
        granularity: a.granularity.clone(),
        calib: a.calib.clone(),
        sparsity: a.sparsity,
        bits: a.bits,
        index_bits: a.index_bits,
        kmeans_init: a.kmeans_init.clone(),
        kmeans_iters: a.kmeans_iters,
    };
    // The defaults must make sense on their own, before any file is touched.
    resolve(&defaults).map_err(CliError::Other)?;
    let rules = match &a.rules {
        Some(path) => Rules::load(path)?,
        None => Rules::default(),
    };
    let opts = QuantizeOptions {
        defaults,
        rules,
        include_1d: a.include_1d,
        max_shard_bytes: a.max_shard_size,
        block_bytes: 0,
        report: a.report.clone(),
    };
    if a.dry_run {
        let (_, plan) = checkpoint::quantize::plan_file(&a.input, &opts)?;
        emit(&plan.table());
        return Ok(());
    }
    let ctx = open_device(a.device)?;
    let backend = backend(&ctx);
    let pb = progress_bar();
    let report = checkpoint::quantize_file(&backend, &a.input, &a.output, &opts, Some(&pb))?;
    pb.finish_and_clear();
    emit(&report.table());
    if report.tensors.iter().any(|t| t.scheme.starts_with("dc ")) {
        // Deep Compression's stages, as its paper reports them.
        let path = if opts.max_shard_bytes.is_some() {
            checkpoint::quantize::index_path(&a.output)
        } else {
            a.output.clone()
        };
        emit(&checkpoint::compression::compression_report(&path)?.table());
    }
    Ok(())
}

/// `quantize --format gguf`: llama.cpp's block types, encoded on the CPU.
fn quantize_gguf(a: QuantizeArgs) -> Result<(), CliError> {
    let ty = checkpoint::gguf::parse_type(&a.scheme).ok_or_else(|| {
        CliError::Other(format!(
            "--format gguf takes --scheme q8_0, q4_0, f16 or f32, not '{}'",
            a.scheme
        ))
    })?;
    if a.rules.is_some() || a.max_shard_size.is_some() || a.dry_run {
        return Err(CliError::Other(
            "--format gguf does not take --rules, --max-shard-size or --dry-run".into(),
        ));
    }
    // Every path is checked before the run, so a bad --report fails at once.
    let outputs: Vec<&std::path::Path> = std::iter::once(a.output.as_path())
        .chain(a.report.as_deref())
        .collect();
    output::check_outputs(&[a.input.as_path()], &outputs)?;
    let pb = progress_bar();
    let report = checkpoint::gguf::export_gguf(&a.input, &a.output, ty, Some(&pb))?;
    pb.finish_and_clear();
    emit(&report.table());
    if let Some(path) = a.report {
        output::write_text(&path, &report.to_json()?)?;
    }
    Ok(())
}

fn dequantize(a: DequantizeArgs) -> Result<(), CliError> {
    let ctx = open_device(a.device)?;
    let backend = backend(&ctx);
    let n = checkpoint::dequantize_file(&backend, &a.input, &a.output)?;
    let line = format!(
        "wgquant: decoded {n} tensors into {} on {}",
        a.output.display(),
        checkpoint::quantize::device_label(&backend)
    );
    eprintln!("{}", terminal_safe(&line));
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<(), CliError> {
    let summary = checkpoint::inspect_file(&a.file)?;
    if a.json {
        let json =
            serde_json::to_string_pretty(&summary).map_err(|e| CliError::Other(e.to_string()))?;
        outln!("{json}");
        return Ok(());
    }
    outln!("{} ({} bytes)", summary.path, summary.file_bytes);
    outln!(
        "{:<48} {:>16} {:>6} {:>8} {:>12}  scheme",
        "tensor",
        "shape",
        "dtype",
        "bits/w",
        "bytes"
    );
    for t in &summary.tensors {
        outln!(
            "{:<48} {:>16} {:>6} {:>8.3} {:>12}  {}",
            t.name,
            format!("{:?}", t.shape),
            t.dtype,
            t.bits_per_weight,
            t.bytes,
            t.scheme
        );
    }
    Ok(())
}

fn adapters() -> Result<(), CliError> {
    let found = gpu::list_adapters();
    if found.is_empty() {
        outln!("no adapters found");
    }
    for info in &found {
        outln!("{}", gpu::describe_adapter(info));
    }
    match Context::new() {
        Ok(ctx) => outln!("wgquant would use: {}", ctx.adapter_summary()),
        Err(e) => outln!("wgquant would use the CPU: {e}"),
    }
    Ok(())
}
