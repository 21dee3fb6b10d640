//! Weighted-entropy quantization of weights, WEQ (ALGORITHMS.md §3; Park, Ahn, Yoo, CVPR
//! 2017): per group (tensor, channel or group of G), 2^(b−1) magnitude clusters chosen to
//! maximise the weighted entropy S with importance w², levels ±sqrt(mean w²) of each cluster
//! mirrored by sign, and codes from the cluster boundaries.
//!
//! Both backends build a fine deterministic histogram of |w| (`weq_histogram`), sweep the
//! boundaries over its bins with every candidate evaluated (`weq_sweep`), and assign codes by
//! the boundaries (`codebook_assign`); the GPU records it in one command stream ([`encode`]),
//! or submits it in rounds that stop sweeping once every group has converged ([`run`], what
//! [`solve`] uses), the CPU runs the twins. The scores use `ln`, whose last bits differ
//! between devices, so a near-tie between candidates may be settled apart: the S of the two
//! partitions agree within the tests' bound, not always their bits. The exact sort-based
//! algorithm (`cpu::weq_exact`, [`solve_exact`]) is the reference the tests measure S by.
//!
//! Activations: the log-domain quantizer of [`activation`].

pub mod activation;

pub use activation::{WeqActCalibration, WeqActivation};

use std::ops::Range;

use crate::cpu::{self, weq_sweep::WeqInfo};
use crate::error::{Error, Result};
use crate::format::{Encoding, Granularity, QuantizedTensor};
use crate::gpu::weq_sweep::{self, SweepOutputs};
use crate::gpu::{self, Context, ElemType, GpuTensor, minmax, weq_histogram};

use super::codebook::{self, segment};
use super::{Backend, check_finite};

/// Cap on boundary sweeps; both forms normally stop long before (when a sweep moves nothing).
pub const MAX_SWEEPS: u32 = 1000;

/// Histogram words alive at once on the GPU (32 MiB): per-channel quantization of a matrix
/// with many rows runs in batches of rows.
const BATCH_WORDS: u64 = 1 << 23;

/// A WEQ recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeqConfig {
    /// Bits per code, 1..=8: 2^(bits−1) magnitude clusters, 2^bits signed levels.
    pub bits: u32,
    /// Which elements share a codebook.
    pub granularity: Granularity,
}

impl WeqConfig {
    /// Checks the recipe against a shape and returns the group length.
    pub fn group_len(&self, shape: &[usize]) -> Result<usize> {
        if !(1..=8).contains(&self.bits) {
            return Err(Error::param(
                "weq",
                format!("bits {} outside 1..=8", self.bits),
            ));
        }
        let numel: usize = shape.iter().product();
        if numel as u64 >= u64::from(u32::MAX) {
            return Err(Error::param(
                "weq",
                format!("{numel} elements exceed 2^32 − 1"),
            ));
        }
        self.granularity.group_len(shape)
    }

    /// `weq4 channel`.
    pub fn label(&self) -> String {
        format!("weq{} {}", self.bits, self.granularity.label())
    }
}

/// A WEQ result: the codebook tensor (levels ±r_n, thresholds ±b_n) and, per group, the
/// weighted entropy S and the sweeps it took.
#[derive(Clone, Debug)]
pub struct WeqOutput {
    /// Codes, levels and thresholds.
    pub tensor: QuantizedTensor,
    /// S per group (units of w²): exact on the CPU, from the histogram on the GPU.
    pub entropy: Vec<f64>,
    /// Sweeps per group.
    pub sweeps: Vec<u32>,
}

/// The device tensors [`encode`] writes.
pub struct WeqBuffers {
    /// Packed codes (U32).
    pub codes: GpuTensor,
    /// `2^bits` levels per group (F32).
    pub levels: GpuTensor,
    /// `2^bits` thresholds per group (F32).
    pub thresholds: GpuTensor,
    /// One [`WeqInfo`] per group (U32, 4 words each).
    pub info: GpuTensor,
}

