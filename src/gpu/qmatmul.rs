//! Launcher for `shaders/qmatmul.wgsl`: the dequantizing matmul `y = x·Wᵀ (+ bias)` with W
//! stored as packed codes (affine or codebook) and decoded on the fly, or as dense f32 (the
//! float baseline on the same kernel). A GEMV kernel serves small M, a tiled GEMM large M.
//! CPU twin: `src/cpu/qmatmul.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, PipelineOptions, Shader, WORKGROUP_SIZE, Window, window};
pub use super::qweight::{GpuDecoding, GpuQWeight, QWeight};
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::gpu::dispatch::spans;

const KERNEL_WGSL: &str = include_str!("../../shaders/qmatmul.wgsl");
/// `shaders/bitstream.wgsl`: 32 bits from any bit offset of a packed stream.
pub(crate) const BITSTREAM_WGSL: &str = include_str!("../../shaders/bitstream.wgsl");
/// `shaders/real_f32.wgsl`: `real` is f32.
pub(crate) const REAL_F32_WGSL: &str = include_str!("../../shaders/real_f32.wgsl");
/// `shaders/real_f16.wgsl`: `real` is f16 (devices with shader-f16 only).
pub(crate) const REAL_F16_WGSL: &str = include_str!("../../shaders/real_f16.wgsl");

/// The composed WGSL computing in f32.
pub const SHADER: Shader = Shader {
    name: "qmatmul",
    parts: &[REAL_F32_WGSL, COMMON_WGSL, BITSTREAM_WGSL, KERNEL_WGSL],
};

/// The composed WGSL computing products and block sums in f16.
pub const SHADER_F16: Shader = Shader {
    name: "qmatmul",
    parts: &[REAL_F16_WGSL, COMMON_WGSL, BITSTREAM_WGSL, KERNEL_WGSL],
};

/// Uniform parameters; mirrors `QMatmulParams` in qmatmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QMatmulParams {
    /// Rows of x and y.
    pub m: u32,
    /// Rows of W in this dispatch.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// Bit of the dispatch's first W row in the bound code window.
    pub code_bit0: u32,
    /// Words in the bound code window.
    pub code_words: u32,
    /// Parameter groups per W row (0: one for the whole tensor).
    pub groups_per_row: u32,
    /// Codes per parameter group along K.
    pub group_len: u32,
    /// A stored code u means q = u + qmin.
    pub qmin: i32,
    /// 1: zero points are bound.
    pub has_zero: u32,
    /// The dispatch's first scale (or level) in its window.
    pub scale_base: u32,
    /// The dispatch's first zero point in its window.
    pub zero_base: u32,
    /// x[0, 0] in its window.
    pub x_base: u32,
    /// y[0, first column of the dispatch] in its window.
    pub y_base: u32,
    /// Row stride of y.
    pub ldy: u32,
    /// The dispatch's first bias in its window.
    pub bias_base: u32,
    /// 1: add the bias.
    pub has_bias: u32,
    /// Workgroups along the dispatch's columns.
    pub tiles_n: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<QMatmulParams>() == 80);

/// Rows of x the GEMV kernel takes per pass (`MAX_XROWS` in the WGSL).
pub const MAX_XROWS: usize = 8;
/// W rows a GEMV thread (or group of LANES threads) owns, one per vector lane.
const GEMV_ROWS_PER_THREAD: u32 = 4;
/// Rows and columns of y a GEMM workgroup computes (`TILE` in the WGSL).
const TILE: u32 = 64;
/// Largest M [`Kernel::Auto`] sends to the GEMV kernel on hardware adapters: up to here W is
/// read at most twice (MAX_XROWS rows of x per pass), where a 64-row GEMM tile would be at
/// least three-quarters empty. (Not measured on hardware here; see [`auto_kernel`].)
pub const GEMV_MAX_M: usize = 16;
/// Bytes of one code window: also keeps every bit index below 2^31.
const MAX_CODE_WINDOW: u64 = 1 << 28;

/// Arithmetic precision of products and short partial sums (sums across blocks are f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f16 on devices with shader-f16 that are not software rasterisers (llvmpipe and
    /// lavapipe emulate f16 through f32 conversions, measured slower), f32 elsewhere.
    #[default]
    Auto,
    /// f32 throughout.
    F32,
    /// f16 products and block sums; an error on devices without shader-f16. Needs partial
    /// sums of 32 products (16 in the GEMM) to stay inside f16's range (±65504).
    F16,
}

/// Which kernel computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernel {
    /// By device and M: [`auto_kernel`].
    #[default]
    Auto,
    /// Matrix-vector, reading W once per [`MAX_XROWS`] rows of x.
    Gemv,
    /// Tiled through workgroup memory.
    Gemm,
}

