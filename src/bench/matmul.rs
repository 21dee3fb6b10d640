//! The dequantizing matmul at LLM shapes: W [N, K] as int4 group-128, int8 per-channel, a
//! 4-bit codebook or dense f32, x [M, K]; GPU against the dense f32 GEMV/GEMM on the same
//! kernel, the CPU twin and the device's copy roofline. Rates count the bytes of W as stored
//! (codes, scales, levels) and 2·M·N·K flops.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::cpu::qmatmul::{self as cq, QWeight as CpuWeight};
use crate::error::{Error, Result};
use crate::format::{Granularity, QuantizedTensor};
use crate::gpu::qmatmul::{self as gq, GpuQWeight, Options, QWeight};
use crate::gpu::{Context, ElemType, GpuTensor};
use crate::quant::uniform::{Calibration, UniformConfig};
use crate::quant::{Backend, codebook, uniform};

/// The LLM shapes (N, K) of the issue: a square projection and an MLP up-projection.
pub const SHAPES: [(usize, usize); 2] = [(4096, 4096), (11008, 4096)];
/// Rows of x: decoding one token, a small batch, a prefill.
pub const BATCHES: [usize; 3] = [1, 16, 512];

/// NMSE allowed between the GPU and the CPU twin before a figure is reported: both sum the
/// same f32 products in different orders (NMSE ~1e-13); f16 products add ~1e-7; one wrong code
/// or group costs far more than 1e-4.
pub const CHECK_NMSE: f64 = 1e-4;

/// How W is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit symmetric, one scale per 128 codes along K.
    Int4Group128,
    /// 8-bit symmetric restricted ([−127, 127]), one scale per output channel.
    Int8Channel,
    /// 4-bit codebook, one table of 16 levels for the tensor.
    Codebook4,
    /// f32, the baseline.
    F32,
}

impl WeightFormat {
    /// The quantized formats of the issue.
    pub const QUANTIZED: [WeightFormat; 3] = [
        WeightFormat::Int4Group128,
        WeightFormat::Int8Channel,
        WeightFormat::Codebook4,
    ];

    /// Short name, as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Int4Group128 => "int4-g128",
            WeightFormat::Int8Channel => "int8-channel",
            WeightFormat::Codebook4 => "codebook4",
            WeightFormat::F32 => "f32",
        }
    }

    /// The format named `s`.
    pub fn parse(s: &str) -> Result<Self> {
        [
            WeightFormat::Int4Group128,
            WeightFormat::Int8Channel,
            WeightFormat::Codebook4,
            WeightFormat::F32,
        ]
        .into_iter()
        .find(|f| f.name() == s)
        .ok_or_else(|| {
            Error::param(
                "bench",
                format!("unknown weight format '{s}' (int4-g128, int8-channel, codebook4, f32)"),
            )
        })
    }
}

/// Normal values with deviation `std`, generated in parallel blocks seeded from `seed`.
pub fn normal(n: usize, std: f32, seed: u64) -> Vec<f32> {
    const BLOCK: usize = 1 << 16;
    let mut v = vec![0f32; n];
    v.par_chunks_mut(BLOCK).enumerate().for_each(|(b, out)| {
        let mut rng = StdRng::seed_from_u64(seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let dist = Normal::new(0.0, std).unwrap_or_else(|_| unreachable!("std is positive"));
        out.iter_mut().for_each(|x| *x = dist.sample(&mut rng));
    });
    v
}

/// A weight in one format, on the host.
pub enum HostWeight {
    /// Packed codes and parameters.
    Quantized(QuantizedTensor),
    /// f32 values.
    Dense(Vec<f32>),
}

impl HostWeight {
    /// `data` [n, k] stored as `format`.
    pub fn new(format: WeightFormat, data: &[f32], n: usize, k: usize) -> Result<Self> {
        let shape = [n, k];
        let affine = |bits, mode, granularity| -> Result<Self> {
            let cfg = UniformConfig {
                scheme: crate::affine::AffineScheme::new(bits, mode)?,
                granularity,
                calibration: Calibration::AbsMax,
            };
            Ok(HostWeight::Quantized(uniform::quantize(
                &Backend::Cpu,
                "w",
                data,
                &shape,
                &cfg,
            )?))
        };
        use crate::affine::AffineMode::{Symmetric, SymmetricRestricted};
        match format {
            WeightFormat::Int4Group128 => affine(4, Symmetric, Granularity::Group(128)),
            WeightFormat::Int8Channel => affine(8, SymmetricRestricted, Granularity::Channel),
            WeightFormat::Codebook4 => {
                // Levels at the 16 quantile midpoints of a sample: a plain non-uniform codebook.
                let mut sample: Vec<f32> = data.iter().step_by(97).copied().collect();
                sample.sort_by(f32::total_cmp);
                let levels = (0..16)
                    .map(|j| sample[(2 * j + 1) * sample.len() / 32])
                    .collect();
                Ok(HostWeight::Quantized(codebook::quantize_nearest(
                    &Backend::Cpu,
                    "w",
                    data,
                    &shape,
                    Granularity::Tensor,
                    4,
                    levels,
                )?))
            }
            WeightFormat::F32 => Ok(HostWeight::Dense(data.to_vec())),
        }
    }

    /// Bytes of W as stored.
    pub fn bytes(&self) -> u64 {
        match self {
            HostWeight::Quantized(qt) => qt.storage_bytes() as u64,
            HostWeight::Dense(d) => d.len() as u64 * 4,
        }
    }

    /// The CPU view.
    pub fn cpu(&self, n: usize, k: usize) -> Result<CpuWeight<'_>> {
        match self {
            HostWeight::Quantized(qt) => CpuWeight::from_quantized(qt),
            HostWeight::Dense(d) => Ok(CpuWeight::dense(d, n, k)),
        }
    }
}

