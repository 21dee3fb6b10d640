//! Argument parsing and the subcommands. Each subcommand turns its arguments into library
//! calls; nothing here computes.

mod demo;
mod study;
mod study_discretize;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::checkpoint::{self, QuantizeOptions};
use wgquant::format::Granularity;
use wgquant::gpu::{self, Context};
use wgquant::quant::deep_compression::DcConfig;
use wgquant::quant::discretize::{DiscretizeConfig, Partition};
use wgquant::quant::kmeans::KmeansInit;
use wgquant::quant::uniform::{Calibration, UniformConfig};
use wgquant::quant::{Backend, Method};

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
    /// List the GPU adapters wgpu can see and the one wgquant would pick.
    Adapters,
    /// Studies of the methods on synthetic data.
    Study(study::StudyArgs),
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when an adapter is usable, else the CPU (with a warning).
    Auto,
    /// The GPU; an error when no adapter is usable.
    Gpu,
    /// The CPU.
    Cpu,
}

/// Range placement, as spelled on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Signed codes [−2^(b−1), 2^(b−1)−1], zero point 0.
    Symmetric,
    /// Signed codes [−(2^(b−1)−1), 2^(b−1)−1] (TFLite int8).
    Restricted,
    /// Unsigned codes with a zero point.
    Asymmetric,
}

#[derive(Debug, clap::Args)]
struct QuantizeArgs {
    /// Input .safetensors file (only read).
    input: PathBuf,
    /// Output file (written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// intN (uniform, N = 1..8), linN / expN (linear / exponential discretization, N = 2..8)
    /// or dc (Deep Compression: pruning, k-means, sparse Huffman storage).
    #[arg(long, default_value = "int8", value_parser = parse_scheme)]
    scheme: SchemeArg,
    /// Range placement.
    #[arg(long, value_enum, default_value_t = ModeArg::Symmetric)]
    mode: ModeArg,
    /// tensor, channel, or group:N (N consecutive elements of the last axis); default channel
    /// (dc clusters per tensor).
    #[arg(long)]
    granularity: Option<Granularity>,
    /// minmax, absmax, percentile:P or mse (default: absmax if symmetric, else minmax).
    #[arg(long)]
    calib: Option<Calibration>,
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
    kmeans_init: Option<KmeansInit>,
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

/// A `--scheme` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SchemeArg {
    /// Uniform affine with N bits.
    Int(u32),
    /// Discretization with N bits.
    Discretize(Partition, u32),
    /// Deep Compression.
    Dc,
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

fn parse_scheme(s: &str) -> Result<SchemeArg, String> {
    if s == "dc" {
        return Ok(SchemeArg::Dc);
    }
    let (partition, digits) = if let Some(d) = s.strip_prefix("lin") {
        (Some(Partition::Linear), d)
    } else if let Some(d) = s.strip_prefix("exp") {
        (Some(Partition::Exponential), d)
    } else {
        let d = s.strip_prefix("int").ok_or_else(|| {
            format!("'{s}' is not intN (int8, int4, …), linN, expN (lin4, exp3, …) or dc")
        })?;
        (None, d)
    };
    let bits: u32 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not intN, linN, expN or dc"))?;
    match partition {
        None if !(1..=8).contains(&bits) => Err(format!(
            "bits {bits} out of range: packed codes take 1 to 8 bits"
        )),
        None => Ok(SchemeArg::Int(bits)),
        Some(_) if !(2..=8).contains(&bits) => Err(format!(
            "bits {bits} out of range: discretization takes 2 to 8 bits (0 and ±levels)"
        )),
        Some(p) => Ok(SchemeArg::Discretize(p, bits)),
    }
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
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Gpu => Context::new().map(Some).map_err(CliError::NoGpu),
        DeviceChoice::Auto => match Context::new() {
            Ok(ctx) => Ok(Some(ctx)),
            Err(e) => {
                eprintln!("wgquant: warning: {e}; running on the CPU");
                Ok(None)
            }
        },
    }
}

