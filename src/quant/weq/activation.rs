//! Weighted-entropy log quantization of activations (ALGORITHMS.md §3, "Activations"; Park,
//! Ahn, Yoo, CVPR 2017): ReLU merged, L = 2^b levels, level 0 = 0 and
//! r_j = 2^((o + (j−1)·step)/16) for j = 1..L−1, with (step = 2h, offset o) chosen on a
//! calibration batch to maximise S = −Σ_j r_j·P_j·ln P_j over the non-zero levels.
//!
//! Conventions (the paper and ALGORITHMS.md leave these open; the authors' code agrees):
//! - Codes: x ≤ 0 → code 0 (x̂ = 0). For x > 0, q = min(L−2, round((16·log2 x − o)/step)),
//!   and q < 0 → code 0 (x̂ = 0: values below the first level's lower boundary underflow to
//!   zero); else code q + 1, x̂ = r_{q+1} = 2^((o + q·step)/16). (Clamping q < 0 up to the first
//!   level instead would make S unbounded on ReLU batches: with zeros present, raising o lifts
//!   every value into one ever larger level, and S grows with it.)
//! - Rounding in the log domain is half-up, computed as ⌊(k − o + h)/step⌋ with the exact
//!   k = floor(16·log2 x): level boundaries o + q·step + h are integers, so the histogram of k
//!   predicts every code. Only an x exactly on a boundary (a power of two) differs from
//!   half-to-even.
//! - P_j = n_j / N over the N positive elements of the batch (the zero level is left out of
//!   S and of N).
//! - 16·log2 x is never computed with `log2`: k comes from the exponent and a 16-entry table
//!   of mantissa thresholds, and levels from a table of f32(2^(i/16)) with the exponent added
//!   as bits, so the histogram, the chosen (h, o), S and x̂ are bit-identical on every device
//!   and the CPU.
//! - The histogram has 1024 unit bins topped by the batch's largest k (64 octaves); the offsets
//!   tried are o = k_top − 1006 ..= k_top + 17 (see `cpu::weq_act_sweep::OFFSETS`) for every
//!   h = 1..16, 16,384 pairs. Ties go to the first pair (lowest h, then lowest o). A batch with
//!   S = 0 for every pair (nothing positive, or all positives in one bin) gets h = 1 and the
//!   lowest offset.
//!
//! The backward for training is straight-through with ReLU's mask (dx = dy·\[x > 0\]):
//! `gpu::relu::encode_backward` / `cpu::relu::relu_backward`.

use crate::cpu::weq_act_forward::{self, code, level};
use crate::cpu::weq_act_histogram::{self as cpu_hist, k_top};
use crate::cpu::weq_act_sweep::{self as cpu_sweep, WeqActResult};
use crate::error::{Error, Result};
use crate::gpu::{Context, GpuTensor, minmax, weq_act_forward as gpu_forward};
use crate::gpu::{weq_act_histogram as gpu_hist, weq_act_sweep as gpu_sweep};

use super::super::{Backend, check_finite};

/// A calibrated activation quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeqActivation {
    /// Bits per code, 1..=8: L = 2^bits levels including 0.
    pub bits: u32,
    /// Log-domain step 2h (h = 1..=16), in sixteenths of an octave.
    pub step: u32,
    /// Offset o: the first non-zero level is 2^(o/16).
    pub offset: i32,
}

/// The result of calibration: the quantizer, its S, and the batch's counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeqActCalibration {
    /// The chosen quantizer.
    pub quantizer: WeqActivation,
    /// S of the chosen pair from the fixed-point score (within ~10⁻⁵ of the exact S).
    pub entropy: f64,
    /// The sweep's record (score, counts, k_top), identical on both backends.
    pub record: WeqActResult,
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::param(
            "weq_activation",
            format!("bits {bits} outside 1..=8"),
        ))
    }
}

