//! Launcher for `shaders/weq_act_sweep.wgsl`: the parallel search over (half step, offset)
//! pairs of the weighted-entropy log quantizer of activations, one thread per pair, scored
//! from the histogram of `weq_act_histogram`, reduced in fixed order to one [`WeqActResult`]
//! record on the device. CPU twin: `src/cpu/weq_act_sweep.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::weq_act_histogram::{TABLES_BINDING, WEQ_ACT_WGSL, bind_whole, tables_buffer};
use crate::error::{Error, Result};
use crate::kernel::weq_act::{HIST_WORDS, PAIRS, WeqActResult};

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "weq_act_sweep",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        WEQ_ACT_WGSL,
        include_str!("../../shaders/weq_act_sweep.wgsl"),
    ],
};

/// Uniform parameters; mirrors `WeqActSweepParams` in weq_act_sweep.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqActSweepParams {
    /// Non-zero levels L − 1.
    pub levels: u32,
    /// (h, o) pairs.
    pub pairs: u32,
    /// Workgroups of the `sweep` entry (one winner each).
    pub partials: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<WeqActSweepParams>() == 16);

/// Words of a [`WeqActResult`] record.
pub const RECORD_WORDS: usize = std::mem::size_of::<WeqActResult>() / 4;

/// A zeroed record tensor (one [`WeqActResult`]).
pub fn record_tensor(ctx: &Context) -> Result<GpuTensor> {
    GpuTensor::zeros(ctx, &[RECORD_WORDS], ElemType::U32)
}

/// Records the search at `bits` over the histogram `hist` (from `weq_act_histogram`) of a
/// batch whose range is `range`, writing the chosen pair into `record`.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    hist: &GpuTensor,
    range: &GpuTensor,
    bits: u32,
    record: &GpuTensor,
) -> Result<()> {
    if !(1..=8).contains(&bits) {
        return Err(Error::param("weq_act_sweep", format!("{bits} bits")));
    }
    if hist.numel() != HIST_WORDS || range.byte_len() != 16 || record.numel() != RECORD_WORDS {
        return Err(Error::shape(
            "weq_act_sweep",
            "a histogram of HIST_WORDS words, one GroupRange and one record are needed",
        ));
    }
    let workgroups = PAIRS.div_ceil(WORKGROUP_SIZE);
    let params = WeqActSweepParams {
        levels: (1 << bits) - 1,
        pairs: PAIRS,
        partials: workgroups,
        _pad: 0,
    };
    let partials = GpuTensor::zeros(ctx, &[workgroups as usize * 4], ElemType::U32)?;
    let tables = tables_buffer(ctx);
    let uniform = ctx.uniform("weq_act_sweep params", &params);
    let op = "weq_act_sweep";
    let bindings = [
        (0, uniform.as_entire_binding()),
        (1, bind_whole(ctx, op, range)?),
        (2, bind_whole(ctx, op, hist)?),
        (3, bind_whole(ctx, op, &partials)?),
        (TABLES_BINDING, tables.as_entire_binding()),
    ];
    ctx.dispatch(
        encoder,
        &ctx.pipeline(&SHADER, "sweep")?,
        &bindings,
        workgroups,
    )?;
    let bindings = [
        (0, uniform.as_entire_binding()),
        (1, bind_whole(ctx, op, range)?),
        (2, bind_whole(ctx, op, hist)?),
        (3, bind_whole(ctx, op, &partials)?),
        (4, bind_whole(ctx, op, record)?),
        (TABLES_BINDING, tables.as_entire_binding()),
    ];
    ctx.dispatch(encoder, &ctx.pipeline(&SHADER, "finish")?, &bindings, 1)
}

/// [`encode`], submitted and waited for: the record on the host.
pub fn weq_act_sweep(
    ctx: &Context,
    hist: &GpuTensor,
    range: &GpuTensor,
    bits: u32,
) -> Result<WeqActResult> {
    let record = record_tensor(ctx)?;
    ctx.run("weq_act_sweep", |enc| {
        encode(ctx, enc, hist, range, bits, &record)
    })?;
    let out: Vec<WeqActResult> = record.download(ctx)?;
    out.first()
        .copied()
        .ok_or_else(|| Error::shape("weq_act_sweep", "empty record"))
}