/// Choices the caller may force; the defaults pick by device and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Options {
    /// Arithmetic precision.
    pub precision: Precision,
    /// GEMV or GEMM.
    pub kernel: Kernel,
    /// GEMV threads per W row (a power of two up to 256); `None` picks by device: 1 on
    /// software adapters (each SIMD lane streams its own row, measured fastest on llvmpipe),
    /// 32 elsewhere (neighbouring threads read neighbouring words of a row).
    pub lanes: Option<u32>,
}

/// The kernel [`Kernel::Auto`] picks for `m` rows of x: GEMV up to [`GEMV_MAX_M`], GEMM
/// above; on software adapters always GEMV (llvmpipe turns every workgroup-memory read into a
/// gather, so the tile costs more than re-reading W: the GEMM measured 2.3× slower than the
/// GEMV at M = 64, 4096×4096 int4).
pub fn auto_kernel(ctx: &Context, m: usize) -> Kernel {
    if ctx.is_software() || m <= GEMV_MAX_M {
        Kernel::Gemv
    } else {
        Kernel::Gemm
    }
}

/// Whether the f16 build runs for these options on this device.
fn use_f16(ctx: &Context, precision: Precision) -> Result<bool> {
    match precision {
        Precision::F32 => Ok(false),
        Precision::F16 if !ctx.has_f16() => Err(Error::param(
            "qmatmul",
            format!(
                "f16 precision needs shader-f16, which {} lacks",
                ctx.adapter_summary()
            ),
        )),
        Precision::F16 => Ok(true),
        Precision::Auto => Ok(ctx.has_f16() && !ctx.is_software()),
    }
}

