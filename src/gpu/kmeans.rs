//! Launcher for `shaders/kmeans.wgsl`: the update half of a 1-D k-means iteration (Deep
//! Compression's weight sharing) after a `codebook_assign` pass, and the per-cluster sums of
//! any values (the centroid fine-tuning gradient). Deterministic: every thread sums its own run
//! of elements into its own record and the records are added in fixed order, no float
//! atomics. CPU twin: `src/cpu/kmeans.rs`.

use super::codebook_assign;
use super::context::Context;
use super::dispatch::{self, COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::UNPACK_WGSL;
use super::tensor::{ElemType, GpuTensor};
use crate::affine::AffineSegment;
use crate::error::{Error, Result};
use crate::format::pack;

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "kmeans",
    parts: &[
        COMMON_WGSL,
        UNPACK_WGSL,
        include_str!("../../shaders/kmeans.wgsl"),
    ],
};

/// Uniform parameters; mirrors `KmeansParams` in kmeans.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct KmeansParams {
    /// `kmeans_partials`: elements of the dispatch.
    pub len: u32,
    /// Index of the dispatch's first element in the bound values.
    pub elem_base: u32,
    /// Word of that element in the bound codes (and old codes).
    pub code_base: u32,
    /// Word of that element in the bound keep-mask.
    pub mask_base: u32,
    /// k = 2^bits.
    pub clusters: u32,
    /// Bits per code.
    pub bits: u32,
    /// [`MASKED`], [`COUNT_CHANGES`], [`WRITE_SUMS`].
    pub flags: u32,
    /// Workgroups of the dispatch.
    pub num_workgroups: u32,
    /// Record of the dispatch's first thread (partials) or first cluster (update).
    pub thread_base: u32,
    /// `kmeans_update`/`kmeans_thresholds`: thread records in all.
    pub threads: u32,
    /// Elements per thread of `kmeans_partials`.
    pub elems_per_thread: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<KmeansParams>() == 48);

/// Skip elements the keep-mask drops.
pub const MASKED: u32 = 1;
/// Count codes that differ from the previous assignment.
pub const COUNT_CHANGES: u32 = 2;
/// Write per-cluster sums instead of means.
pub const WRITE_SUMS: u32 = 4;

/// Most clusters the shader's per-thread accumulators hold (8-bit codes).
pub const MAX_BITS: u32 = 8;

/// Elements per thread: at least 256 (a thread's record costs no more than its loads), and
/// 16 per cluster so the records stay at most half a byte per element.
pub fn elems_per_thread(bits: u32) -> u32 {
    (16u32 << bits).max(256)
}

/// Thread records of `kmeans_partials` for `n` elements.
pub fn threads_for(n: usize, bits: u32) -> usize {
    n.div_ceil(elems_per_thread(bits) as usize)
}

/// Scratch of a k-means on the device: per-thread cluster records, changed counts, status.
#[derive(Clone, Debug)]
pub struct KmeansScratch {
    /// `threads × k` records of (sum f32, count u32).
    pub partials: GpuTensor,
    /// Changed codes per thread.
    pub changed: GpuTensor,
    /// `[changed codes in all, 0, 0, 0]` after `kmeans_thresholds`.
    pub status: GpuTensor,
    n: usize,
    bits: u32,
}

impl KmeansScratch {
    /// Scratch for `n` elements of `bits`-bit codes.
    pub fn new(ctx: &Context, n: usize, bits: u32) -> Result<Self> {
        if !(1..=MAX_BITS).contains(&bits) {
            return Err(Error::param(
                "kmeans",
                format!("bits {bits} outside 1..={MAX_BITS}"),
            ));
        }
        let threads = threads_for(n, bits).max(1);
        Ok(Self {
            partials: GpuTensor::zeros(ctx, &[threads << bits, 2], ElemType::U32)?,
            changed: GpuTensor::zeros(ctx, &[threads], ElemType::U32)?,
            status: GpuTensor::zeros(ctx, &[4], ElemType::U32)?,
            n,
            bits,
        })
    }

    fn threads(&self) -> u32 {
        threads_for(self.n, self.bits) as u32
    }
}

