//! Launcher for `shaders/kmeans.wgsl`: the update half of a 1-D k-means iteration (Deep
//! Compression's weight sharing) after a `codebook_assign` pass, and the per-cluster sums of
//! any values (the centroid fine-tuning gradient). Deterministic: every thread sums its own
//! share of the elements into its own record, and the records are added in fixed order
//! (windows of them in order when they exceed a binding); no float atomics. The order of every
//! f32 addition depends on the workgroup size and [`elems_per_thread`] only, never on device
//! limits: a workgroup too wide for a binding is split over dispatches that extend its threads'
//! records, and record windows extend the lanes' running sums, so the CPU twin
//! (`src/cpu/kmeans.rs`) reproduces the sums bit for bit.

use super::context::Context;
use super::dispatch::{self, COMMON_WGSL, Shader, WORKGROUP_SIZE};
use super::segments::UNPACK_WGSL;
use super::tensor::{ElemType, GpuTensor};
use crate::error::{Error, Result};
use crate::format::pack;
pub use crate::kernel::kmeans::elems_per_thread;

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
    /// [`MASKED`], [`COUNT_CHANGES`], [`WRITE_SUMS`], [`FIRST_WINDOW`], [`LAST_WINDOW`],
    /// [`ACCUMULATE`].
    pub flags: u32,
    /// Workgroups of the dispatch.
    pub num_workgroups: u32,
    /// Record of the dispatch's (window's) first thread in the bound records.
    pub rec_base: u32,
    /// Its changed count in the bound counts.
    pub changed_base: u32,
    /// `kmeans_update`: threads in the window.
    pub threads: u32,
    /// Elements per thread of `kmeans_partials`.
    pub elems_per_thread: u32,
    /// `kmeans_update`: the dispatch's first cluster.
    pub cluster_first: u32,
    /// `kmeans_update`: lane record of that cluster's lane 0 in the bound lane sums.
    pub lane_base: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<KmeansParams>() == 64);

/// Skip elements the keep-mask drops.
pub const MASKED: u32 = 1;
/// Count codes that differ from the previous assignment.
pub const COUNT_CHANGES: u32 = 2;
/// Write per-cluster sums instead of means.
pub const WRITE_SUMS: u32 = 4;
/// The first window of records starts the lanes' running sums.
pub const FIRST_WINDOW: u32 = 8;
/// The last window of records: the lanes are combined into the totals.
pub const LAST_WINDOW: u32 = 16;
/// `kmeans_partials` extends the threads' records (a later part of a split workgroup).
pub const ACCUMULATE: u32 = 32;

/// Most clusters the shader's per-thread accumulators hold (8-bit codes).
pub const MAX_BITS: u32 = 8;

/// Bytes of one (sum, count) record.
const RECORD_BYTES: u64 = 8;

/// Words of a binding, less the slack an unaligned window may need.
fn binding_words(ctx: &Context) -> u64 {
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    ctx.work_limits().max_binding_bytes.saturating_sub(align) / 4
}

/// One `kmeans_partials` dispatch: `len` elements from `start`, `workgroups` workgroups of
/// `per` elements per thread whose first thread is `thread0`, extending their records when
/// `accumulate`.
struct Piece {
    start: u64,
    len: u64,
    workgroups: u64,
    per: u64,
    thread0: u64,
    accumulate: bool,
}

