//! Launcher for `shaders/matmul.wgsl`: f32 `C = op(A)·op(B) (+ bias)`, the dense-layer
//! product of the trainer and the float baseline of the quantized matmuls.
//! CPU twin: `src/cpu/matmul.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, PipelineOptions, Shader, window};
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::gpu::dispatch::spans;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "matmul",
    parts: &[COMMON_WGSL, include_str!("../../shaders/matmul.wgsl")],
};

/// Uniform parameters; mirrors `MatmulParams` in matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// 1: A is stored K×M.
    pub trans_a: u32,
    /// 1: B is stored N×K.
    pub trans_b: u32,
    /// Row stride of A as stored.
    pub lda: u32,
    /// Row stride of B as stored.
    pub ldb: u32,
    /// Row stride of C.
    pub ldc: u32,
    /// First element of A in its window.
    pub a_base: u32,
    /// First element of B in its window.
    pub b_base: u32,
    /// First element of C in its window.
    pub c_base: u32,
    /// First element of the bias in its window.
    pub bias_base: u32,
    /// 1: add `bias[col]`.
    pub has_bias: u32,
    /// 1: `C += …` instead of `C = …`.
    pub accumulate: u32,
    /// Workgroups along N.
    pub tiles_n: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<MatmulParams>() == 64);

/// Rows and columns of C a workgroup computes (`TILE` in the WGSL).
const TILE: u32 = 64;

/// A stored matrix and whether the product uses its transpose.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// A 2-D f32 tensor, row-major.
    pub tensor: &'a GpuTensor,
    /// Use the transpose.
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    /// The matrix as stored.
    pub fn plain(tensor: &'a GpuTensor) -> Self {
        Self {
            tensor,
            transposed: false,
        }
    }

    /// Its transpose.
    pub fn t(tensor: &'a GpuTensor) -> Self {
        Self {
            tensor,
            transposed: true,
        }
    }

    /// (rows, cols) of op(X).
    fn dims(&self, op: &str) -> Result<(usize, usize)> {
        self.tensor.expect_dtype(op, ElemType::F32)?;
        let &[r, c] = self.tensor.shape() else {
            return Err(Error::shape(
                op,
                format!("operand of shape {:?} is not 2-D", self.tensor.shape()),
            ));
        };
        Ok(if self.transposed { (c, r) } else { (r, c) })
    }
}

/// Records `c = op(a)·op(b) (+ bias)`, or `c += …` with `accumulate`. `b` may exceed one
/// storage binding when transposed (a weight matrix N×K): it is processed in row chunks.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    a: Operand<'_>,
    b: Operand<'_>,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    let op = "matmul";
    let (m, k) = a.dims(op)?;
    let (k2, n) = b.dims(op)?;
    if k != k2 || c.shape() != [m, n] {
        return Err(Error::shape(
            op,
            format!("{m}×{k} · {k2}×{n} into {:?}", c.shape()),
        ));
    }
    c.expect_dtype(op, ElemType::F32)?;
    if let Some(bias) = bias {
        bias.expect_dtype(op, ElemType::F32)?;
        if bias.numel() != n {
            return Err(Error::shape(
                op,
                format!("bias of {} for {n} columns", bias.numel()),
            ));
        }
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // The tiles are written in full before every read (see PipelineOptions on GL compile time).
    let popts = PipelineOptions {
        zero_workgroup_memory: false,
        ..PipelineOptions::default()
    };
    let pipeline = ctx.pipeline_with(&SHADER, "matmul", &popts)?;
    let whole = |t: &GpuTensor| window(ctx, t.offset(), 0, t.numel() as u64);
    let a_w = whole(a.tensor)?;
    let c_w = whole(c)?;
    // Columns of C per dispatch: all of them unless a transposed B needs row chunks.
    let budget = ctx.work_limits().max_binding_bytes / 4 - 256;
    let cols_per_chunk = if b.transposed {
        (budget / k.max(1) as u64).max(1) as usize
    } else {
        n
    };
    let dummy;
    let bias_t = match bias {
        Some(t) => t,
        None => {
            dummy = ctx.placeholder(ElemType::F32)?;
            &dummy
        }
    };
    for cols in spans(0..n, cols_per_chunk) {
        let (n0, n1) = (cols.start, cols.end);
        let b_w = if b.transposed {
            window(
                ctx,
                b.tensor.offset(),
                (n0 * k) as u64,
                ((n1 - n0) * k) as u64,
            )?
        } else {
            whole(b.tensor)?
        };
        let bias_w = match bias {
            Some(t) => window(ctx, t.offset(), n0 as u64, (n1 - n0) as u64)?,
            None => whole(bias_t)?,
        };
        let tiles_n = ((n1 - n0) as u32).div_ceil(TILE);
        let params = MatmulParams {
            m: m as u32,
            n: (n1 - n0) as u32,
            k: k as u32,
            trans_a: u32::from(a.transposed),
            trans_b: u32::from(b.transposed),
            lda: a.tensor.shape()[1] as u32,
            ldb: b.tensor.shape()[1] as u32,
            ldc: n as u32,
            a_base: a_w.base,
            b_base: b_w.base + if b.transposed { 0 } else { n0 as u32 },
            c_base: c_w.base + n0 as u32,
            bias_base: bias_w.base,
            has_bias: u32::from(bias.is_some()),
            accumulate: u32::from(accumulate),
            tiles_n,
            _pad: 0,
        };
        let uniform = ctx.uniform("matmul params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, a_w.bind(a.tensor.buffer())),
            (2, b_w.bind(b.tensor.buffer())),
            (3, bias_w.bind(bias_t.buffer())),
            (4, c_w.bind(c.buffer())),
        ];
        ctx.dispatch(
            encoder,
            &pipeline,
            &bindings,
            tiles_n * (m as u32).div_ceil(TILE),
        )?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for.
pub fn matmul(
    ctx: &Context,
    a: Operand<'_>,
    b: Operand<'_>,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    ctx.run("matmul", |enc| encode(ctx, enc, a, b, bias, c, accumulate))
}
