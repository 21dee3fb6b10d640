//! Uniform affine quantization (ALGORITHMS.md §1): calibration (min/max, absmax, percentile,
//! MSE-optimal clip, running EMA), then fake quantization or packed codes, on either backend.

use crate::affine::{AffineScheme, AffineSegment, GroupRange};
use crate::cpu;
use crate::error::{Error, Result};
use crate::format::{Encoding, Granularity, QuantizedTensor, pack};
use crate::gpu::{self, Context, ElemType, GpuTensor};

use super::{Backend, check_finite};

/// How a group's range is chosen.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// The group's minimum and maximum (for symmetric schemes this is absmax).
    MinMax,
    /// `±max|x|`; symmetric schemes only.
    AbsMax,
    /// Clip at the P-th percentile (and the (100−P)-th for asymmetric schemes), from a
    /// histogram of the group.
    Percentile(f32),
    /// The clip ratio of a grid of 100 minimising the squared error.
    Mse,
}

impl Calibration {
    /// The CLI spelling.
    pub fn label(&self) -> String {
        match self {
            Calibration::MinMax => "minmax".into(),
            Calibration::AbsMax => "absmax".into(),
            Calibration::Percentile(p) => format!("percentile:{p}"),
            Calibration::Mse => "mse".into(),
        }
    }
}

impl std::str::FromStr for Calibration {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "minmax" => Ok(Calibration::MinMax),
            "absmax" => Ok(Calibration::AbsMax),
            "mse" => Ok(Calibration::Mse),
            _ => {
                let p = s
                    .strip_prefix("percentile:")
                    .ok_or_else(|| format!("'{s}' is not minmax, absmax, percentile:P or mse"))?;
                let p: f32 = p
                    .parse()
                    .map_err(|_| format!("percentile '{p}' is not a number"))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("percentile {p} is outside (0, 100]"));
                }
                Ok(Calibration::Percentile(p))
            }
        }
    }
}

/// A complete uniform quantization recipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformConfig {
    /// Bits and range placement.
    pub scheme: AffineScheme,
    /// Which elements share a (scale, zero point).
    pub granularity: Granularity,
    /// How ranges are chosen.
    pub calibration: Calibration,
}

impl UniformConfig {
    /// Checks the combination and returns the group length for `shape`.
    pub fn group_len(&self, shape: &[usize]) -> Result<usize> {
        if self.calibration == Calibration::AbsMax && !self.scheme.is_symmetric() {
            return Err(Error::param(
                "calibration",
                "absmax calibration needs a symmetric scheme (use minmax for asymmetric)",
            ));
        }
        if let Calibration::Percentile(p) = self.calibration
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(Error::param(
                "calibration",
                format!("percentile {p} outside (0, 100]"),
            ));
        }
        let numel: usize = shape.iter().product();
        if numel as u64 >= u64::from(u32::MAX) {
            return Err(Error::param(
                "uniform",
                format!("{numel} elements exceed 2^32 − 1"),
            ));
        }
        self.granularity.group_len(shape)
    }

    /// Whether a group's parameters depend on its minimum and maximum only (minmax, absmax),
    /// so its range can be gathered over pieces of the group; percentile and MSE need every
    /// value of the group at once.
    pub fn range_is_minmax(&self) -> bool {
        matches!(self.calibration, Calibration::MinMax | Calibration::AbsMax)
    }

    /// The segment of a piece of `len` elements starting at element `first` of a tensor
    /// grouped by `group_len`, its parameters indexed from its first group.
    pub fn piece_segment(&self, first: usize, len: usize, group_len: usize) -> AffineSegment {
        AffineSegment {
            group_phase: (first % group_len) as u32,
            ..self.segment(len, group_len)
        }
    }

    fn segment(&self, numel: usize, group_len: usize) -> AffineSegment {
        AffineSegment {
            src: 0,
            dst: 0,
            len: numel as u32,
            group_len: group_len as u32,
            group_phase: 0,
            param: 0,
            qmin: self.scheme.qmin(),
            qmax: self.scheme.qmax(),
            bits: self.scheme.bits,
        }
    }
}

/// Calibrated ranges of every group, on the host.
pub fn calibrate_cpu(
    data: &[f32],
    group_len: usize,
    cfg: &UniformConfig,
) -> Result<Vec<GroupRange>> {
    let ranges = cpu::minmax::group_ranges(data, group_len)?;
    Ok(match cfg.calibration {
        Calibration::MinMax | Calibration::AbsMax => ranges,
        Calibration::Percentile(p) => {
            let bins = gpu::histogram::bins_for(group_len);
            let sym = cfg.scheme.is_symmetric();
            let hist = cpu::histogram::group_histograms(data, group_len, &ranges, bins, sym)?;
            let quantiles = gpu::histogram::quantiles(p);
            cpu::histogram::percentile_select(&hist, &ranges, bins, sym, quantiles)
        }
        Calibration::Mse => {
            let k = gpu::clip_search::DEFAULT_CANDIDATES;
            cpu::clip_search::clip_search(data, group_len, &ranges, &cfg.scheme, k)?
        }
    })
}