/// A weight uploaded to the device.
pub enum DeviceWeight {
    /// Packed codes and parameters.
    Quantized(GpuQWeight),
    /// f32 values.
    Dense(GpuTensor),
}

impl DeviceWeight {
    /// Uploads `w` [n, k].
    pub fn upload(ctx: &Context, w: &HostWeight, n: usize, k: usize) -> Result<Self> {
        Ok(match w {
            HostWeight::Quantized(qt) => DeviceWeight::Quantized(GpuQWeight::upload(ctx, qt)?),
            HostWeight::Dense(d) => DeviceWeight::Dense(GpuTensor::from_f32(ctx, d, &[n, k])?),
        })
    }

    /// The borrowed form the kernel takes.
    pub fn weight(&self) -> Result<QWeight<'_>> {
        match self {
            DeviceWeight::Quantized(q) => Ok(q.weight()),
            DeviceWeight::Dense(t) => QWeight::dense(t),
        }
    }
}

/// `y = x·Wᵀ` on the device (default options: the kernel and precision the device gets).
pub fn run_gpu(ctx: &Context, x: &GpuTensor, w: &DeviceWeight, y: &GpuTensor) -> Result<()> {
    gq::qmatmul(ctx, x, &w.weight()?, None, y, &Options::default())
}

/// NMSE(reference, got) in f64.
pub fn nmse(reference: &[f32], got: &[f32]) -> f64 {
    let (mut e, mut s) = (0f64, 0f64);
    for (&a, &b) in reference.iter().zip(got) {
        e += (f64::from(a) - f64::from(b)).powi(2);
        s += f64::from(a).powi(2);
    }
    if e == 0.0 {
        0.0
    } else {
        e / s.max(f64::MIN_POSITIVE)
    }
}

/// Fails unless `got` is finite and within [`CHECK_NMSE`] of `reference`.
pub fn check(label: &str, reference: &[f32], got: &[f32]) -> Result<()> {
    let e = nmse(reference, got);
    if got.iter().all(|v| v.is_finite()) && e <= CHECK_NMSE {
        return Ok(());
    }
    Err(Error::param(
        "bench",
        format!("{label}: result differs from the CPU twin (NMSE {e:.2e}, bound {CHECK_NMSE:e})"),
    ))
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// W rows.
    pub n: usize,
    /// W columns.
    pub k: usize,
    /// x rows.
    pub m: usize,
    /// Weight format.
    pub format: WeightFormat,
    /// GEMV or GEMM (the kernel the device picks).
    pub kernel: &'static str,
    /// Bytes of W as stored.
    pub w_bytes: u64,
    /// GPU seconds (best of the runs), if measured.
    pub gpu: Option<f64>,
    /// Dense f32 seconds on the same kernel and device, if measured.
    pub gpu_f32: Option<f64>,
    /// CPU twin seconds, if measured.
    pub cpu: Option<f64>,
}

impl Row {
    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    /// Bytes of W and x a GEMV streams.
    fn stream_bytes(&self) -> f64 {
        self.w_bytes as f64 + (self.m * self.k * 4) as f64
    }
}

/// The table: one row per shape, batch and format, with the copy roofline (bytes read plus
/// written per second) the effective bandwidth is read against.
pub fn table(rows: &[Row], copy_gbps: Option<f64>) -> String {
    let mut out = String::new();
    let ms = |s: Option<f64>| s.map_or("-".into(), |s| format!("{:.2}", s * 1e3));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    out.push_str(&format!(
        "{:<11} {:>4} {:<13} {:<5} {:>8} {:>10} {:>8} {:>8} {:>9} {:>10} {:>7} {:>10} {:>7}\n",
        "N x K",
        "M",
        "format",
        "kern",
        "W MB",
        "GPU ms",
        "W GB/s",
        "GFLOP/s",
        "vs f32",
        "CPU ms",
        "vs CPU",
        "W+x GB/s",
        "% copy"
    ));
    for r in rows {
        let gbps = |bytes: f64| {
            r.gpu
                .map_or("-".into(), |s| format!("{:.2}", bytes / s / 1e9))
        };
        let copy = match (r.gpu, copy_gbps) {
            (Some(s), Some(c)) => format!("{:.0}%", r.stream_bytes() / s / 1e9 / c * 100.0),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<11} {:>4} {:<13} {:<5} {:>8.1} {:>10} {:>8} {:>8} {:>9} {:>10} {:>7} {:>10} {:>7}\n",
            format!("{}x{}", r.n, r.k),
            r.m,
            r.format.name(),
            r.kernel,
            r.w_bytes as f64 / 1e6,
            ms(r.gpu),
            gbps(r.w_bytes as f64),
            r.gpu.map_or("-".into(), |s| format!("{:.1}", r.flops() / s / 1e9)),
            ratio(r.gpu_f32, r.gpu),
            ms(r.cpu),
            ratio(r.cpu, r.gpu),
            gbps(r.stream_bytes()),
            copy,
        ));
    }
    out
}

