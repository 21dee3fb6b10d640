//! Launcher for `shaders/weq_act_forward.wgsl`: the elementwise fake-quant forward of the
//! weighted-entropy log quantizer of activations (ReLU merged), with step and offset read
//! from a [`WeqActResult`](crate::kernel::weq_act::WeqActResult) record on the device, so
//! calibration and forward can share one command stream. CPU twin:
//! `src/cpu/weq_act_forward.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader};
use super::elementwise::for_each_chunk;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use super::weq_act_histogram::{TABLES_BINDING, WEQ_ACT_WGSL, bind_whole, tables_buffer};
use super::weq_act_sweep::RECORD_WORDS;
use crate::error::{Error, Result};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "weq_act_forward",
    parts: &[
        COMMON_WGSL,
        WEQ_ACT_WGSL,
        include_str!("../../shaders/weq_act_forward.wgsl"),
    ],
};

/// Uniform parameters; mirrors `WeqActForwardParams` in weq_act_forward.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqActForwardParams {
    /// Elements in the dispatch.
    pub n: u32,
    /// First element in the bound input window.
    pub base: u32,
    /// First element in the bound output window (outputs may start at any 4-byte offset).
    pub out_base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    /// Non-zero levels L − 1.
    pub levels: u32,
    pub _pad: [u32; 3],
}
const _: () = assert!(std::mem::size_of::<WeqActForwardParams>() == 32);

/// Records `y = x̂` at `bits` for the step and offset in `record` (whose step must be even
/// and non-zero: the sweep's output always is). `x` and `y` are f32 of one length.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    bits: u32,
    record: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    if !(1..=8).contains(&bits) {
        return Err(Error::param("weq_act_forward", format!("{bits} bits")));
    }
    if record.numel() != RECORD_WORDS {
        return Err(Error::shape(
            "weq_act_forward",
            "one WeqActResult record is needed",
        ));
    }
    if x.overlaps(y) {
        return Err(Error::param("weq_act_forward", "input and output overlap"));
    }
    let pipeline = ctx.pipeline(&SHADER, "forward")?;
    let tables = tables_buffer(ctx);
    if x.numel() != y.numel() {
        return Err(Error::shape(
            "weq_act_forward",
            format!("{} outputs for {} inputs", y.numel(), x.numel()),
        ));
    }
    y.expect_dtype("weq_act_forward", ElemType::F32)?;
    for_each_chunk(ctx, "weq_act_forward", &[x], |c| {
        let out = window_for(ctx, y.offset(), &(c.first..c.first + u64::from(c.n)), 4)?;
        let params = WeqActForwardParams {
            n: c.n,
            base: c.base,
            out_base: out.base,
            num_workgroups: c.workgroups,
            levels: (1 << bits) - 1,
            _pad: [0; 3],
        };
        let uniform = ctx.uniform("weq_act_forward params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, c.windows[0].bind(x.buffer())),
            (2, bind_whole(ctx, "weq_act_forward", record)?),
            (3, out.bind(y.buffer())),
            (TABLES_BINDING, tables.as_entire_binding()),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, c.workgroups)
    })
}

/// [`encode`], submitted and waited for, into `y`.
pub fn weq_act_forward(
    ctx: &Context,
    bits: u32,
    record: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    ctx.run("weq_act_forward", |enc| {
        encode(ctx, enc, bits, record, x, y)
    })
}
