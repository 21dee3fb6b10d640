//! Launch plumbing shared by the batched segment kernels (fake_quant, quantize_pack,
//! dequantize, codebook): split segments into chunks that fit one binding, group chunks into
//! dispatches whose input, output and per-group parameter ranges each fit a binding window,
//! rebase the records into those windows and dispatch. `shaders/segments.wgsl` is its WGSL
//! half.

use super::context::Context;
use super::dispatch::{self, Shader, Window};
use super::tensor::GpuTensor;
pub use crate::affine::Layout;
use crate::affine::{AffineSegment, check_segments};
use crate::error::{Error, Result};

/// Uniform parameters of every segment kernel; mirrors `SegmentParams` in segments.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SegmentParams {
    /// Records in the segment table.
    pub num_segments: u32,
    /// Workgroups the dispatch covers (the folded grid may have a few more).
    pub num_workgroups: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}
const _: () = assert!(std::mem::size_of::<SegmentParams>() == 16);

/// The per-kernel facts the shared launcher needs.
pub struct SegmentKernel {
    /// The composed WGSL.
    pub shader: Shader,
    /// Entry point.
    pub entry: &'static str,
    /// How the input side is addressed.
    pub src: Layout,
    /// How the output side is addressed.
    pub dst: Layout,
    /// Workgroups one chunk needs.
    pub workgroups: fn(&AffineSegment) -> u32,
}

/// A per-group parameter tensor of a segment kernel: `per_group` consecutive elements for
/// each group (1 for scales and zero points, the codebook size for levels), a power of two.
pub struct ParamBinding<'a> {
    /// Binding number in the kernel.
    pub binding: u32,
    /// The tensor.
    pub tensor: &'a GpuTensor,
    /// Its element type.
    pub dtype: super::tensor::ElemType,
    /// Elements per group.
    pub per_group: u64,
}

/// The tensors bound to a segment kernel. `src == None` runs the kernel in place on `dst`.
pub struct SegmentBuffers<'a> {
    /// Per-group parameters, indexed in the shader by `segment_group(..) * per_group`.
    pub params: Vec<ParamBinding<'a>>,
    /// Input; `None` for in place.
    pub src: Option<&'a GpuTensor>,
    /// Output.
    pub dst: &'a GpuTensor,
}

/// Chunks never split a packed word: a multiple of 32 elements starts a word at any width.
const CHUNK_GRANULE: u64 = 32;

/// The fewest elements any segment kernel covers per workgroup (256 threads, at least one
/// element each).
const MIN_ELEMS_PER_WORKGROUP: u64 = 256;

/// Splits one segment into pieces no longer than `max_len` elements (a multiple of 32).
fn split(seg: &AffineSegment, kernel: &SegmentKernel, max_len: u64) -> Vec<AffineSegment> {
    let mut out = Vec::new();
    let len = u64::from(seg.len);
    let mut a = 0u64;
    while a < len {
        let b = (a + max_len).min(len);
        let phase = u64::from(seg.group_phase) + a;
        let group_len = u64::from(seg.group_len);
        out.push(AffineSegment {
            src: seg.src + kernel.src.span(seg, a) as u32,
            dst: seg.dst + kernel.dst.span(seg, a) as u32,
            len: (b - a) as u32,
            group_phase: (phase % group_len) as u32,
            param: seg.param + (phase / group_len) as u32,
            ..*seg
        });
        a = b;
    }
    out
}

/// Unit ranges (input, output, parameters) a chunk touches.
fn ranges(seg: &AffineSegment, kernel: &SegmentKernel) -> [(u64, u64); 3] {
    seg.ranges(kernel.src, kernel.dst)
}