/// Device-resident quantization parameters of a tensor.
#[derive(Clone, Debug)]
pub struct GpuParams {
    /// Raw per-group ranges with non-finite counts (before clipping).
    pub ranges: GpuTensor,
    /// Per-group scales (f32).
    pub scale: GpuTensor,
    /// Per-group zero points (i32).
    pub zero: GpuTensor,
}

/// Records calibration of `input` (f32) on the device: ranges, clipping, then scales and zero
/// points, all left on the device.
pub fn encode_params(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    cfg: &UniformConfig,
) -> Result<GpuParams> {
    let group_len = cfg.group_len(input.shape())?;
    let groups = input.numel() / group_len;
    let ranges = gpu::minmax::ranges_tensor(ctx, groups)?;
    gpu::minmax::encode(ctx, encoder, input, group_len, &ranges)?;
    let clipped = match cfg.calibration {
        Calibration::MinMax | Calibration::AbsMax => ranges.clone(),
        Calibration::Percentile(p) => {
            let out = gpu::minmax::ranges_tensor(ctx, groups)?;
            let sym = cfg.scheme.is_symmetric();
            gpu::histogram::encode(ctx, encoder, input, group_len, &ranges, p, sym, &out)?;
            out
        }
        Calibration::Mse => {
            let out = gpu::minmax::ranges_tensor(ctx, groups)?;
            let k = gpu::clip_search::DEFAULT_CANDIDATES;
            gpu::clip_search::encode(
                ctx,
                encoder,
                input,
                group_len,
                &ranges,
                &cfg.scheme,
                k,
                &out,
            )?;
            out
        }
    };
    let scale = GpuTensor::zeros(ctx, &[groups], ElemType::F32)?;
    let zero = GpuTensor::zeros(ctx, &[groups], ElemType::I32)?;
    gpu::affine_params::encode(ctx, encoder, &cfg.scheme, &clipped, &scale, &zero)?;
    Ok(GpuParams {
        ranges,
        scale,
        zero,
    })
}

/// Records calibration and quantization of `input` to packed codes on the device.
pub fn encode_quantize(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    cfg: &UniformConfig,
) -> Result<(GpuTensor, GpuParams)> {
    let params = encode_params(ctx, encoder, input, cfg)?;
    let group_len = cfg.group_len(input.shape())?;
    let seg = cfg.segment(input.numel(), group_len);
    let codes = GpuTensor::zeros(ctx, &[seg.packed_words()], ElemType::U32)?;
    gpu::quantize_pack::encode(
        ctx,
        encoder,
        input,
        &codes,
        &params.scale,
        &params.zero,
        &[seg],
    )?;
    Ok((codes, params))
}

/// Records calibration and fake quantization of `input` into `output` (may be the same
/// tensor) on the device.
pub fn encode_fake_quantize(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    output: &GpuTensor,
    cfg: &UniformConfig,
) -> Result<GpuParams> {
    let params = encode_params(ctx, encoder, input, cfg)?;
    let group_len = cfg.group_len(input.shape())?;
    let seg = cfg.segment(input.numel(), group_len);
    gpu::fake_quant::encode(
        ctx,
        encoder,
        input,
        output,
        &params.scale,
        &params.zero,
        &[seg],
    )?;
    Ok(params)
}

/// Quantizes host data to a [`QuantizedTensor`]. `name` labels errors (a NaN names it).
pub fn quantize(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &UniformConfig,
) -> Result<QuantizedTensor> {
    let group_len = cfg.group_len(shape)?;
    check_len(data, shape)?;
    check_finite(name, data)?;
    let seg = cfg.segment(data.len(), group_len);
    let (codes, scale, zero_point) = match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, shape)?;
            let (codes, params) =
                ctx.run("quantize", |enc| encode_quantize(ctx, enc, &input, cfg))?;
            (
                codes.to_u32(ctx)?,
                params.scale.to_f32(ctx)?,
                params.zero.to_i32(ctx)?,
            )
        }
        Backend::Cpu => {
            let ranges = calibrate_cpu(data, group_len, cfg)?;
            let (scale, zero) = cpu::affine_params::affine_params(&cfg.scheme, &ranges);
            let mut codes = vec![0u32; seg.packed_words()];
            cpu::quantize_pack::quantize_pack(data, &mut codes, &scale, &zero, &[seg])?;
            (codes, scale, zero)
        }
    };
    Ok(QuantizedTensor {
        shape: shape.to_vec(),
        bits: cfg.scheme.bits,
        granularity: cfg.granularity,
        codes,
        encoding: Encoding::Affine {
            scheme: cfg.scheme,
            scale,
            zero_point,
        },
        mask: None,
    })
}