impl WeqBuffers {
    /// Zeroed outputs for `numel` elements in groups of `group_len` at `bits`.
    pub fn new(ctx: &Context, numel: usize, group_len: usize, bits: u32) -> Result<Self> {
        let groups = numel / group_len.max(1);
        let words = segment(numel, group_len, bits).packed_words();
        Ok(Self {
            codes: GpuTensor::zeros(ctx, &[words], ElemType::U32)?,
            levels: GpuTensor::zeros(ctx, &[groups << bits], ElemType::F32)?,
            thresholds: GpuTensor::zeros(ctx, &[groups << bits], ElemType::F32)?,
            info: GpuTensor::zeros(ctx, &[groups * 4], ElemType::U32)?,
        })
    }
}

/// The GPU form's working set: per-group ranges, the bins per group, the batch size and the
/// histogram and prefix buffers every batch of groups reuses.
struct Prepared {
    ranges: GpuTensor,
    bins: u32,
    groups: u64,
    per_batch: u64,
    hist: GpuTensor,
    prefix: GpuTensor,
}

impl Prepared {
    fn new(ctx: &Context, n: usize, group_len: usize) -> Result<Self> {
        if group_len == 0 || !n.is_multiple_of(group_len) || n == 0 {
            return Err(Error::param(
                "weq",
                format!("groups of {group_len} in {n} elements"),
            ));
        }
        let groups = (n / group_len) as u64;
        let bins = weq_histogram::bins_for(ctx, group_len);
        let per_batch = weq_histogram::groups_per_batch(ctx, bins, BATCH_WORDS).min(groups);
        Ok(Self {
            ranges: minmax::ranges_tensor(ctx, groups as usize)?,
            bins,
            groups,
            per_batch,
            hist: weq_histogram::hist_tensor(ctx, per_batch, bins)?,
            prefix: weq_histogram::prefix_tensor(ctx, per_batch, bins)?,
        })
    }

    /// The batches of groups, in order.
    fn batches(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        (0..self.groups)
            .step_by(self.per_batch as usize)
            .map(|g0| g0..(g0 + self.per_batch).min(self.groups))
    }

    /// Records the histogram and prefix sums of one batch.
    fn encode_histogram(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        group_len: usize,
        batch: Range<u64>,
    ) -> Result<()> {
        weq_histogram::encode(
            ctx,
            encoder,
            input,
            group_len,
            &self.ranges,
            batch,
            self.bins,
            &self.hist,
            &self.prefix,
        )
    }
}

fn sweep_outputs(out: &WeqBuffers) -> SweepOutputs<'_> {
    SweepOutputs {
        levels: &out.levels,
        thresholds: &out.thresholds,
        info: &out.info,
    }
}

/// Records the GPU form for `input` (f32, groups of `group_len`) into `out`: ranges (minmax),
/// then per batch of groups the histogram, prefix sums and every sweep pass up to
/// [`MAX_SWEEPS`], then the codes, all in one command stream.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    bits: u32,
    out: &WeqBuffers,
) -> Result<()> {
    let n = input.numel();
    let p = Prepared::new(ctx, n, group_len)?;
    minmax::encode(ctx, encoder, input, group_len, &p.ranges)?;
    let outputs = sweep_outputs(out);
    for batch in p.batches() {
        p.encode_histogram(ctx, encoder, input, group_len, batch.clone())?;
        let sweep = weq_sweep::plan(
            ctx, &p.ranges, &p.prefix, batch, p.bins, bits, MAX_SWEEPS, &outputs,
        )?;
        sweep.encode_passes(ctx, encoder, 0..sweep.passes())?;
        sweep.encode_finish(ctx, encoder)?;
    }
    let seg = segment(n, group_len, bits);
    gpu::codebook_assign::encode(ctx, encoder, input, &out.codes, &out.thresholds, &[seg])
}

/// [`encode`]'s work submitted and waited for, each batch's sweeps in rounds that stop once
/// its groups have converged ([`weq_sweep::SweepPlan::run`]).
pub fn run(
    ctx: &Context,
    input: &GpuTensor,
    group_len: usize,
    bits: u32,
    out: &WeqBuffers,
) -> Result<()> {
    let n = input.numel();
    let p = Prepared::new(ctx, n, group_len)?;
    ctx.run("weq ranges", |enc| {
        minmax::encode(ctx, enc, input, group_len, &p.ranges)
    })?;
    let outputs = sweep_outputs(out);
    for batch in p.batches() {
        weq_sweep::plan(
            ctx,
            &p.ranges,
            &p.prefix,
            batch.clone(),
            p.bins,
            bits,
            MAX_SWEEPS,
            &outputs,
        )?
        .run(ctx, |enc| {
            p.encode_histogram(ctx, enc, input, group_len, batch)
        })?;
    }
    let seg = segment(n, group_len, bits);
    ctx.run("weq codes", |enc| {
        gpu::codebook_assign::encode(ctx, enc, input, &out.codes, &out.thresholds, &[seg])
    })
}

