//! Launcher for `shaders/softmax_xent.wgsl`: softmax cross-entropy loss, accuracy and the
//! gradient of the mean loss, per row. CPU twin: `src/cpu/softmax_xent.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, window};
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "softmax_xent",
    parts: &[COMMON_WGSL, include_str!("../../shaders/softmax_xent.wgsl")],
};

/// Uniform parameters; mirrors `SoftmaxXentParams` in softmax_xent.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SoftmaxXentParams {
    /// Rows (samples).
    pub rows: u32,
    /// Classes per row.
    pub classes: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    /// Multiplier of the gradient: 1/rows for the mean loss.
    pub grad_scale: f32,
}
const _: () = assert!(std::mem::size_of::<SoftmaxXentParams>() == 16);

/// The outputs of one pass.
pub struct XentOut<'a> {
    /// ∂L/∂logits, rows × classes.
    pub grad: &'a GpuTensor,
    /// Loss per row.
    pub loss: &'a GpuTensor,
    /// 1 where the arg-max is the label (u32 per row).
    pub correct: &'a GpuTensor,
}

/// Records the loss, accuracy and gradient of `logits` (rows × classes) against `labels`
/// (u32 per row, each below `classes`).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    logits: &GpuTensor,
    labels: &GpuTensor,
    out: &XentOut<'_>,
) -> Result<()> {
    let op = "softmax_xent";
    let &[rows, classes] = logits.shape() else {
        return Err(Error::shape(op, "logits must be rows × classes"));
    };
    logits.expect_dtype(op, ElemType::F32)?;
    labels.expect_dtype(op, ElemType::U32)?;
    out.correct.expect_dtype(op, ElemType::U32)?;
    if labels.numel() != rows
        || out.loss.numel() != rows
        || out.correct.numel() != rows
        || out.grad.shape() != logits.shape()
    {
        return Err(Error::shape(
            op,
            "labels, losses, flags and gradient must match the logits",
        ));
    }
    let whole = |t: &GpuTensor| -> Result<super::dispatch::Window> {
        let w = window(ctx, t.offset(), 0, t.numel() as u64)?;
        if w.base != 0 {
            return Err(Error::param(op, "tensors must start on a binding boundary"));
        }
        Ok(w)
    };
    let params = SoftmaxXentParams {
        rows: rows as u32,
        classes: classes as u32,
        num_workgroups: (rows as u32).div_ceil(WORKGROUP_SIZE),
        grad_scale: 1.0 / rows.max(1) as f32,
    };
    let uniform = ctx.uniform("softmax_xent params", &params);
    let bindings = [
        (0, uniform.as_entire_binding()),
        (1, whole(logits)?.bind(logits.buffer())),
        (2, whole(labels)?.bind(labels.buffer())),
        (3, whole(out.grad)?.bind(out.grad.buffer())),
        (4, whole(out.loss)?.bind(out.loss.buffer())),
        (5, whole(out.correct)?.bind(out.correct.buffer())),
    ];
    let pipeline = ctx.pipeline(&SHADER, "softmax_xent")?;
    ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)
}