/// Records per-cluster sums and counts of `values` grouped by their `codes` (kept elements
/// only when `mask` is given; codes that differ from `old_codes` counted when given) into
/// `scratch`.
pub fn encode_partials(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    values: &GpuTensor,
    codes: &GpuTensor,
    mask: Option<&GpuTensor>,
    old_codes: Option<&GpuTensor>,
    scratch: &KmeansScratch,
) -> Result<()> {
    let (n, bits) = (scratch.n, scratch.bits);
    values.expect_dtype("kmeans", ElemType::F32)?;
    let words = pack::packed_words(n, bits);
    if values.numel() != n
        || codes.numel() != words
        || old_codes.is_some_and(|o| o.numel() != words)
        || mask.is_some_and(|m| m.numel() != pack::packed_words(n, 1))
    {
        return Err(Error::shape(
            "kmeans",
            "values, codes and mask must cover the same elements",
        ));
    }
    let pipeline = ctx.pipeline(&SHADER, "kmeans_partials")?;
    let per = elems_per_thread(bits);
    let dummy = ctx.storage_init("kmeans unused", &[0u32]);
    let partials_w = dispatch::window(
        ctx,
        scratch.partials.offset(),
        0,
        scratch.partials.numel() as u64,
    )?;
    let changed_w = dispatch::window(
        ctx,
        scratch.changed.offset(),
        0,
        scratch.changed.numel() as u64,
    )?;
    let flags = mask.map_or(0, |_| MASKED) | old_codes.map_or(0, |_| COUNT_CHANGES);
    let granule = u64::from(per) * u64::from(WORKGROUP_SIZE);
    for chunk in dispatch::chunks(ctx, n as u64, granule) {
        let len = chunk.end - chunk.start;
        let values_w = dispatch::window(ctx, values.offset(), chunk.start, len)?;
        let word0 = chunk.start * u64::from(bits) / 32;
        let code_words = (len * u64::from(bits)).div_ceil(32);
        let codes_w = dispatch::window(ctx, codes.offset(), word0, code_words)?;
        let old_w = match old_codes {
            Some(o) => Some(dispatch::window(ctx, o.offset(), word0, code_words)?),
            None => None,
        };
        if old_w.is_some_and(|w| w.base != codes_w.base) {
            return Err(Error::param(
                "kmeans",
                "codes and old codes must share their offset alignment",
            ));
        }
        let mask_w = match mask {
            Some(m) => Some(dispatch::window(
                ctx,
                m.offset(),
                chunk.start / 32,
                len.div_ceil(32),
            )?),
            None => None,
        };
        let threads = len.div_ceil(u64::from(per));
        let params = KmeansParams {
            len: len as u32,
            elem_base: values_w.base,
            code_base: codes_w.base,
            mask_base: mask_w.map_or(0, |w| w.base),
            clusters: 1 << bits,
            bits,
            flags,
            num_workgroups: threads.div_ceil(u64::from(WORKGROUP_SIZE)) as u32,
            thread_base: (chunk.start / u64::from(per)) as u32,
            elems_per_thread: per,
            ..Default::default()
        };
        let uniform = ctx.uniform("kmeans params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, values_w.bind(values.buffer())),
            (2, codes_w.bind(codes.buffer())),
            (
                3,
                match (old_codes, old_w) {
                    (Some(o), Some(w)) => w.bind(o.buffer()),
                    _ => dummy.as_entire_binding(),
                },
            ),
            (
                4,
                match (mask, mask_w) {
                    (Some(m), Some(w)) => w.bind(m.buffer()),
                    _ => dummy.as_entire_binding(),
                },
            ),
            (5, partials_w.bind(scratch.partials.buffer())),
            (6, changed_w.bind(scratch.changed.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
    }
    Ok(())
}

/// Records the per-cluster totals of `scratch`'s records into `centroids` (k f32): the mean
/// of each non-empty cluster (empty ones keep their centroid), or with `sums` the sum.
pub fn encode_update(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scratch: &KmeansScratch,
    centroids: &GpuTensor,
    sums: bool,
) -> Result<()> {
    let k = 1u32 << scratch.bits;
    if centroids.numel() != k as usize {
        return Err(Error::shape(
            "kmeans",
            format!("{} centroids for k = {k}", centroids.numel()),
        ));
    }
    let pipeline = ctx.pipeline(&SHADER, "kmeans_update")?;
    let params = KmeansParams {
        clusters: k,
        bits: scratch.bits,
        flags: if sums { WRITE_SUMS } else { 0 },
        num_workgroups: k,
        threads: scratch.threads(),
        ..Default::default()
    };
    let uniform = ctx.uniform("kmeans update params", &params);
    let partials_w = dispatch::window(
        ctx,
        scratch.partials.offset(),
        0,
        scratch.partials.numel() as u64,
    )?;
    let centroids_w = dispatch::window(ctx, centroids.offset(), 0, u64::from(k))?;
    if partials_w.base != 0 || centroids_w.base != 0 {
        return Err(Error::param(
            "kmeans",
            "scratch and centroids must start on a binding boundary",
        ));
    }
    let bindings = [
        (0, uniform.as_entire_binding()),
        (5, partials_w.bind(scratch.partials.buffer())),
        (7, centroids_w.bind(centroids.buffer())),
    ];
    ctx.dispatch(encoder, &pipeline, &bindings, k)
}

/// Records the nearest-centroid thresholds of `centroids` into `thresholds` (k f32, the last
/// +inf) and the total of changed codes into `scratch.status[0]`.
pub fn encode_thresholds(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scratch: &KmeansScratch,
    centroids: &GpuTensor,
    thresholds: &GpuTensor,
) -> Result<()> {
    let k = 1u32 << scratch.bits;
    if centroids.numel() != k as usize || thresholds.numel() != k as usize {
        return Err(Error::shape(
            "kmeans",
            "centroids and thresholds need k entries",
        ));
    }
    let pipeline = ctx.pipeline(&SHADER, "kmeans_thresholds")?;
    let params = KmeansParams {
        clusters: k,
        bits: scratch.bits,
        num_workgroups: 1,
        threads: scratch.threads(),
        ..Default::default()
    };
    let uniform = ctx.uniform("kmeans thresholds params", &params);
    let whole = |t: &GpuTensor| dispatch::window(ctx, t.offset(), 0, t.numel() as u64);
    let (changed_w, centroids_w, thresholds_w, status_w) = (
        whole(&scratch.changed)?,
        whole(centroids)?,
        whole(thresholds)?,
        whole(&scratch.status)?,
    );
    if [
        changed_w.base,
        centroids_w.base,
        thresholds_w.base,
        status_w.base,
    ] != [0; 4]
    {
        return Err(Error::param(
            "kmeans",
            "k-means tensors must start on a binding boundary",
        ));
    }
    let bindings = [
        (0, uniform.as_entire_binding()),
        (6, changed_w.bind(scratch.changed.buffer())),
        (7, centroids_w.bind(centroids.buffer())),
        (8, thresholds_w.bind(thresholds.buffer())),
        (9, status_w.bind(scratch.status.buffer())),
    ];
    ctx.dispatch(encoder, &pipeline, &bindings, 1)
}

/// Device state of a running k-means over one tensor.
#[derive(Clone, Debug)]
pub struct KmeansState {
    /// Sorted centroids (k f32).
    pub centroids: GpuTensor,
    /// Their midpoints (k f32, the last +inf).
    pub thresholds: GpuTensor,
    /// Codes of the latest assignment.
    pub codes: GpuTensor,
    /// Codes of the one before.
    pub old_codes: GpuTensor,
    /// Scratch.
    pub scratch: KmeansScratch,
}

impl KmeansState {
    /// State for `n` elements starting from `centroids` (k sorted values) and their
    /// `thresholds` (midpoints, the last +inf).
    pub fn new(
        ctx: &Context,
        n: usize,
        bits: u32,
        centroids: &[f32],
        thresholds: &[f32],
    ) -> Result<Self> {
        if centroids.len() != 1usize << bits || thresholds.len() != centroids.len() {
            return Err(Error::shape(
                "kmeans",
                format!("{} initial centroids for {bits} bits", centroids.len()),
            ));
        }
        let words = pack::packed_words(n, bits).max(1);
        Ok(Self {
            centroids: GpuTensor::from_f32(ctx, centroids, &[centroids.len()])?,
            thresholds: GpuTensor::from_f32(ctx, thresholds, &[thresholds.len()])?,
            codes: GpuTensor::zeros(ctx, &[words], ElemType::U32)?,
            old_codes: GpuTensor::zeros(ctx, &[words], ElemType::U32)?,
            scratch: KmeansScratch::new(ctx, n, bits)?,
        })
    }

    /// Records one iteration: assignment (`codebook_assign` with the current thresholds),
    /// per-cluster sums, new centroids and thresholds. Codes that changed are counted unless
    /// `first`. Swaps `codes` and `old_codes` first, so `codes` holds the new assignment.
    pub fn encode_iteration(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        values: &GpuTensor,
        mask: Option<&GpuTensor>,
        first: bool,
    ) -> Result<()> {
        std::mem::swap(&mut self.codes, &mut self.old_codes);
        let (n, bits) = (self.scratch.n, self.scratch.bits);
        let seg = AffineSegment::codebook(n, n.max(1), bits);
        let codes = self.codes.slice(0, &[pack::packed_words(n, bits)])?;
        let old = self.old_codes.slice(0, &[pack::packed_words(n, bits)])?;
        codebook_assign::encode(ctx, encoder, values, &codes, &self.thresholds, &[seg])?;
        encode_partials(
            ctx,
            encoder,
            values,
            &codes,
            mask,
            (!first).then_some(&old),
            &self.scratch,
        )?;
        encode_update(ctx, encoder, &self.scratch, &self.centroids, false)?;
        encode_thresholds(
            ctx,
            encoder,
            &self.scratch,
            &self.centroids,
            &self.thresholds,
        )
    }
}