/// Records `segments` into `encoder` as few dispatches as the binding limits allow.
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: &SegmentKernel,
    bufs: &SegmentBuffers<'_>,
    segments: &[AffineSegment],
) -> Result<()> {
    let op = kernel.shader.name;
    check_buffers(op, kernel, bufs, segments)?;
    let pipeline = ctx.pipeline(&kernel.shader, kernel.entry)?;
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4)) / 4;
    // Units that fit one binding with room for the alignment slack of its window.
    let budget = (ctx.work_limits().max_binding_bytes / 4)
        .checked_sub(align)
        .filter(|b| *b >= CHUNK_GRANULE)
        .ok_or_else(|| {
            Error::param(op, "the binding limit is smaller than the offset alignment")
        })?;
    // Workgroups one dispatch can have; every segment kernel covers at least
    // MIN_ELEMS_PER_WORKGROUP elements per workgroup, so chunks this long always fit.
    let max_wg = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
    let grid_len = max_wg * MIN_ELEMS_PER_WORKGROUP;
    let max_len = (budget.min(grid_len) / CHUNK_GRANULE * CHUNK_GRANULE).max(CHUNK_GRANULE);

    let mut batch: Vec<AffineSegment> = Vec::new();
    let mut span: [(u64, u64); 3] = [(u64::MAX, 0); 3];
    let mut workgroups = 0u64;
    for seg in segments.iter().filter(|s| s.len > 0) {
        for chunk in split(seg, kernel, max_len) {
            let r = ranges(&chunk, kernel);
            let wg = u64::from((kernel.workgroups)(&chunk));
            let merged: [(u64, u64); 3] =
                std::array::from_fn(|k| (span[k].0.min(r[k].0), span[k].1.max(r[k].1)));
            let too_wide = merged.iter().any(|&(a, b)| b - a > budget);
            if !batch.is_empty() && (too_wide || workgroups + wg > max_wg) {
                flush(ctx, encoder, kernel, &pipeline, bufs, &batch, span)?;
                batch.clear();
                span = r;
                workgroups = 0;
            } else {
                span = merged;
            }
            workgroups += wg;
            batch.push(chunk);
        }
    }
    if !batch.is_empty() {
        flush(ctx, encoder, kernel, &pipeline, bufs, &batch, span)?;
    }
    Ok(())
}

fn check_buffers(
    op: &str,
    kernel: &SegmentKernel,
    bufs: &SegmentBuffers<'_>,
    segments: &[AffineSegment],
) -> Result<()> {
    use super::tensor::ElemType;
    for p in &bufs.params {
        p.tensor.expect_dtype(op, p.dtype)?;
        if !p.per_group.is_power_of_two() {
            return Err(Error::param(
                op,
                format!("{} parameters per group", p.per_group),
            ));
        }
    }
    let dtype_of = |l: Layout| match l {
        Layout::Elements => ElemType::F32,
        Layout::Packed => ElemType::U32,
    };
    bufs.dst.expect_dtype(op, dtype_of(kernel.dst))?;
    if let Some(src) = bufs.src {
        src.expect_dtype(op, dtype_of(kernel.src))?;
        if src.overlaps(bufs.dst) {
            return Err(Error::param(
                op,
                "input and output overlap (use the in-place form)",
            ));
        }
    }
    if bufs.src.is_none()
        && let Some(seg) = segments.iter().find(|s| s.src != s.dst)
    {
        return Err(Error::param(
            op,
            format!("in-place segment {seg:?} has src != dst"),
        ));
    }
    let src_len = bufs.src.unwrap_or(bufs.dst).numel();
    let params_len = bufs
        .params
        .iter()
        .map(|p| p.tensor.numel() / p.per_group as usize)
        .min()
        .unwrap_or(usize::MAX);
    check_segments(
        op,
        segments,
        (kernel.src, src_len),
        (kernel.dst, bufs.dst.numel()),
        params_len,
    )
}

