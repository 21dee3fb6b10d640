//! Launcher for `shaders/requantize.wgsl`: int32 accumulators to int32 outputs with gemmlowp's
//! fixed-point multipliers (one per column or one for all). CPU twin: `src/cpu/requantize.rs`,
//! bit-identical; numerics in `src/requant.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, window};
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::requant::OutputQuant;

/// `shaders/fixed_point.wgsl`: SaturatingRoundingDoublingHighMul and RoundingDivideByPOT.
pub(crate) const FIXED_POINT_WGSL: &str = include_str!("../../shaders/fixed_point.wgsl");

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "requantize",
    parts: &[
        COMMON_WGSL,
        FIXED_POINT_WGSL,
        include_str!("../../shaders/requantize.wgsl"),
    ],
};

/// Uniform parameters; mirrors `RequantizeParams` in requantize.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RequantizeParams {
    /// Accumulators.
    pub len: u32,
    /// Columns.
    pub n: u32,
    /// First accumulator in its window.
    pub acc_base: u32,
    /// First (M0, exponent) pair in its window, in i32 words.
    pub mult_base: u32,
    /// 1: one pair per column.
    pub per_channel: u32,
    /// Output zero point.
    pub out_zero: i32,
    /// Smallest output.
    pub out_qmin: i32,
    /// Largest output.
    pub out_qmax: i32,
    /// First output in its window.
    pub y_base: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<RequantizeParams>() == 48);

/// Records the requantization of I32 accumulators `acc` ([rows, n]) into I32 outputs `y` with
/// `multipliers` (I32 (M0, exponent) pairs, one per column or one for all; normalised as
/// `QuantizedMultiplier::validate` checks, else the outputs are unspecified).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    acc: &GpuTensor,
    n: usize,
    multipliers: &GpuTensor,
    quant: OutputQuant,
    y: &GpuTensor,
) -> Result<()> {
    let op = "requantize";
    acc.expect_dtype(op, ElemType::I32)?;
    y.expect_dtype(op, ElemType::I32)?;
    multipliers.expect_dtype(op, ElemType::I32)?;
    let len = acc.numel();
    if y.numel() != len || n == 0 || !len.is_multiple_of(n) || len >= 1 << 31 {
        return Err(Error::shape(
            op,
            format!("{len} accumulators, {} outputs, {n} columns", y.numel()),
        ));
    }
    if !(multipliers.numel() == 2 || multipliers.numel() == 2 * n) {
        return Err(Error::shape(
            op,
            format!("{} multiplier words for {n} columns", multipliers.numel()),
        ));
    }
    if y.overlaps(acc) || y.overlaps(multipliers) {
        return Err(Error::param(op, "the output overlaps an input"));
    }
    if len == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline(&SHADER, "requantize")?;
    let whole = |t: &GpuTensor| window(ctx, t.offset(), 0, t.numel() as u64);
    let (acc_w, mult_w, y_w) = (whole(acc)?, whole(multipliers)?, whole(y)?);
    let params = RequantizeParams {
        len: len as u32,
        n: n as u32,
        acc_base: acc_w.base,
        mult_base: mult_w.base,
        per_channel: u32::from(multipliers.numel() == 2 * n),
        out_zero: quant.zero,
        out_qmin: quant.qmin,
        out_qmax: quant.qmax,
        y_base: y_w.base,
        ..Default::default()
    };
    let uniform = ctx.uniform("requantize params", &params);
    let bindings = [
        (0, uniform.as_entire_binding()),
        (1, acc_w.bind(acc.buffer())),
        (2, mult_w.bind(multipliers.buffer())),
        (3, y_w.bind(y.buffer())),
    ];
    let workgroups = (len as u32).div_ceil(WORKGROUP_SIZE);
    ctx.dispatch(encoder, &pipeline, &bindings, workgroups)
}

/// [`encode`], submitted and waited for.
pub fn requantize(
    ctx: &Context,
    acc: &GpuTensor,
    n: usize,
    multipliers: &GpuTensor,
    quant: OutputQuant,
    y: &GpuTensor,
) -> Result<()> {
    ctx.run("requantize", |enc| {
        encode(ctx, enc, acc, n, multipliers, quant, y)
    })
}
