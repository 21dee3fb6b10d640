//! `wgquant plot levels`: an SVG like Figure 1 of the WEQ paper (Park, Ahn, Yoo, CVPR 2017):
//! the histogram of a weight tensor (synthetic Laplace, or one tensor of a checkpoint) with
//! each method's quantization levels marked as vertical lines, one colour per method (WEQ,
//! uniform absmax, uniform MSE-clip, power-of-two log), with a legend giving each method's
//! SQNR. Drawn with plotters' SVG backend only and written atomically.

use std::path::PathBuf;

use plotters::prelude::*;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use wgquant::checkpoint::Checkpoint;
use wgquant::checkpoint::report::ErrorStats;
use wgquant::format::{Encoding, QuantizedTensor};
use wgquant::quant;

use super::study_weq::quantize_with;
use super::{CliError, DeviceChoice, backend, open_device};
use wgquant::checkpoint::output::write_text;

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    #[command(subcommand)]
    what: PlotCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PlotCommand {
    /// Histogram of a weight tensor with each method's levels (SVG).
    Levels(LevelsArgs),
}

#[derive(Debug, clap::Args)]
struct LevelsArgs {
    /// Methods to mark: `all`, or a comma list of weq, absmax, mse, pow2; `weqN` is weq at N
    /// bits.
    #[arg(long, default_value = "all")]
    scheme: String,
    /// Bits of every method (default 3, or N of `weqN`).
    #[arg(long)]
    bits: Option<u32>,
    /// Plot this checkpoint's tensor (with --tensor) instead of a synthetic Laplace tensor.
    #[arg(long, requires = "tensor")]
    checkpoint: Option<PathBuf>,
    /// Name of the checkpoint tensor.
    #[arg(long, requires = "checkpoint")]
    tensor: Option<String>,
    /// Elements of the synthetic tensor.
    #[arg(long, default_value_t = 1 << 16)]
    numel: usize,
    /// Histogram bins.
    #[arg(long, default_value_t = 160)]
    bins: usize,
    /// Where to run the quantizers.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Output SVG file.
    #[arg(short, long)]
    output: PathBuf,
}

/// A method that can be marked: its `--scheme` key, the study's method name, its legend
/// label and colour.
struct Marked {
    key: &'static str,
    method: &'static str,
    label: &'static str,
    color: RGBColor,
}

const MARKED: [Marked; 4] = [
    Marked {
        key: "weq",
        method: "weq",
        label: "WEQ",
        color: RGBColor(214, 39, 40),
    },
    Marked {
        key: "absmax",
        method: "uniform absmax",
        label: "uniform absmax",
        color: RGBColor(31, 119, 180),
    },
    Marked {
        key: "mse",
        method: "uniform mse",
        label: "uniform MSE-clip",
        color: RGBColor(44, 160, 44),
    },
    Marked {
        key: "pow2",
        method: "pow2 log",
        label: "power-of-two log",
        color: RGBColor(255, 127, 14),
    },
];

/// The methods and bits `--scheme` and `--bits` ask for.
fn parse_scheme(scheme: &str, bits: Option<u32>) -> Result<(Vec<&'static Marked>, u32), String> {
    let mut chosen = Vec::new();
    let mut scheme_bits = None;
    for part in scheme.split(',').map(str::trim) {
        let key = match part.strip_prefix("weq").filter(|n| !n.is_empty()) {
            Some(n) => {
                let n: u32 = n.parse().map_err(|_| format!("unknown scheme '{part}'"))?;
                scheme_bits = Some(n);
                "weq"
            }
            None => part,
        };
        if key == "all" {
            chosen.extend(MARKED.iter());
            continue;
        }
        let m = MARKED.iter().find(|m| m.key == key).ok_or_else(|| {
            format!("unknown scheme '{part}' (all, weq, weqN, absmax, mse, pow2)")
        })?;
        chosen.push(m);
    }
    chosen.dedup_by_key(|m| m.key);
    let bits = match (bits, scheme_bits) {
        (Some(b), Some(s)) if b != s => {
            return Err(format!("--bits {b} contradicts --scheme weq{s}"));
        }
        (Some(b), _) | (None, Some(b)) => b,
        (None, None) => 3,
    };
    if !(1..=8).contains(&bits) {
        return Err(format!("bits {bits} outside 1..=8"));
    }
    Ok((chosen, bits))
}

/// Every level a quantized tensor can decode to (per-tensor: one group).
fn levels_of(qt: &QuantizedTensor) -> Vec<f32> {
    match &qt.encoding {
        Encoding::Codebook { levels, .. } => levels[..1 << qt.bits].to_vec(),
        Encoding::Affine {
            scheme,
            scale,
            zero_point,
        } => (scheme.qmin()..=scheme.qmax())
            .map(|q| (q - zero_point[0]) as f32 * scale[0])
            .collect(),
    }
}