/// Binds windows covering `span`, rebases the batch into them and dispatches it.
fn flush(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: &SegmentKernel,
    pipeline: &wgpu::ComputePipeline,
    bufs: &SegmentBuffers<'_>,
    batch: &[AffineSegment],
    span: [(u64, u64); 3],
) -> Result<()> {
    let win = |t: &GpuTensor, (a, b): (u64, u64)| dispatch::window(ctx, t.offset(), a, b - a);
    let src_t = bufs.src.unwrap_or(bufs.dst);
    let src_w: Window = win(src_t, span[0])?;
    let dst_w: Window = win(bufs.dst, span[1])?;
    // Every parameter window must start the same whole number of groups before the first
    // group used, because the shader indexes them all with one group index.
    let mut param_ws = Vec::with_capacity(bufs.params.len());
    let mut group_base: Option<u32> = None;
    for p in &bufs.params {
        let (a, b) = span[2];
        let w = win(p.tensor, (a * p.per_group, b * p.per_group))?;
        let base = u64::from(w.base);
        if base % p.per_group != 0 || group_base.is_some_and(|g| u64::from(g) != base / p.per_group)
        {
            return Err(Error::param(
                kernel.shader.name,
                "parameter tensors must start at the same offset modulo the binding alignment",
            ));
        }
        group_base = Some((base / p.per_group) as u32);
        param_ws.push(w);
    }
    let group_base = group_base.unwrap_or(0);
    let mut starts = Vec::with_capacity(batch.len());
    let mut total = 0u32;
    let records: Vec<AffineSegment> = batch
        .iter()
        .map(|c| {
            starts.push(total);
            total += (kernel.workgroups)(c);
            AffineSegment {
                src: c.src - span[0].0 as u32 + src_w.base,
                dst: c.dst - span[1].0 as u32 + dst_w.base,
                param: c.param - span[2].0 as u32 + group_base,
                ..*c
            }
        })
        .collect();
    let params = SegmentParams {
        num_segments: records.len() as u32,
        num_workgroups: total,
        _pad0: 0,
        _pad1: 0,
    };
    let uniform = ctx.uniform("segment params", &params);
    let seg_buf = ctx.storage_init("segments", &records);
    let start_buf = ctx.storage_init("segment starts", &starts);
    let mut bindings = vec![
        (0, uniform.as_entire_binding()),
        (1, seg_buf.as_entire_binding()),
        (2, start_buf.as_entire_binding()),
    ];
    for (p, w) in bufs.params.iter().zip(&param_ws) {
        bindings.push((p.binding, w.bind(p.tensor.buffer())));
    }
    if let Some(src) = bufs.src {
        bindings.push((5, src_w.bind(src.buffer())));
    }
    bindings.push((6, dst_w.bind(bufs.dst.buffer())));
    ctx.dispatch(encoder, pipeline, &bindings, total)
}

/// `shaders/affine.wgsl`: the quantizer numerics.
pub(crate) const AFFINE_WGSL: &str = include_str!("../../shaders/affine.wgsl");
/// `shaders/segments.wgsl`: the segment table and its lookup.
pub(crate) const SEGMENTS_WGSL: &str = include_str!("../../shaders/segments.wgsl");
/// `shaders/pack.wgsl`: building one packed word.
pub(crate) const PACK_WGSL: &str = include_str!("../../shaders/pack.wgsl");
/// `shaders/unpack.wgsl`: reading one packed code.
pub(crate) const UNPACK_WGSL: &str = include_str!("../../shaders/unpack.wgsl");

/// Workgroups for a kernel where each thread handles `per_thread` elements.
pub(crate) fn elementwise_workgroups<const PER_THREAD: u32>(seg: &AffineSegment) -> u32 {
    seg.len
        .div_ceil(super::dispatch::WORKGROUP_SIZE * PER_THREAD)
}

/// The scale (binding 3, f32) and zero-point (binding 4, i32) parameters of the affine kernels.
pub(crate) fn affine_params<'a>(
    scale: &'a GpuTensor,
    zero: &'a GpuTensor,
) -> Vec<ParamBinding<'a>> {
    use super::tensor::ElemType;
    vec![
        ParamBinding {
            binding: 3,
            tensor: scale,
            dtype: ElemType::F32,
            per_group: 1,
        },
        ParamBinding {
            binding: 4,
            tensor: zero,
            dtype: ElemType::I32,
            per_group: 1,
        },
    ]
}