/// Histogram words the CPU holds at once: groups are swept in batches of this many words.
const CPU_BATCH_WORDS: usize = 1 << 22;

/// The GPU's algorithm on the CPU twins, group batch by group batch: ranges, fine histogram,
/// prefix sums, boundary sweeps. Each group is independent, so batching changes nothing.
fn histogram_sweep_cpu(
    data: &[f32],
    group_len: usize,
    bits: u32,
) -> Result<(Vec<f32>, Vec<f32>, Vec<WeqInfo>)> {
    let ranges = cpu::minmax::group_ranges(data, group_len)?;
    let bins = crate::kernel::weq::bins_for_group(group_len);
    let per_batch = (CPU_BATCH_WORDS / (bins as usize * crate::kernel::weq::BIN_WORDS)).max(1);
    let (mut levels, mut thresholds, mut info) = (Vec::new(), Vec::new(), Vec::new());
    for (batch, r) in data
        .chunks(per_batch * group_len)
        .zip(ranges.chunks(per_batch))
    {
        let hist = cpu::weq_histogram::weq_histogram(batch, group_len, r, bins)?;
        let prefix = cpu::weq_histogram::weq_scan(&hist, bins);
        let (l, t, i) = cpu::weq_sweep::weq_sweep(&prefix, r, bins, bits, MAX_SWEEPS)?;
        levels.extend(l);
        thresholds.extend(t);
        info.extend(i);
    }
    Ok((levels, thresholds, info))
}

/// The exact sort-based algorithm (`cpu::weq_exact`) on the CPU: the reference the
/// histogram sweep of [`solve`] is measured against, with S in f64.
pub fn solve_exact(
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &WeqConfig,
) -> Result<WeqOutput> {
    check_finite(name, data)?;
    let group_len = cfg.group_len(shape)?;
    let (levels, thresholds, info) =
        cpu::weq_exact::weq_exact(data, group_len, cfg.bits, MAX_SWEEPS)?;
    let codes = codebook::assign(
        &Backend::Cpu,
        data,
        shape,
        cfg.granularity,
        cfg.bits,
        &thresholds,
    )?;
    finish(
        data,
        shape,
        cfg,
        group_len,
        codes,
        levels,
        thresholds,
        info.iter().map(|i| i.entropy).collect(),
        info.iter().map(|i| i.sweeps).collect(),
    )
}

/// Quantizes host data with WEQ on `backend` (the histogram sweep on either device, the same
/// bits on both); `name` labels errors.
pub fn solve(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &WeqConfig,
) -> Result<WeqOutput> {
    check_finite(name, data)?;
    let group_len = cfg.group_len(shape)?;
    if data.len() != shape.iter().product::<usize>() || data.is_empty() {
        return Err(Error::shape(
            "weq",
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    let (codes, levels, thresholds, entropy, sweeps) = match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, &[data.len()])?;
            let out = WeqBuffers::new(ctx, data.len(), group_len, cfg.bits)?;
            run(ctx, &input, group_len, cfg.bits, &out)?;
            let info: Vec<WeqInfo> = out.info.download(ctx)?;
            (
                out.codes.to_u32(ctx)?,
                out.levels.to_f32(ctx)?,
                out.thresholds.to_f32(ctx)?,
                info.iter().map(|i| f64::from(i.entropy)).collect(),
                info.iter().map(|i| i.sweeps).collect(),
            )
        }
        Backend::Cpu => {
            let (levels, thresholds, info) = histogram_sweep_cpu(data, group_len, cfg.bits)?;
            let codes =
                codebook::assign(backend, data, shape, cfg.granularity, cfg.bits, &thresholds)?;
            (
                codes,
                levels,
                thresholds,
                info.iter().map(|i| f64::from(i.entropy)).collect(),
                info.iter().map(|i| i.sweeps).collect(),
            )
        }
    };
    finish(
        data, shape, cfg, group_len, codes, levels, thresholds, entropy, sweeps,
    )
}