/// The tensor to plot and its description.
fn load(a: &LevelsArgs) -> Result<(String, Vec<f32>), CliError> {
    if let (Some(path), Some(name)) = (&a.checkpoint, &a.tensor) {
        let ckpt = Checkpoint::open(path)?;
        let tensors = ckpt.tensors()?;
        let t = tensors.iter().find(|t| &t.name == name).ok_or_else(|| {
            CliError::Other(format!("{}: no tensor named '{name}'", path.display()))
        })?;
        if !t.is_float() {
            return Err(CliError::Other(format!(
                "{}: tensor '{name}' is not F32, F16 or BF16",
                path.display()
            )));
        }
        let x = wgquant::checkpoint::file::to_f32(&ckpt, t)?;
        return Ok((format!("{name} ({:?})", t.shape), x));
    }
    if a.numel == 0 {
        return Err(CliError::Other("--numel must be positive".into()));
    }
    let mut r = rand::rngs::StdRng::seed_from_u64(2017);
    let x = (0..a.numel)
        .map(|_| {
            let (e1, e2): (f32, f32) = (Exp1.sample(&mut r), Exp1.sample(&mut r));
            e1 - e2
        })
        .collect();
    Ok((format!("synthetic Laplace ({} values)", a.numel), x))
}

/// Counts of `x` in `bins` equal bins over [lo, hi].
fn histogram(x: &[f32], bins: usize, lo: f32, hi: f32) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    let width = (hi - lo) / bins as f32;
    for &v in x {
        let b = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f32) as usize;
        counts[b] += 1;
    }
    counts
}

pub fn run(args: PlotArgs) -> Result<(), CliError> {
    let PlotCommand::Levels(a) = args.what;
    let (methods, bits) = parse_scheme(&a.scheme, a.bits).map_err(CliError::Other)?;
    if a.bins == 0 {
        return Err(CliError::Other("--bins must be positive".into()));
    }
    // The picture never replaces the checkpoint it draws from, nor a device.
    let inputs: Vec<&std::path::Path> = a.checkpoint.as_deref().into_iter().collect();
    wgquant::checkpoint::output::check_outputs(&inputs, &[a.output.as_path()])?;
    let (source, x) = load(&a)?;
    quant::check_finite(&source, &x)?;
    let ctx = open_device(a.device)?;
    let b = backend(&ctx);
    let mut marks = Vec::new();
    for m in &methods {
        let qt = quantize_with(&b, m.method, &x, bits)?;
        let xhat = quant::dequantize(&b, &qt)?;
        let sqnr = ErrorStats::measure(&x, &xhat)
            .sqnr_db()
            .map_or("exact".to_string(), |d| format!("{d:.2} dB"));
        marks.push((m, levels_of(&qt), sqnr));
    }
    let m = x
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let span = marks
        .iter()
        .flat_map(|(_, l, _)| l.iter())
        .fold(m, |s, v| if v.is_finite() { s.max(v.abs()) } else { s })
        * 1.05;
    let counts = histogram(&x, a.bins, -m, m);
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut svg = String::new();
    draw(&mut svg, &source, bits, (span, top, m), &counts, &marks)
        .map_err(|e| CliError::Other(format!("{}: drawing failed: {e}", a.output.display())))?;
    write_text(&a.output, &svg)?;
    let line = format!("wgquant: wrote {}", a.output.display());
    eprintln!("{}", super::terminal_safe(&line));
    Ok(())
}

type Mark<'a> = (&'a &'static Marked, Vec<f32>, String);

/// Draws the histogram (bars over [−m, m]) and each method's levels as vertical lines of a
/// decreasing height, so overlapping levels of different methods stay distinguishable.
fn draw(
    svg: &mut String,
    source: &str,
    bits: u32,
    (span, top, m): (f32, f64, f32),
    counts: &[u64],
    marks: &[Mark<'_>],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (1100, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{source}: histogram and {bits}-bit levels"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-f64::from(span)..f64::from(span), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc("weight value")
        .y_desc("count")
        .draw()?;
    let width = 2.0 * f64::from(m) / counts.len() as f64;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = -f64::from(m) + i as f64 * width;
            Rectangle::new(
                [(x0, 0.0), (x0 + width, c as f64)],
                RGBColor(170, 170, 170).filled(),
            )
        }))?
        .label("weights")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 16, y + 5)],
                RGBColor(170, 170, 170).filled(),
            )
        });
    for (i, (mk, levels, sqnr)) in marks.iter().enumerate() {
        let height = top * (0.95 - 0.08 * i as f64);
        let color = mk.color;
        chart
            .draw_series(levels.iter().filter(|l| l.is_finite()).map(move |&l| {
                PathElement::new(
                    vec![(f64::from(l), 0.0), (f64::from(l), height)],
                    color.stroke_width(2),
                )
            }))?
            .label(format!(
                "{} ({} levels, SQNR {sqnr})",
                mk.label,
                levels.len()
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
