//! Launcher for `shaders/int8_matmul.wgsl`: the full-integer matmul (int8 × int8 → int32 with
//! int32 bias, then the accumulators or int8 outputs requantized by gemmlowp's fixed-point
//! multiplier). CPU twin: `src/cpu/int8_matmul.rs`, bit-identical.

use crate::gpu::dispatch::spans;

use super::context::Context;
use super::dispatch::{COMMON_WGSL, PipelineOptions, Shader, WORKGROUP_SIZE, window};
use super::qmatmul::BITSTREAM_WGSL;
use super::requantize::FIXED_POINT_WGSL;
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::kernel::int8_matmul::Int8Layer;
use crate::requant::OutputQuant;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "int8_matmul",
    parts: &[
        COMMON_WGSL,
        BITSTREAM_WGSL,
        FIXED_POINT_WGSL,
        include_str!("../../shaders/int8_matmul.wgsl"),
    ],
};

/// Uniform parameters; mirrors `Int8MatmulParams` in int8_matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Int8MatmulParams {
    /// Rows of x and y.
    pub m: u32,
    /// Columns of y (all of them).
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// The dispatch's first column.
    pub col0: u32,
    /// The dispatch's columns.
    pub cols: u32,
    /// Bit of x[0, 0] in its window.
    pub x_bit0: u32,
    /// Words of the x window.
    pub x_words: u32,
    /// Bit of the dispatch's first W row in its window.
    pub w_bit0: u32,
    /// Words of the W window.
    pub w_words: u32,
    /// `zx − qmin_x − 128`.
    pub x_offset: i32,
    /// `−qmin_w − 128`.
    pub w_offset: i32,
    /// 1: per-row W zero points are bound.
    pub has_w_zero: u32,
    /// The dispatch's first W zero point in its window.
    pub w_zero_base: u32,
    /// 1: add the bias.
    pub has_bias: u32,
    /// The dispatch's first bias in its window.
    pub bias_base: u32,
    /// The dispatch's first multiplier pair, in i32 words of its window.
    pub mult_base: u32,
    /// 1: one multiplier per column.
    pub per_channel: u32,
    /// Output zero point.
    pub out_zero: i32,
    /// Smallest output code.
    pub out_qmin: i32,
    /// Largest output code.
    pub out_qmax: i32,
    /// 1: requantized packed int8 out; 0: int32 accumulators out.
    pub requant: u32,
    /// y's first word in its window.
    pub y_base: u32,
    /// 0: flat output words; else output words per row of the dispatch.
    pub words_per_row: u32,
    /// Threads with work.
    pub num_words: u32,
}
const _: () = assert!(std::mem::size_of::<Int8MatmulParams>() == 96);

/// Bytes of one code window: keeps every bit index below 2^31.
const MAX_STREAM_WINDOW: u64 = 1 << 28;

/// How four-byte dot products are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DotPath {
    /// [`DotPath::Dot4`] when wgpu reports WGSL's `packed_4x8_integer_dot_product` language
    /// extension (every native wgpu 30 backend does: naga emits the device's own instruction
    /// where it has one, e.g. SPIR-V `OpSDot`, and a polyfill elsewhere), else
    /// [`DotPath::Scalar`] (a browser's WebGPU without the extension).
    #[default]
    Auto,
    /// WGSL `dot4I8Packed`.
    Dot4,
    /// A loop over sign-extended bytes (`extractBits`), core WGSL only.
    Scalar,
}

impl DotPath {
    /// The path [`DotPath::Auto`] resolves to on `ctx`: by the WGSL language extensions of
    /// its instance.
    pub fn resolve(self, ctx: &Context) -> DotPath {
        match self {
            DotPath::Auto => {
                let has = ctx
                    .wgsl_features()
                    .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
                if has { DotPath::Dot4 } else { DotPath::Scalar }
            }
            p => p,
        }
    }
}