/// (scale, zero point) of every range under `scheme` on `backend`: the device's
/// `affine_params` kernel or its CPU twin, the same values `quantize` computes there from the
/// same ranges, so a tensor quantized in pieces gets the parameters of its unsplit run.
pub fn params_from_ranges(
    backend: &Backend<'_>,
    scheme: &AffineScheme,
    ranges: &[GroupRange],
) -> Result<(Vec<f32>, Vec<i32>)> {
    match backend {
        Backend::Gpu(ctx) => {
            let groups = ranges.len();
            let r = GpuTensor::upload(ctx, ranges, &[groups, 4], ElemType::U32)?;
            let scale = GpuTensor::zeros(ctx, &[groups], ElemType::F32)?;
            let zero = GpuTensor::zeros(ctx, &[groups], ElemType::I32)?;
            ctx.run("affine_params", |enc| {
                gpu::affine_params::encode(ctx, enc, scheme, &r, &scale, &zero)
            })?;
            Ok((scale.to_f32(ctx)?, zero.to_i32(ctx)?))
        }
        Backend::Cpu => Ok(cpu::affine_params::affine_params(scheme, ranges)),
    }
}

/// Packed codes of `data`, a piece of a larger tensor, under fixed parameters: `seg` says
/// how its elements fall in the groups of `scale` and `zero` (`group_phase` for a piece
/// starting inside a group, `param` for its first group). Each code is the one the whole
/// tensor's run gives, so pieces starting on a word boundary concatenate into its codes.
pub fn quantize_piece(
    backend: &Backend<'_>,
    data: &[f32],
    scale: &[f32],
    zero: &[i32],
    seg: &AffineSegment,
) -> Result<Vec<u32>> {
    if seg.src != 0 || seg.dst != 0 || seg.len as usize != data.len() {
        return Err(Error::shape(
            "quantize_piece",
            format!("segment {seg:?} for {} values", data.len()),
        ));
    }
    match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, &[data.len()])?;
            let s = GpuTensor::from_f32(ctx, scale, &[scale.len()])?;
            let z = GpuTensor::from_i32(ctx, zero, &[zero.len()])?;
            let codes = GpuTensor::zeros(ctx, &[seg.packed_words()], ElemType::U32)?;
            gpu::quantize_pack::quantize_pack(ctx, &input, &codes, &s, &z, &[*seg])?;
            codes.to_u32(ctx)
        }
        Backend::Cpu => {
            let mut codes = vec![0u32; seg.packed_words()];
            cpu::quantize_pack::quantize_pack(data, &mut codes, scale, zero, &[*seg])?;
            Ok(codes)
        }
    }
}

/// Fake-quantizes host data (quantize then dequantize, in f32).
pub fn fake_quantize(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &UniformConfig,
) -> Result<Vec<f32>> {
    let group_len = cfg.group_len(shape)?;
    check_len(data, shape)?;
    check_finite(name, data)?;
    let seg = cfg.segment(data.len(), group_len);
    match backend {
        Backend::Gpu(ctx) => {
            let t = GpuTensor::from_f32(ctx, data, shape)?;
            ctx.run("fake_quantize", |enc| {
                encode_fake_quantize(ctx, enc, &t, &t, cfg)
            })?;
            t.to_f32(ctx)
        }
        Backend::Cpu => {
            let ranges = calibrate_cpu(data, group_len, cfg)?;
            let (scale, zero) = cpu::affine_params::affine_params(&cfg.scheme, &ranges);
            let mut out = vec![0f32; data.len()];
            cpu::fake_quant::fake_quant(data, &mut out, &scale, &zero, &[seg])?;
            Ok(out)
        }
    }
}

