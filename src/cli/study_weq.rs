//! `wgquant study weq`: weighted entropy S, MSE and SQNR of WEQ against uniform (absmax and
//! MSE-clip) and power-of-two log quantization at 2–6 bits, on Gaussian and Laplace tensors
//! and, with `--checkpoint`, on that checkpoint's 2-D Linear weights (per tensor); and of the
//! WEQ activation quantizer against uniform unsigned quantizers on a ReLU batch.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::checkpoint::Checkpoint;
use wgquant::checkpoint::report::ErrorStats;
use wgquant::format::{Granularity, QuantizedTensor};
use wgquant::quant::uniform::{Calibration, UniformConfig};
use wgquant::quant::weq::{self, WeqConfig, activation};
use wgquant::quant::{self, Backend};

use super::{CliError, DeviceChoice, backend, open_device};
use crate::outln;

#[derive(Debug, clap::Args)]
pub struct WeqStudyArgs {
    /// Also study this checkpoint's 2-D weights (embeddings excluded), pooled per method.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Bit widths.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5,6")]
    bits: Vec<u32>,
    /// Elements of the synthetic tensors.
    #[arg(long, default_value_t = 1 << 16)]
    numel: usize,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

const METHODS: [&str; 4] = ["weq", "uniform absmax", "uniform mse", "pow2 log"];

/// One method on one tensor at `bits`: the quantized tensor.
pub(super) fn quantize_with(
    b: &Backend<'_>,
    method: &str,
    x: &[f32],
    bits: u32,
) -> Result<QuantizedTensor, CliError> {
    let shape = [x.len()];
    let uniform = |calibration| -> Result<QuantizedTensor, CliError> {
        Ok(quant::uniform::quantize(
            b,
            "x",
            x,
            &shape,
            &UniformConfig {
                scheme: AffineScheme::new(bits, AffineMode::Symmetric)?,
                granularity: Granularity::Tensor,
                calibration,
            },
        )?)
    };
    Ok(match method {
        "weq" => weq::quantize(
            b,
            "x",
            x,
            &shape,
            &WeqConfig {
                bits,
                granularity: Granularity::Tensor,
            },
        )?,
        "uniform absmax" => uniform(Calibration::AbsMax)?,
        "uniform mse" => uniform(Calibration::Mse)?,
        _ => weq::pow2_log(b, "x", x, &shape, bits)?,
    })
}

/// S, and the error of one tensor under one method.
fn measure(
    b: &Backend<'_>,
    method: &str,
    x: &[f32],
    bits: u32,
) -> Result<(f64, ErrorStats), CliError> {
    let qt = quantize_with(b, method, x, bits)?;
    let xhat = quant::dequantize(b, &qt)?;
    Ok((weq::code_entropy(&qt, x), ErrorStats::measure(x, &xhat)))
}

fn row(source: &str, bits: u32, method: &str, s: f64, err: &ErrorStats, n: f64) {
    let sqnr = err.sqnr_db().map_or("exact".into(), |d| format!("{d:.2}"));
    outln!(
        "{source:<28} {bits:>4} {method:<16} {s:>12.5e} {:>12.5e} {sqnr:>9}",
        err.noise / n
    );
}

/// The activation quantizer on a half-normal (ReLU) batch against uniform unsigned
/// quantizers ([0, max] and MSE-clip): S over the positive outputs (`output_entropy`), MSE
/// and SQNR.
fn activations(b: &Backend<'_>, bits: &[u32], numel: usize) -> Result<(), CliError> {
    let mut r = rand::rngs::StdRng::seed_from_u64(2018);
    let x: Vec<f32> = (0..numel)
        .map(|_| StandardNormal.sample(&mut r))
        .map(|z: f32| z.max(0.0))
        .collect();
    outln!(
        "activations: ReLU of N(0, 1), {numel} values; weq-act STEP/O = levels 2^((O + j·STEP)/16) \
         with (STEP, O) maximising S (over positive outputs); uniform unsigned per tensor"
    );
    let n = x.len() as f64;
    for &bits in bits.iter().filter(|b| (1..=8).contains(*b)) {
        let c = activation::calibrate(b, "x", &x, bits)?;
        let y = c.quantizer.forward(b, "x", &x)?;
        let label = format!("weq-act {}/{}", c.quantizer.step, c.quantizer.offset);
        let err = ErrorStats::measure(&x, &y);
        row(
            "relu(normal)",
            bits,
            &label,
            activation::output_entropy(&x, &y),
            &err,
            n,
        );
        for (name, calibration) in [
            ("uniform [0,max]", Calibration::MinMax),
            ("uniform mse", Calibration::Mse),
        ] {
            let cfg = UniformConfig {
                scheme: AffineScheme::new(bits, AffineMode::Asymmetric)?,
                granularity: Granularity::Tensor,
                calibration,
            };
            let y = quant::uniform::fake_quantize(b, "x", &x, &[x.len()], &cfg)?;
            let err = ErrorStats::measure(&x, &y);
            row(
                "relu(normal)",
                bits,
                name,
                activation::output_entropy(&x, &y),
                &err,
                n,
            );
        }
    }
    Ok(())
}

pub fn run(a: WeqStudyArgs) -> Result<(), CliError> {
    let ctx = open_device(a.device)?;
    let b = backend(&ctx);
    outln!(
        "device: {}",
        wgquant::checkpoint::quantize::device_label(&b)
    );
    outln!(
        "S: weighted entropy over the codes (importance w²); MSE and SQNR of the dequantized tensor; per-tensor codebooks and scales"
    );
    outln!(
        "{:<28} {:>4} {:<16} {:>12} {:>12} {:>9}",
        "tensor",
        "bits",
        "method",
        "S",
        "MSE",
        "SQNR dB"
    );
    let mut r = rand::rngs::StdRng::seed_from_u64(2017);
    let gauss: Vec<f32> = (0..a.numel)
        .map(|_| StandardNormal.sample(&mut r))
        .collect();
    let lap: Vec<f32> = (0..a.numel)
        .map(|_| {
            let (e1, e2): (f32, f32) = (Exp1.sample(&mut r), Exp1.sample(&mut r));
            e1 - e2
        })
        .collect();
    for (name, x) in [("gaussian", &gauss), ("laplace", &lap)] {
        for &bits in &a.bits {
            for m in METHODS {
                let (s, err) = measure(&b, m, x, bits)?;
                row(name, bits, m, s, &err, x.len() as f64);
            }
        }
    }
    activations(&b, &a.bits, a.numel)?;
    if let Some(path) = &a.checkpoint {
        let ckpt = Checkpoint::open(path)?;
        let tensors = ckpt.tensors()?;
        let weights: Vec<(String, Vec<f32>)> = tensors
            .iter()
            .filter(|t| t.is_float() && t.shape.len() == 2 && !t.name.contains("embeddings"))
            .map(|t| Ok((t.name.clone(), wgquant::checkpoint::file::to_f32(&ckpt, t)?)))
            .collect::<Result<_, wgquant::Error>>()?;
        let total: usize = weights.iter().map(|(_, v)| v.len()).sum();
        let label = format!("{} Linear weights", weights.len());
        outln!(
            "{}: {label}, {total} values, pooled (S averaged over tensors)",
            path.display()
        );
        for &bits in &a.bits {
            let mut wins = 0;
            let mut sqnr_by_method = Vec::new();
            for m in METHODS {
                let mut err = ErrorStats::default();
                let mut s_sum = 0.0;
                let mut per_tensor = Vec::new();
                for (_, x) in &weights {
                    let (s, e) = measure(&b, m, x, bits)?;
                    s_sum += s;
                    per_tensor.push(e.sqnr_db().unwrap_or(f64::INFINITY));
                    err.add(&e);
                }
                row(
                    &label,
                    bits,
                    m,
                    s_sum / weights.len().max(1) as f64,
                    &err,
                    total as f64,
                );
                sqnr_by_method.push(per_tensor);
            }
            for (w, u) in sqnr_by_method[0].iter().zip(&sqnr_by_method[1]) {
                wins += usize::from(w > u);
            }
            outln!(
                "{label:<28} {bits:>4} weq beats uniform absmax on {wins} of {} tensors",
                weights.len()
            );
        }
    }
    Ok(())
}