impl WeqActivation {
    /// A quantizer from its parameters: bits 1..=8, step even in 2..=32.
    pub fn new(bits: u32, step: u32, offset: i32) -> Result<Self> {
        check_bits(bits)?;
        if !(2..=32).contains(&step) || !step.is_multiple_of(2) {
            return Err(Error::param(
                "weq_activation",
                format!("step {step} is not 2h for h in 1..=16"),
            ));
        }
        Ok(Self { bits, step, offset })
    }

    /// Non-zero levels L − 1.
    fn nonzero_levels(&self) -> u32 {
        (1 << self.bits) - 1
    }

    /// The L levels by code: 0, then r_1 < … < r_{L−1} (as f32, exactly what the forward
    /// writes).
    pub fn levels(&self) -> Vec<f32> {
        std::iter::once(0.0)
            .chain((1..=self.nonzero_levels()).map(|c| level(c, self.step, self.offset)))
            .collect()
    }

    /// The code of x (0 for x ≤ 0 and underflow, c ≥ 1 for level r_c); NaN gives 0.
    pub fn code(&self, x: f32) -> u32 {
        if x.is_nan() {
            return 0;
        }
        code(x.to_bits(), self.nonzero_levels(), self.step, self.offset)
    }

    /// The record the forward kernel reads (step and offset; the rest zero).
    pub fn record(&self) -> WeqActResult {
        WeqActResult {
            step: self.step,
            offset: self.offset,
            ..Default::default()
        }
    }

    /// x̂ of host data on `backend`; `name` labels errors.
    pub fn forward(&self, backend: &Backend<'_>, name: &str, x: &[f32]) -> Result<Vec<f32>> {
        check_finite(name, x)?;
        match backend {
            Backend::Cpu => {
                let mut y = vec![0f32; x.len()];
                weq_act_forward::weq_act_forward(x, &mut y, self.bits, self.step, self.offset)?;
                Ok(y)
            }
            Backend::Gpu(ctx) => {
                let xt = GpuTensor::from_f32(ctx, x, &[x.len()])?;
                let yt = GpuTensor::zeros(ctx, &[x.len()], crate::gpu::ElemType::F32)?;
                ctx.run("weq_activation forward", |enc| {
                    self.encode_forward(ctx, enc, &xt, &yt)
                })?;
                yt.to_f32(ctx)
            }
        }
    }

    /// Records `y = x̂` (f32 tensors of one length) into a host engine's command stream.
    pub fn encode_forward(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        y: &GpuTensor,
    ) -> Result<()> {
        let record = GpuTensor::upload(
            ctx,
            &[self.record()],
            &[gpu_sweep::RECORD_WORDS],
            crate::gpu::ElemType::U32,
        )?;
        gpu_forward::encode(ctx, encoder, self.bits, &record, x, y)
    }

    /// S = −Σ_j r_j·P_j·ln P_j of host data under this quantizer, exactly in f64 (r_j as real
    /// powers of 2^(1/16), P_j over the positive elements).
    pub fn entropy(&self, x: &[f32]) -> f64 {
        let mut count = vec![0u64; 1 << self.bits];
        let mut positive = 0u64;
        for &v in x {
            if v > 0.0 && v.is_finite() {
                positive += 1;
                count[self.code(v) as usize] += 1;
            }
        }
        let n = positive.max(1) as f64;
        (1..count.len())
            .filter(|&c| count[c] > 0)
            .map(|c| {
                let r =
                    (f64::from(self.offset + ((c as u32 - 1) * self.step) as i32) / 16.0).exp2();
                let p = count[c] as f64 / n;
                -r * p * p.ln()
            })
            .sum()
    }
}

impl WeqActCalibration {
    fn from_record(bits: u32, record: WeqActResult) -> Result<Self> {
        Ok(Self {
            quantizer: WeqActivation::new(bits, record.step, record.offset)?,
            entropy: record.entropy(),
            record,
        })
    }
}

/// The device buffers of [`encode_calibrate`]: the batch's range, its histogram and the
/// chosen record, which [`encode_forward_calibrated`] reads.
pub struct WeqActBuffers {
    /// One `GroupRange` of the whole batch.
    pub range: GpuTensor,
    /// The histogram words.
    pub hist: GpuTensor,
    /// The chosen [`WeqActResult`].
    pub record: GpuTensor,
}