/// Scratch of a k-means on the device: per-thread cluster records and changed counts, the
/// running per-cluster totals, and the status word.
#[derive(Clone, Debug)]
pub struct KmeansScratch {
    /// `threads × k` records of (sum f32, count u32), thread major.
    pub partials: GpuTensor,
    /// Changed codes per thread.
    pub changed: GpuTensor,
    /// k running totals (sum, count).
    pub totals: GpuTensor,
    /// `[changed codes in all, 0, 0, 0]` after `encode_update`.
    pub status: GpuTensor,
    /// `k × 256` running lane sums (sum, count) carried between record windows.
    pub lanes: GpuTensor,
    n: usize,
    bits: u32,
    per: u32,
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
        let per = elems_per_thread(bits) as u32;
        let span = u64::from(per) * u64::from(WORKGROUP_SIZE);
        // Every thread of every workgroup writes a record.
        let threads = (n as u64).div_ceil(span).max(1) as usize * WORKGROUP_SIZE as usize;
        Ok(Self {
            partials: GpuTensor::zeros(ctx, &[threads << bits, 2], ElemType::U32)?,
            changed: GpuTensor::zeros(ctx, &[threads], ElemType::U32)?,
            totals: GpuTensor::zeros(ctx, &[1 << bits, 2], ElemType::U32)?,
            status: GpuTensor::zeros(ctx, &[4], ElemType::U32)?,
            lanes: GpuTensor::zeros(ctx, &[(WORKGROUP_SIZE as usize) << bits, 2], ElemType::U32)?,
            n,
            bits,
            per,
        })
    }

    fn threads(&self) -> u64 {
        self.changed.numel() as u64
    }

    fn clusters(&self) -> u64 {
        1 << self.bits
    }

    /// Elements one workgroup of `kmeans_partials` covers.
    fn span(&self) -> u64 {
        u64::from(self.per) * u64::from(WORKGROUP_SIZE)
    }

    /// Threads whose records (and counts) fit one binding, a multiple of a workgroup's.
    fn threads_per_window(&self, ctx: &Context) -> u64 {
        let records = binding_words(ctx) * 4 / (self.clusters() * RECORD_BYTES);
        (records / u64::from(WORKGROUP_SIZE) * u64::from(WORKGROUP_SIZE))
            .max(u64::from(WORKGROUP_SIZE))
    }

    /// Windows of the records and changed counts of `threads` threads from `thread0`.
    fn record_windows(
        &self,
        ctx: &Context,
        thread0: u64,
        threads: u64,
    ) -> Result<(dispatch::Window, dispatch::Window)> {
        let k = self.clusters();
        let recs = dispatch::window_of(
            ctx,
            self.partials.offset(),
            thread0 * k,
            threads * k,
            RECORD_BYTES,
        )?;
        let changed = dispatch::window(ctx, self.changed.offset(), thread0, threads)?;
        Ok((recs, changed))
    }

    /// The `kmeans_partials` dispatches: whole workgroups, as many as a binding and the grid
    /// hold; or, when one workgroup's elements exceed a binding, each workgroup in parts of
    /// as many elements per thread as fit, the later parts extending the records.
    fn pieces(&self, ctx: &Context) -> Vec<Piece> {
        let (n, span, wg) = (self.n as u64, self.span(), u64::from(WORKGROUP_SIZE));
        let per = u64::from(self.per);
        let words = binding_words(ctx);
        let mut out = Vec::new();
        if span <= words {
            let grid = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
            let wgs = (self.threads_per_window(ctx) / wg).min(grid).max(1);
            for chunk in dispatch::chunks(ctx, n, span) {
                for part in dispatch::spans(chunk, wgs * span) {
                    out.push(Piece {
                        start: part.start,
                        len: part.end - part.start,
                        workgroups: (part.end - part.start).div_ceil(span),
                        per,
                        thread0: part.start / span * wg,
                        accumulate: false,
                    });
                }
            }
        } else {
            let step = (words / wg).max(1);
            for w in 0..n.div_ceil(span) {
                for e0 in dispatch::spans(0..per, step) {
                    let start = w * span + e0.start * wg;
                    if start >= n {
                        break;
                    }
                    out.push(Piece {
                        start,
                        len: ((e0.end - e0.start) * wg).min(n - start),
                        workgroups: 1,
                        per: e0.end - e0.start,
                        thread0: w * wg,
                        accumulate: e0.start > 0,
                    });
                }
            }
        }
        out
    }
}