pub(crate) fn backend(ctx: &Option<Context>) -> Backend<'_> {
    match ctx {
        Some(c) => Backend::Gpu(c),
        None => Backend::Cpu,
    }
}

/// Prints to stdout; a closed pipe (`wgquant inspect f | head`) ends the program quietly
/// instead of panicking.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
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
        Command::Adapters => adapters(),
        Command::Study(a) => study::run(a),
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

/// The method a `quantize` command line asks for.
fn method_of(a: &QuantizeArgs) -> Result<Method, CliError> {
    let granularity = a.granularity.unwrap_or(Granularity::Channel);
    let dc_options = a.sparsity.is_some()
        || a.bits.is_some()
        || a.index_bits.is_some()
        || a.kmeans_init.is_some()
        || a.kmeans_iters.is_some();
    if dc_options && a.scheme != SchemeArg::Dc {
        return Err(CliError::Other(
            "--sparsity, --bits, --index-bits, --kmeans-init and --kmeans-iters apply to \
             --scheme dc (other schemes take their bits from the scheme name)"
                .into(),
        ));
    }
    Ok(match a.scheme {
        SchemeArg::Int(bits) => {
            let mode = match a.mode {
                ModeArg::Symmetric => AffineMode::Symmetric,
                ModeArg::Restricted => AffineMode::SymmetricRestricted,
                ModeArg::Asymmetric => AffineMode::Asymmetric,
            };
            let scheme = AffineScheme::new(bits, mode)?;
            let calibration = a.calib.unwrap_or(if scheme.is_symmetric() {
                Calibration::AbsMax
            } else {
                Calibration::MinMax
            });
            Method::Uniform(UniformConfig {
                scheme,
                granularity,
                calibration,
            })
        }
        SchemeArg::Discretize(partition, bits) => {
            Method::Discretize(DiscretizeConfig::new(partition, bits, granularity))
        }
        SchemeArg::Dc => {
            if a.granularity.is_some_and(|g| g != Granularity::Tensor) {
                return Err(CliError::Other(
                    "dc clusters each tensor as a whole: use --granularity tensor or leave it out"
                        .into(),
                ));
            }
            let base = DcConfig::new(a.sparsity.unwrap_or(0.5), a.bits.unwrap_or(5));
            let cfg = DcConfig {
                index_bits: a.index_bits.unwrap_or(base.index_bits),
                init: a.kmeans_init.unwrap_or(base.init),
                max_iter: a.kmeans_iters.unwrap_or(base.max_iter),
                ..base
            };
            cfg.validate()?;
            Method::DeepCompression(cfg)
        }
    })
}

fn quantize(a: QuantizeArgs) -> Result<(), CliError> {
    let method = method_of(&a)?;
    let ctx = open_device(a.device)?;
    let backend = backend(&ctx);
    let opts = QuantizeOptions {
        method,
        include_1d: a.include_1d,
    };
    let pb = progress_bar();
    let report = checkpoint::quantize_file(&backend, &a.input, &a.output, &opts, Some(&pb))?;
    pb.finish_and_clear();
    emit(&report.table());
    if a.scheme == SchemeArg::Dc {
        emit(&checkpoint::compression::compression_report(&a.output)?.table());
    }
    if let Some(path) = a.report {
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Other(e.to_string()))?;
        write_text(&path, &json)?;
    }
    Ok(())
}

/// Writes a text file atomically (temporary file, then rename).
fn write_text(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::Lib(wgquant::Error::io(path, e));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn dequantize(a: DequantizeArgs) -> Result<(), CliError> {
    let ctx = open_device(a.device)?;
    let backend = backend(&ctx);
    let n = checkpoint::dequantize_file(&backend, &a.input, &a.output)?;
    eprintln!(
        "wgquant: decoded {n} tensors into {} on {}",
        a.output.display(),
        checkpoint::quantize::device_label(&backend)
    );
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