impl WeqActBuffers {
    /// Zeroed buffers.
    pub fn new(ctx: &Context) -> Result<Self> {
        Ok(Self {
            range: minmax::ranges_tensor(ctx, 1)?,
            hist: gpu_hist::hist_tensor(ctx)?,
            record: gpu_sweep::record_tensor(ctx)?,
        })
    }
}

/// Records calibration on the device: the batch's range (minmax), the histogram of k and the
/// sweep, leaving the chosen step and offset in `bufs.record` (whose `nonfinite` count the
/// caller may check: NaN and ±Inf are left out of the histogram).
pub fn encode_calibrate(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    bits: u32,
    bufs: &WeqActBuffers,
) -> Result<()> {
    check_bits(bits)?;
    if x.numel() == 0 {
        return Err(Error::shape("weq_activation", "an empty calibration batch"));
    }
    minmax::encode(ctx, encoder, x, x.numel(), &bufs.range)?;
    gpu_hist::encode(ctx, encoder, x, &bufs.range, &bufs.hist)?;
    gpu_sweep::encode(ctx, encoder, &bufs.hist, &bufs.range, bits, &bufs.record)
}

/// Records `y = x̂` with the step and offset [`encode_calibrate`] left in `bufs`, without a
/// round trip to the host.
pub fn encode_forward_calibrated(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    bits: u32,
    bufs: &WeqActBuffers,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    gpu_forward::encode(ctx, encoder, bits, &bufs.record, x, y)
}

/// The weighted entropy of any ReLU quantizer's output, to compare quantizers by the same
/// measure: S = −Σ_v v·P_v·ln P_v over the distinct positive outputs v, P_v the fraction of the
/// positive inputs that became v (for a [`WeqActivation`] this is [`WeqActivation::entropy`]
/// up to its levels' f32 rounding).
pub fn output_entropy(x: &[f32], xhat: &[f32]) -> f64 {
    let mut out: Vec<u32> = x
        .iter()
        .zip(xhat)
        .filter(|(v, y)| **v > 0.0 && v.is_finite() && **y > 0.0)
        .map(|(_, y)| y.to_bits())
        .collect();
    let positive = x
        .iter()
        .filter(|v| **v > 0.0 && v.is_finite())
        .count()
        .max(1) as f64;
    out.sort_unstable();
    out.chunk_by(|a, b| a == b)
        .map(|run| {
            let p = run.len() as f64 / positive;
            -f64::from(f32::from_bits(run[0])) * p * p.ln()
        })
        .sum()
}

/// Calibrates on a host batch on `backend`: the same record, bit for bit, on both.
pub fn calibrate(
    backend: &Backend<'_>,
    name: &str,
    x: &[f32],
    bits: u32,
) -> Result<WeqActCalibration> {
    check_bits(bits)?;
    check_finite(name, x)?;
    if x.is_empty() || x.len() as u64 >= u64::from(u32::MAX) {
        return Err(Error::shape(
            "weq_activation",
            format!("a calibration batch of {} elements", x.len()),
        ));
    }
    let record = match backend {
        Backend::Cpu => {
            let range = crate::affine::GroupRange {
                lo: x.iter().copied().fold(f32::INFINITY, f32::min),
                hi: x.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                nonfinite: 0,
                _pad: 0,
            };
            let hist = cpu_hist::weq_act_histogram(x, &range)?;
            cpu_sweep::weq_act_sweep(&hist, k_top(&range), bits)?
        }
        Backend::Gpu(ctx) => {
            let xt = GpuTensor::from_f32(ctx, x, &[x.len()])?;
            let bufs = WeqActBuffers::new(ctx)?;
            ctx.run("weq_activation calibrate", |enc| {
                encode_calibrate(ctx, enc, &xt, bits, &bufs)
            })?;
            let r: Vec<WeqActResult> = bufs.record.download(ctx)?;
            r.first()
                .copied()
                .ok_or_else(|| Error::shape("weq_activation", "empty record"))?
        }
    };
    WeqActCalibration::from_record(bits, record)
}