/// The WEQ output from a solve's tables: all-zero groups decode to 0, the tensor checked.
#[allow(clippy::too_many_arguments)]
fn finish(
    data: &[f32],
    shape: &[usize],
    cfg: &WeqConfig,
    group_len: usize,
    codes: Vec<u32>,
    mut levels: Vec<f32>,
    thresholds: Vec<f32>,
    entropy: Vec<f64>,
    sweeps: Vec<u32>,
) -> Result<WeqOutput> {
    zero_empty_groups(data, group_len, cfg.bits, &mut levels);
    let tensor = QuantizedTensor {
        shape: shape.to_vec(),
        bits: cfg.bits,
        granularity: cfg.granularity,
        codes,
        encoding: Encoding::Codebook {
            levels,
            thresholds: Some(thresholds),
        },
        mask: None,
    };
    tensor.validate()?;
    Ok(WeqOutput {
        tensor,
        entropy,
        sweeps,
    })
}

/// Sets every level of an all-zero group to 0: the sweep's levels are forced positive and
/// strictly increasing (±f32::MIN_POSITIVE and up), which would decode its zeros as ±1e-38.
fn zero_empty_groups(data: &[f32], group_len: usize, bits: u32, levels: &mut [f32]) {
    let per = 1usize << bits;
    for (g, chunk) in data.chunks(group_len.max(1)).enumerate() {
        if chunk.iter().all(|&v| v == 0.0)
            && let Some(l) = levels.get_mut(g * per..(g + 1) * per)
        {
            l.fill(0.0);
        }
    }
}

/// [`solve`], keeping only the tensor.
pub fn quantize(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &WeqConfig,
) -> Result<QuantizedTensor> {
    solve(backend, name, data, shape, cfg).map(|o| o.tensor)
}

/// Power-of-two log quantization (Miyashita et al. 2016), the study's baseline: per tensor,
/// levels ±2^(e−i) for i = 0..2^(b−1) with e = round(log2 max|w|), each magnitude rounded to
/// the nearest level in the log domain (boundaries at the geometric midpoints).
pub fn pow2_log(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    bits: u32,
) -> Result<QuantizedTensor> {
    check_finite(name, data)?;
    let cfg = WeqConfig {
        bits,
        granularity: Granularity::Tensor,
    };
    cfg.group_len(shape)?;
    let h = 1usize << (bits - 1);
    let max = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let top = if max > 0.0 {
        max.log2().round() as i32
    } else {
        0
    };
    let r: Vec<f32> = (0..h)
        .map(|i| 2f64.powi(top - (h - 1 - i) as i32) as f32)
        .collect();
    let b: Vec<f32> = (0..h)
        .map(|n| {
            if n == 0 {
                0.0
            } else {
                (f64::from(r[n - 1]) * f64::from(r[n])).sqrt() as f32
            }
        })
        .collect();
    let (levels, thresholds) = cpu::weq_sweep::assemble(&r, &b, h);
    let codes = codebook::assign(backend, data, shape, Granularity::Tensor, bits, &thresholds)?;
    let qt = QuantizedTensor {
        shape: shape.to_vec(),
        bits,
        granularity: Granularity::Tensor,
        codes,
        encoding: Encoding::Codebook {
            levels,
            thresholds: Some(thresholds),
        },
        mask: None,
    };
    qt.validate()?;
    Ok(qt)
}

/// The weighted entropy of any quantizer's partition, over its signed codes:
/// S = −Σ_c (E_c/N)·ln(n_c/N), E_c the Σw² of the values given code c (importance w², as in
/// WEQ; for a sign-symmetric WEQ partition this is ALGORITHMS.md §3's S when each magnitude
/// cluster splits evenly by sign).
pub fn code_entropy(qt: &QuantizedTensor, data: &[f32]) -> f64 {
    let codes = crate::format::pack::unpack(&qt.codes, data.len(), qt.bits);
    let mut count = vec![0u64; 1 << qt.bits];
    let mut energy = vec![0f64; 1 << qt.bits];
    for (&c, &v) in codes.iter().zip(data) {
        count[c as usize] += 1;
        energy[c as usize] += f64::from(v) * f64::from(v);
    }
    let n = data.len().max(1) as f64;
    count
        .iter()
        .zip(&energy)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &e)| -(e / n) * (c as f64 / n).ln())
        .sum()
}