/// Records per-cluster sums and counts of `values` grouped by their `codes` (kept elements
/// only when `mask` is given; codes that differ from `old_codes` counted when given) into
/// `scratch`'s per-thread records.
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
    let dummy = ctx.storage_init("kmeans unused", &[0u32]);
    let flags = mask.map_or(0, |_| MASKED) | old_codes.map_or(0, |_| COUNT_CHANGES);
    let k = scratch.clusters();
    for p in scratch.pieces(ctx) {
        let (start, len) = (p.start, p.len);
        let values_w = dispatch::window(ctx, values.offset(), start, len)?;
        let word0 = start * u64::from(bits) / 32;
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
                start / 32,
                len.div_ceil(32),
            )?),
            None => None,
        };
        let threads = p.workgroups * u64::from(WORKGROUP_SIZE);
        let (recs_w, changed_w) = scratch.record_windows(ctx, p.thread0, threads)?;
        let params = KmeansParams {
            len: len as u32,
            elem_base: values_w.base,
            code_base: codes_w.base,
            mask_base: mask_w.map_or(0, |w| w.base),
            clusters: k as u32,
            bits,
            flags: flags | if p.accumulate { ACCUMULATE } else { 0 },
            num_workgroups: p.workgroups as u32,
            rec_base: recs_w.base,
            changed_base: changed_w.base,
            elems_per_thread: p.per as u32,
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
            (5, recs_w.bind(scratch.partials.buffer())),
            (6, changed_w.bind(scratch.changed.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
    }
    Ok(())
}

/// Records the per-cluster totals of `scratch`'s records and the total of changed codes into
/// `scratch.status`. Lane `l` of cluster `j` adds the records of threads `l, l + 256, …` in
/// order, windows of records that fit a binding extending the lanes' running sums in
/// `scratch.lanes`; after the last window the lanes are combined in fixed order. Clusters go in
/// batches that the grid and a binding of lane sums hold.
pub fn encode_update(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scratch: &KmeansScratch,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, "kmeans_update")?;
    let k = scratch.clusters();
    let wg = u64::from(WORKGROUP_SIZE);
    let per_window = scratch.threads_per_window(ctx);
    let grid = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
    let batch = (binding_words(ctx) * 4 / (wg * RECORD_BYTES)).clamp(1, grid);
    let totals_w = dispatch::window(ctx, scratch.totals.offset(), 0, k * 2)?;
    let status_w = dispatch::window(ctx, scratch.status.offset(), 0, 4)?;
    if totals_w.base != 0 || status_w.base != 0 {
        return Err(Error::param(
            "kmeans",
            "totals and status must start on a binding boundary",
        ));
    }
    let threads = scratch.threads();
    for span in dispatch::spans(0..threads, per_window) {
        let (t0, count_t) = (span.start, span.end - span.start);
        let (recs_w, changed_w) = scratch.record_windows(ctx, t0, count_t)?;
        let window_flags = if t0 == 0 { FIRST_WINDOW } else { 0 }
            | if span.end == threads { LAST_WINDOW } else { 0 };
        for span in dispatch::spans(0..k, batch) {
            let (c0, count) = (span.start, span.end - span.start);
            let lanes_w = dispatch::window_of(
                ctx,
                scratch.lanes.offset(),
                c0 * wg,
                count * wg,
                RECORD_BYTES,
            )?;
            let params = KmeansParams {
                clusters: k as u32,
                bits: scratch.bits,
                flags: window_flags,
                num_workgroups: count as u32,
                rec_base: recs_w.base,
                changed_base: changed_w.base,
                threads: count_t as u32,
                cluster_first: c0 as u32,
                lane_base: lanes_w.base,
                ..Default::default()
            };
            let uniform = ctx.uniform("kmeans update params", &params);
            let bindings = [
                (0, uniform.as_entire_binding()),
                (5, recs_w.bind(scratch.partials.buffer())),
                (6, changed_w.bind(scratch.changed.buffer())),
                (9, status_w.bind(scratch.status.buffer())),
                (10, totals_w.bind(scratch.totals.buffer())),
                (11, lanes_w.bind(scratch.lanes.buffer())),
            ];
            ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
        }
    }
    Ok(())
}

/// Records the new `centroids` (k f32) from the totals: the mean of each non-empty cluster
/// (empty ones keep their centroid) and their midpoint `thresholds` (k f32, the last +inf);
/// or, with `thresholds` `None`, the per-cluster sums.
pub fn encode_finish(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    scratch: &KmeansScratch,
    centroids: &GpuTensor,
    thresholds: Option<&GpuTensor>,
) -> Result<()> {
    let k = scratch.clusters();
    if centroids.numel() as u64 != k || thresholds.is_some_and(|t| t.numel() as u64 != k) {
        return Err(Error::shape(
            "kmeans",
            "centroids and thresholds need k entries",
        ));
    }
    let pipeline = ctx.pipeline(&SHADER, "kmeans_finish")?;
    let params = KmeansParams {
        clusters: k as u32,
        bits: scratch.bits,
        flags: if thresholds.is_some() { 0 } else { WRITE_SUMS },
        num_workgroups: 1,
        ..Default::default()
    };
    let uniform = ctx.uniform("kmeans finish params", &params);
    let whole = |t: &GpuTensor| dispatch::window(ctx, t.offset(), 0, t.numel() as u64);
    let dummy = ctx.storage_init("kmeans unused", &[0u32]);
    let (totals_w, centroids_w) = (whole(&scratch.totals)?, whole(centroids)?);
    let thresholds_w = match thresholds {
        Some(t) => Some(whole(t)?),
        None => None,
    };
    if totals_w.base != 0 || centroids_w.base != 0 || thresholds_w.is_some_and(|w| w.base != 0) {
        return Err(Error::param(
            "kmeans",
            "k-means tensors must start on a binding boundary",
        ));
    }
    let bindings = [
        (0, uniform.as_entire_binding()),
        (7, centroids_w.bind(centroids.buffer())),
        (
            8,
            match (thresholds, thresholds_w) {
                (Some(t), Some(w)) => w.bind(t.buffer()),
                _ => dummy.as_entire_binding(),
            },
        ),
        (10, totals_w.bind(scratch.totals.buffer())),
    ];
    ctx.dispatch(encoder, &pipeline, &bindings, 1)
}