/// Decodes an affine [`QuantizedTensor`] to f32.
pub fn dequantize(backend: &Backend<'_>, qt: &QuantizedTensor) -> Result<Vec<f32>> {
    qt.validate()?;
    let Encoding::Affine {
        scale, zero_point, ..
    } = &qt.encoding
    else {
        return Err(Error::param("uniform::dequantize", "not an affine tensor"));
    };
    let seg = qt.affine_segment(0, 0, 0)?;
    match backend {
        Backend::Gpu(ctx) => {
            let codes = GpuTensor::from_u32(ctx, &qt.codes, &[qt.codes.len()])?;
            let s = GpuTensor::from_f32(ctx, scale, &[scale.len()])?;
            let z = GpuTensor::from_i32(ctx, zero_point, &[zero_point.len()])?;
            let out = GpuTensor::zeros(ctx, &qt.shape, ElemType::F32)?;
            gpu::dequantize::dequantize(ctx, &codes, &out, &s, &z, &[seg])?;
            out.to_f32(ctx)
        }
        Backend::Cpu => {
            let mut out = vec![0f32; qt.numel()];
            cpu::dequantize::dequantize(&qt.codes, &mut out, scale, zero_point, &[seg])?;
            Ok(out)
        }
    }
}

fn check_len(data: &[f32], shape: &[usize]) -> Result<()> {
    let numel: usize = shape.iter().product();
    if numel != data.len() {
        return Err(Error::shape(
            "uniform",
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    Ok(())
}

/// An exponential moving average of per-group ranges over batches (activation calibration),
/// kept on the device for GPU batches and on the host for CPU batches.
#[derive(Debug)]
pub struct RunningRange {
    momentum: f32,
    group_len: usize,
    batches: u64,
    state: RangeState,
}

#[derive(Debug)]
enum RangeState {
    Gpu { state: GpuTensor, batch: GpuTensor },
    Cpu(Vec<GroupRange>),
}

impl RunningRange {
    /// A running range over `groups` groups of `group_len` elements; each batch moves the
    /// state by `momentum` (0.01 is common) toward the batch's range.
    pub fn new(
        backend: &Backend<'_>,
        groups: usize,
        group_len: usize,
        momentum: f32,
    ) -> Result<Self> {
        if !(momentum > 0.0 && momentum <= 1.0) {
            return Err(Error::param(
                "RunningRange",
                format!("momentum {momentum} outside (0, 1]"),
            ));
        }
        let state = match backend {
            Backend::Gpu(ctx) => RangeState::Gpu {
                state: gpu::minmax::ranges_tensor(ctx, groups)?,
                batch: gpu::minmax::ranges_tensor(ctx, groups)?,
            },
            Backend::Cpu => RangeState::Cpu(vec![GroupRange::EMPTY; groups]),
        };
        Ok(Self {
            momentum,
            group_len,
            batches: 0,
            state,
        })
    }

    /// Folds a device batch into the state (recorded into `encoder`; no read-back).
    pub fn encode_observe(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        batch: &GpuTensor,
    ) -> Result<()> {
        let RangeState::Gpu {
            state,
            batch: scratch,
        } = &self.state
        else {
            return Err(Error::param(
                "RunningRange",
                "this running range lives on the host",
            ));
        };
        gpu::minmax::encode(ctx, encoder, batch, self.group_len, scratch)?;
        gpu::minmax::encode_ema(
            ctx,
            encoder,
            scratch,
            state,
            self.batches == 0,
            self.momentum,
        )?;
        self.batches += 1;
        Ok(())
    }

    /// Folds a host batch into the state.
    pub fn observe(&mut self, batch: &[f32]) -> Result<()> {
        let RangeState::Cpu(state) = &mut self.state else {
            return Err(Error::param(
                "RunningRange",
                "this running range lives on the device",
            ));
        };
        let ranges = cpu::minmax::group_ranges(batch, self.group_len)?;
        cpu::minmax::ema_update(&ranges, state, self.batches == 0, self.momentum)?;
        self.batches += 1;
        Ok(())
    }

    /// Batches seen.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// The device state (one `GroupRange` per group), for `affine_params`.
    pub fn device_ranges(&self) -> Option<&GpuTensor> {
        match &self.state {
            RangeState::Gpu { state, .. } => Some(state),
            RangeState::Cpu(_) => None,
        }
    }

    /// The current ranges, read back from the device if they live there.
    pub fn ranges(&self, ctx: Option<&Context>) -> Result<Vec<GroupRange>> {
        match (&self.state, ctx) {
            (RangeState::Cpu(s), _) => Ok(s.clone()),
            (RangeState::Gpu { state, .. }, Some(ctx)) => state.download(ctx),
            (RangeState::Gpu { .. }, None) => Err(Error::param(
                "RunningRange",
                "the device state needs a context",
            )),
        }
    }
}

/// Packed codes as unsigned integers (for inspection and tests).
pub fn unpack_codes(qt: &QuantizedTensor) -> Vec<u32> {
    pack::unpack(&qt.codes, qt.numel(), qt.bits)
}
