//! Launcher for `shaders/weq_act_histogram.wgsl`: the 1024-bin histogram of
//! k = floor(16·log2 x) of the weighted-entropy log quantizer of activations (with the counts
//! of x ≤ 0 and of non-finite values), by integer atomics. Also owns the shared WGSL
//! (`shaders/weq_act.wgsl`) and its lookup-table buffer. CPU twin:
//! `src/cpu/weq_act_histogram.rs`.

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::elementwise::for_each_chunk;
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use crate::error::{Error, Result};
use crate::kernel::weq_act::{HIST_WORDS, tables};

/// `shaders/weq_act.wgsl`: numerics shared by the activation kernels.
pub(crate) const WEQ_ACT_WGSL: &str = include_str!("../../shaders/weq_act.wgsl");

/// Binding of the lookup tables in every activation kernel (`act_tables`).
pub(crate) const TABLES_BINDING: u32 = 7;

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "weq_act_histogram",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        WEQ_ACT_WGSL,
        include_str!("../../shaders/weq_act_histogram.wgsl"),
    ],
};

/// Uniform parameters; mirrors `WeqActHistogramParams` in weq_act_histogram.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqActHistogramParams {
    /// Elements in the dispatch.
    pub len: u32,
    /// First element in the bound values window.
    pub base: u32,
    /// Workgroups in the dispatch.
    pub num_workgroups: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<WeqActHistogramParams>() == 16);

/// Elements one workgroup bins (`ELEMS_PER_THREAD` × 256 in the WGSL).
const ELEMS_PER_WORKGROUP: u32 = 16 * WORKGROUP_SIZE;

/// The lookup tables of `shaders/weq_act.wgsl` as a storage buffer.
pub(crate) fn tables_buffer(ctx: &Context) -> wgpu::Buffer {
    ctx.storage_init("weq_act tables", &tables().words)
}

/// A binding of all of a small tensor that a kernel indexes from 0 (ranges, histograms,
/// records): its offset must be a multiple of the device's storage offset alignment.
pub(crate) fn bind_whole<'a>(
    ctx: &Context,
    op: &str,
    t: &'a GpuTensor,
) -> Result<wgpu::BindingResource<'a>> {
    let w = window_for(ctx, t.offset(), &(0..t.numel() as u64), 4)?;
    if w.base != 0 {
        return Err(Error::param(
            op,
            format!(
                "a tensor at byte offset {} is not aligned to the device's storage offset alignment",
                t.offset()
            ),
        ));
    }
    Ok(w.bind(t.buffer()))
}

/// A zeroed histogram ([`HIST_WORDS`] words).
pub fn hist_tensor(ctx: &Context) -> Result<GpuTensor> {
    GpuTensor::zeros(ctx, &[HIST_WORDS], ElemType::U32)
}

/// Records the histogram of `input` (f32), whose range (one `GroupRange`, from minmax over
/// the whole tensor) is in `range`, into `hist` (cleared first).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    range: &GpuTensor,
    hist: &GpuTensor,
) -> Result<()> {
    if range.byte_len() != 16 || hist.numel() != HIST_WORDS {
        return Err(Error::shape(
            "weq_act_histogram",
            "one GroupRange and a histogram of HIST_WORDS words are needed",
        ));
    }
    if input.numel() as u64 >= u64::from(u32::MAX) {
        return Err(Error::param(
            "weq_act_histogram",
            format!("{} elements exceed 2^32 − 1", input.numel()),
        ));
    }
    encoder.clear_buffer(hist.buffer(), hist.offset(), Some(hist.byte_len()));
    let pipeline = ctx.pipeline(&SHADER, "histogram")?;
    let tables = tables_buffer(ctx);
    for_each_chunk(ctx, "weq_act_histogram", &[input], |c| {
        let params = WeqActHistogramParams {
            len: c.n,
            base: c.base,
            num_workgroups: c.n.div_ceil(ELEMS_PER_WORKGROUP),
            _pad: 0,
        };
        let uniform = ctx.uniform("weq_act_histogram params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, c.windows[0].bind(input.buffer())),
            (2, bind_whole(ctx, "weq_act_histogram", range)?),
            (3, bind_whole(ctx, "weq_act_histogram", hist)?),
            (TABLES_BINDING, tables.as_entire_binding()),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)
    })
}

/// [`encode`], submitted and waited for: the histogram words on the host.
pub fn weq_act_histogram(ctx: &Context, input: &GpuTensor, range: &GpuTensor) -> Result<Vec<u32>> {
    let hist = hist_tensor(ctx)?;
    ctx.run("weq_act_histogram", |enc| {
        encode(ctx, enc, input, range, &hist)
    })?;
    hist.download(ctx)
}