/// Records `y = x·Wᵀ (+ bias)`: x f32 [M, K], W [N, K], y f32 [M, N], bias f32 \[N\]. W may
/// exceed one storage binding: it is processed in row chunks.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &GpuTensor,
    w: &QWeight<'_>,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    opts: &Options,
) -> Result<()> {
    let op = "qmatmul";
    w.check(op)?;
    let l = w.layout;
    let (n, k) = (l.rows, l.cols);
    x.expect_dtype(op, ElemType::F32)?;
    y.expect_dtype(op, ElemType::F32)?;
    let m = match *x.shape() {
        [m, kx] if kx == k => m,
        _ => {
            return Err(Error::shape(
                op,
                format!("x of shape {:?} against W [{n}, {k}]", x.shape()),
            ));
        }
    };
    if y.shape() != [m, n] {
        return Err(Error::shape(
            op,
            format!("y of shape {:?}, expected [{m}, {n}]", y.shape()),
        ));
    }
    if let Some(b) = bias {
        b.expect_dtype(op, ElemType::F32)?;
        if b.numel() != n {
            return Err(Error::shape(
                op,
                format!("bias of {} for {n} rows", b.numel()),
            ));
        }
    }
    if y.overlaps(x) || bias.is_some_and(|b| y.overlaps(b)) || y.overlaps(w.codes) {
        return Err(Error::param(op, "y overlaps an input"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let gemv = match opts.kernel {
        Kernel::Auto => auto_kernel(ctx, m) == Kernel::Gemv,
        Kernel::Gemv => true,
        Kernel::Gemm => false,
    };
    let lanes = opts.lanes.unwrap_or(if ctx.is_software() { 1 } else { 32 });
    if !lanes.is_power_of_two() || lanes > WORKGROUP_SIZE {
        return Err(Error::param(
            op,
            format!("{lanes} lanes per row is not a power of two up to {WORKGROUP_SIZE}"),
        ));
    }
    // The GEMM reads every code by itself and ignores ALIGNED, UNIFORM, LANES and XROWS: fixed
    // values keep to one pipeline per kind and width.
    let (lanes, xrows) = if gemv {
        (lanes, m.min(MAX_XROWS) as u32)
    } else {
        (1, 1)
    };
    let shader = if use_f16(ctx, opts.precision)? {
        SHADER_F16
    } else {
        SHADER
    };
    let (groups_per_row, group_len, uniform) = l.grouping();
    let row_bits = (k * l.bits as usize) as u64;
    let aligned = gemv && row_bits.is_multiple_of(32) && 32 % l.bits == 0;
    let uniform = gemv && uniform;
    let constants = [
        // KIND_AFFINE, KIND_CODEBOOK, KIND_DENSE in the WGSL.
        ("KIND", f64::from(w.kind() as u8)),
        ("BITS", f64::from(l.bits)),
        ("ALIGNED", f64::from(u8::from(aligned))),
        ("UNIFORM", f64::from(u8::from(uniform))),
        ("LANES", f64::from(lanes)),
        ("XROWS", f64::from(xrows)),
    ];
    let entry = if gemv { "gemv" } else { "gemm" };
    // Both kernels write every workgroup element they read first.
    let popts = PipelineOptions {
        constants: &constants,
        zero_workgroup_memory: false,
    };
    let pipeline = ctx.pipeline_with(&shader, entry, &popts)?;

    let whole = |t: &GpuTensor| window(ctx, t.offset(), 0, t.numel() as u64);
    let x_w = whole(x)?;
    let y_w = whole(y)?;
    let dummy_f32 = ctx.placeholder(ElemType::F32)?;
    let dummy_i32 = ctx.placeholder(ElemType::I32)?;
    let (table, per_group, zero, qmin) = match w.decoding {
        GpuDecoding::Affine { scale, zero, qmin } => (scale, 1u64, zero, qmin),
        GpuDecoding::Codebook { levels } => (levels, 1u64 << l.bits, None, 0),
        GpuDecoding::Dense => (&dummy_f32, 1, None, 0),
    };
    let bias_t = bias.unwrap_or(&dummy_f32);
    let zero_t = zero.unwrap_or(&dummy_i32);

    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    let budget_bits = (ctx.work_limits().max_binding_bytes.min(MAX_CODE_WINDOW))
        .saturating_sub(align)
        .saturating_mul(8)
        .saturating_sub(64);
    let rows_per_chunk = (budget_bits / row_bits.max(1)).max(1) as usize;
    let gpr = groups_per_row as u64;
    for rows in spans(0..n, rows_per_chunk) {
        let (n0, n1) = (rows.start, rows.end);
        let (b0, b1) = (n0 as u64 * row_bits, n1 as u64 * row_bits);
        let (w0, w1) = (b0 / 32, b1.div_ceil(32));
        let code_w = window(ctx, w.codes.offset(), w0, w1 - w0)?;
        // Groups this chunk's rows use: its own rows' groups, or the single tensor group.
        let (g0, g1) = if gpr == 0 {
            (0, 1)
        } else {
            (n0 as u64 * gpr, n1 as u64 * gpr)
        };
        let param_w = |t: &GpuTensor, per: u64| -> Result<Window> {
            window(ctx, t.offset(), g0 * per, (g1 - g0) * per)
        };
        let table_w = match w.decoding {
            GpuDecoding::Dense => whole(table)?,
            _ => param_w(table, per_group)?,
        };
        let zero_w = if zero.is_some() {
            param_w(zero_t, 1)?
        } else {
            whole(zero_t)?
        };
        let bias_w = match bias {
            Some(b) => window(ctx, b.offset(), n0 as u64, (n1 - n0) as u64)?,
            None => whole(bias_t)?,
        };
        let rows = (n1 - n0) as u32;
        let (tiles_n, workgroups) = if gemv {
            let t = rows.div_ceil(WORKGROUP_SIZE / lanes * GEMV_ROWS_PER_THREAD);
            (t, t * (m as u32).div_ceil(xrows))
        } else {
            let t = rows.div_ceil(TILE);
            (t, t * (m as u32).div_ceil(TILE))
        };
        let params = QMatmulParams {
            m: m as u32,
            n: rows,
            k: k as u32,
            code_bit0: (u64::from(code_w.base) * 32 + (b0 - w0 * 32)) as u32,
            code_words: (code_w.size / 4) as u32,
            groups_per_row,
            group_len,
            qmin,
            has_zero: u32::from(zero.is_some()),
            scale_base: table_w.base,
            zero_base: zero_w.base,
            x_base: x_w.base,
            y_base: y_w.base + n0 as u32,
            ldy: n as u32,
            bias_base: bias_w.base,
            has_bias: u32::from(bias.is_some()),
            tiles_n,
            ..Default::default()
        };
        let uniform_buf = ctx.uniform("qmatmul params", &params);
        let bindings = [
            (0, uniform_buf.as_entire_binding()),
            (1, x_w.bind(x.buffer())),
            (2, code_w.bind(w.codes.buffer())),
            (3, table_w.bind(table.buffer())),
            (4, zero_w.bind(zero_t.buffer())),
            (5, bias_w.bind(bias_t.buffer())),
            (6, y_w.bind(y.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, workgroups)?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for.
pub fn qmatmul(
    ctx: &Context,
    x: &GpuTensor,
    w: &QWeight<'_>,
    bias: Option<&GpuTensor>,
    y: &GpuTensor,
    opts: &Options,
) -> Result<()> {
    ctx.run("qmatmul", |enc| encode(ctx, enc, x, w, bias, y, opts))
}