/// Where the accumulators go on the device.
#[derive(Clone, Copy, Debug)]
pub enum GpuInt8Out<'a> {
    /// I32 [m, n] accumulators.
    Accumulators(&'a GpuTensor),
    /// Requantized int8 codes packed 4 to a U32 word (`packed_words(m·n, 8)` words).
    Requantized {
        /// Packed output codes.
        y: &'a GpuTensor,
        /// I32 (M0, exponent) pairs: one per column, or one for all.
        multipliers: &'a GpuTensor,
        /// Output quantization.
        quant: OutputQuant,
    },
}

/// Records the full-integer `y = x·Wᵀ (+ bias)`: `x` and `w` U32 packed 8-bit codes of
/// `layer`, `w_zero` I32 \[n\] per-row zero points (`None`: 0), `bias` I32 \[n\] with scale
/// s_x·s_w and zero point 0. W may exceed one binding (row chunks); requantized outputs of a
/// chunked W need n divisible by 4, so no output word spans two chunks.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    layer: &Int8Layer,
    x: &GpuTensor,
    w: &GpuTensor,
    w_zero: Option<&GpuTensor>,
    bias: Option<&GpuTensor>,
    out: GpuInt8Out<'_>,
    path: DotPath,
) -> Result<()> {
    let op = "int8_matmul";
    let (xw, ww) = layer.check(op)?;
    let (m, n, k) = (layer.m, layer.n, layer.k);
    let need = |t: &GpuTensor, dtype: ElemType, len: usize, exact: bool, what: &str| {
        t.expect_dtype(op, dtype)?;
        if t.numel() < len || (exact && t.numel() != len) {
            return Err(Error::shape(op, format!("{} {what} for {len}", t.numel())));
        }
        Ok(())
    };
    need(x, ElemType::U32, xw, false, "x words")?;
    need(w, ElemType::U32, ww, false, "W words")?;
    if let Some(z) = w_zero {
        need(z, ElemType::I32, n, true, "W zero points")?;
    }
    if let Some(b) = bias {
        need(b, ElemType::I32, n, true, "biases")?;
    }
    let (y, mult, quant, requant) = match out {
        GpuInt8Out::Accumulators(acc) => {
            need(acc, ElemType::I32, m * n, true, "accumulators")?;
            (
                acc,
                None,
                OutputQuant {
                    zero: 0,
                    qmin: 0,
                    qmax: 0,
                },
                false,
            )
        }
        GpuInt8Out::Requantized {
            y,
            multipliers,
            quant,
        } => {
            quant.check(op)?;
            need(
                y,
                ElemType::U32,
                m.saturating_mul(n).div_ceil(4),
                true,
                "output words",
            )?;
            multipliers.expect_dtype(op, ElemType::I32)?;
            if !(multipliers.numel() == 2 || multipliers.numel() == 2 * n) {
                return Err(Error::shape(
                    op,
                    format!("{} multiplier words for {n} columns", multipliers.numel()),
                ));
            }
            (y, Some(multipliers), quant, true)
        }
    };
    if [Some(x), Some(w), w_zero, bias, mult]
        .into_iter()
        .flatten()
        .any(|t| y.overlaps(t))
    {
        return Err(Error::param(op, "the output overlaps an input"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dot4 = path.resolve(ctx) == DotPath::Dot4;
    // Windows start on words, so with k % 4 == 0 every row of x and W does too.
    let aligned = k % 4 == 0;
    let whole = |t: &GpuTensor| window(ctx, t.offset(), 0, t.numel() as u64);
    let x_w = whole(x)?;
    let y_w = whole(y)?;
    let dummy = GpuTensor::zeros(ctx, &[2], ElemType::I32)?;
    let constants = [
        ("DOT4", f64::from(u8::from(dot4))),
        ("ALIGNED", f64::from(u8::from(aligned))),
    ];
    let popts = PipelineOptions {
        constants: &constants,
        ..PipelineOptions::default()
    };
    let pipeline = ctx.pipeline_with(&SHADER, "int8_matmul", &popts)?;

    // Bit indices stay below 2^31: windows of at most 2^28 bytes.
    if x_w.size > MAX_STREAM_WINDOW {
        return Err(Error::param(
            op,
            format!("x of {} bytes exceeds 2^28", x_w.size),
        ));
    }
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    let budget = ctx
        .work_limits()
        .max_binding_bytes
        .min(MAX_STREAM_WINDOW)
        .saturating_sub(align + 8);
    let mut rows_per_chunk = (budget / (k as u64).max(1)).max(1) as usize;
    if rows_per_chunk < n {
        rows_per_chunk = rows_per_chunk / 4 * 4;
        if requant && n % 4 != 0 || rows_per_chunk == 0 {
            return Err(Error::param(
                op,
                format!("W [{n}, {k}] needs row chunks; packed outputs then need n divisible by 4"),
            ));
        }
    }
    let chunked = rows_per_chunk < n;
    for span in spans(0..n, rows_per_chunk) {
        let (col0, cols) = (span.start, span.len());
        let (b0, b1) = ((col0 * k * 8) as u64, ((col0 + cols) * k * 8) as u64);
        let w_win = window(ctx, w.offset(), b0 / 32, b1.div_ceil(32) - b0 / 32)?;
        let part =
            |t: &GpuTensor, per: u64| window(ctx, t.offset(), col0 as u64 * per, cols as u64 * per);
        let zero_w = match w_zero {
            Some(z) => part(z, 1)?,
            None => whole(&dummy)?,
        };
        let bias_w = match bias {
            Some(b) => part(b, 1)?,
            None => whole(&dummy)?,
        };
        let mult_t = mult.unwrap_or(&dummy);
        let per_channel = mult.is_some_and(|t| t.numel() == 2 * n);
        let mult_w = if per_channel {
            part(mult_t, 2)?
        } else {
            whole(mult_t)?
        };
        let words_per_row = if chunked { cols.div_ceil(4) } else { 0 };
        let num_words = if chunked {
            m * words_per_row
        } else {
            (m * n).div_ceil(4)
        };
        let params = Int8MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            col0: col0 as u32,
            cols: cols as u32,
            x_bit0: x_w.base * 32,
            x_words: (x_w.size / 4) as u32,
            w_bit0: (u64::from(w_win.base) * 32 + b0 % 32) as u32,
            w_words: (w_win.size / 4) as u32,
            x_offset: layer.x_offset(),
            w_offset: layer.w_offset(0),
            has_w_zero: u32::from(w_zero.is_some()),
            w_zero_base: zero_w.base,
            has_bias: u32::from(bias.is_some()),
            bias_base: bias_w.base,
            mult_base: mult_w.base,
            per_channel: u32::from(per_channel),
            out_zero: quant.zero,
            out_qmin: quant.qmin,
            out_qmax: quant.qmax,
            requant: u32::from(requant),
            y_base: y_w.base,
            words_per_row: words_per_row as u32,
            num_words: num_words as u32,
        };
        let uniform = ctx.uniform("int8_matmul params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, x_w.bind(x.buffer())),
            (2, w_win.bind(w.buffer())),
            (3, zero_w.bind(w_zero.unwrap_or(&dummy).buffer())),
            (4, mult_w.bind(mult_t.buffer())),
            (5, bias_w.bind(bias.unwrap_or(&dummy).buffer())),
            (6, y_w.bind(y.buffer())),
        ];
        let workgroups = (num_words as u32).div_ceil(WORKGROUP_SIZE);
        ctx.dispatch(encoder, &pipeline, &bindings, workgroups)?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for.
#[allow(clippy::too_many_arguments)]
pub fn int8_matmul(
    ctx: &Context,
    layer: &Int8Layer,
    x: &GpuTensor,
    w: &GpuTensor,
    w_zero: Option<&GpuTensor>,
    bias: Option<&GpuTensor>,
    out: GpuInt8Out<'_>,
    path: DotPath,
) -> Result<()> {
    ctx.run("int8_matmul", |enc| {
        encode(ctx, enc, layer, x, w, w_zero, bias, out, path)
    })
}