/// Copy-shader throughput in GB/s (bytes read plus written), best of `iters`, on 64 MiB,
/// after checking the copy.
pub fn copy_roofline(ctx: &Context, iters: usize) -> Result<f64> {
    let words = 16 << 20;
    let data: Vec<u32> = (0..words as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let src = GpuTensor::from_u32(ctx, &data, &[words])?;
    let dst = GpuTensor::zeros(ctx, &[words], ElemType::U32)?;
    crate::gpu::copy::copy(ctx, &src, &dst)?;
    if dst.to_u32(ctx)? != data {
        return Err(Error::param("bench", "the copy shader's result is wrong"));
    }
    let s = super::best_of(iters, || crate::gpu::copy::copy(ctx, &src, &dst))?;
    Ok(2.0 * (words * 4) as f64 / s / 1e9)
}

/// What [`measure`] runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// (N, K) shapes.
    pub shapes: Vec<(usize, usize)>,
    /// Rows of x.
    pub batches: Vec<usize>,
    /// Weight formats (the f32 baseline is always measured beside them).
    pub formats: Vec<WeightFormat>,
    /// Timed runs per figure (after one warm-up).
    pub iters: usize,
    /// Also time the CPU twin.
    pub cpu: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            shapes: SHAPES.to_vec(),
            batches: BATCHES.to_vec(),
            formats: WeightFormat::QUANTIZED.to_vec(),
            iters: 3,
            cpu: true,
        }
    }
}

/// Measures the plan: for every shape and batch, the dense f32 baseline and then each format,
/// each GPU result checked against the CPU twin before the GPU (and optionally the CPU twin)
/// is timed. `progress` hears one line per figure.
pub fn measure(
    ctx: Option<&Context>,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &(n, k) in &plan.shapes {
        let data = normal(n * k, 0.02, (n * 31 + k) as u64);
        let dense = HostWeight::new(WeightFormat::F32, &data, n, k)?;
        let dense_gpu = ctx
            .map(|c| DeviceWeight::upload(c, &dense, n, k))
            .transpose()?;
        for &m in &plan.batches {
            let x = normal(m * k, 1.0, (m * 7 + k) as u64);
            let gx = ctx
                .map(|c| GpuTensor::from_f32(c, &x, &[m, k]))
                .transpose()?;
            let gy = ctx
                .map(|c| GpuTensor::zeros(c, &[m, n], ElemType::F32))
                .transpose()?;
            let kernel = match ctx.map(|c| gq::auto_kernel(c, m)) {
                Some(gq::Kernel::Gemm) => "gemm",
                Some(_) => "gemv",
                None => "-",
            };
            let mut formats = vec![WeightFormat::F32];
            formats.extend(plan.formats.iter().filter(|f| **f != WeightFormat::F32));
            let mut f32_gpu = None;
            for format in formats {
                let w = match format {
                    WeightFormat::F32 => None,
                    _ => Some(HostWeight::new(format, &data, n, k)?),
                };
                let w = w.as_ref().unwrap_or(&dense);
                let cw = w.cpu(n, k)?;
                let mut want = vec![0f32; m * n];
                cq::qmatmul(&x, m, &cw, None, &mut want)?;
                let label = format!("{n}x{k} m={m} {}", format.name());
                let mut row = Row {
                    n,
                    k,
                    m,
                    format,
                    kernel,
                    w_bytes: w.bytes(),
                    gpu: None,
                    gpu_f32: f32_gpu,
                    cpu: None,
                };
                if let (Some(c), Some(gx), Some(gy)) = (ctx, &gx, &gy) {
                    let uploaded;
                    let dw = match (format, &dense_gpu) {
                        (WeightFormat::F32, Some(d)) => d,
                        _ => {
                            uploaded = DeviceWeight::upload(c, w, n, k)?;
                            &uploaded
                        }
                    };
                    gy.fill_bits(c, 0x7FC0_DEAD)?;
                    run_gpu(c, gx, dw, gy)?;
                    check(&label, &want, &gy.to_f32(c)?)?;
                    progress(&format!("{label} gpu"));
                    row.gpu = Some(super::best_of(plan.iters, || run_gpu(c, gx, dw, gy))?);
                    if format == WeightFormat::F32 {
                        f32_gpu = row.gpu;
                        row.gpu_f32 = row.gpu;
                    }
                }
                if plan.cpu {
                    progress(&format!("{label} cpu"));
                    let mut y = vec![0f32; m * n];
                    row.cpu = Some(super::best_of(plan.iters, || {
                        cq::qmatmul(&x, m, &cw, None, &mut y)
                    })?);
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
