//! Launcher for `shaders/weq_sweep.wgsl`: WEQ cluster-boundary sweeps, one workgroup per
//! group, over the prefix sums of `weq_histogram`, in passes of a bounded number of sweeps
//! (llvmpipe caps an invocation's loop iterations), then each group's signed levels,
//! thresholds and info. CPU twin: `src/cpu/weq_sweep.rs`.

use std::ops::Range;

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, Window};
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::window_for;
use super::weq_histogram::WEQ_WGSL;
use crate::error::{Error, Result};
use crate::kernel::weq::{PREFIX_WORDS, WeqInfo};

/// The composed WGSL of this kernel.
pub const SHADER: Shader = Shader {
    name: "weq_sweep",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        WEQ_WGSL,
        include_str!("../../shaders/weq_sweep.wgsl"),
    ],
};

/// Uniform parameters; mirrors `WeqSweepParams` in weq_sweep.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqSweepParams {
    /// Bins per group.
    pub bins: u32,
    /// log2 of `bins`.
    pub log2_bins: u32,
    /// Magnitude clusters H = 2^(bits − 1).
    pub clusters: u32,
    /// Groups in the dispatch.
    pub groups: u32,
    /// Index of group 0 in the bound ranges.
    pub range_base: u32,
    /// Entry of group 0's prefix 0 in the bound prefix.
    pub prefix_base: u32,
    /// Element of group 0's first level in the bound levels.
    pub level_base: u32,
    /// Element of group 0's first threshold in the bound thresholds.
    pub threshold_base: u32,
    /// Index of group 0 in the bound info.
    pub info_base: u32,
    /// Cap on sweeps in all.
    pub max_sweeps: u32,
    /// Cap on sweeps in this dispatch.
    pub sweeps_per_pass: u32,
    /// 1 on the first pass (start from equal populations).
    pub first_pass: u32,
}
const _: () = assert!(std::mem::size_of::<WeqSweepParams>() == 48);

/// The per-group outputs of a sweep.
pub struct SweepOutputs<'a> {
    /// `2^bits` f32 levels per group of the whole tensor.
    pub levels: &'a GpuTensor,
    /// `2^bits` f32 thresholds per group of the whole tensor.
    pub thresholds: &'a GpuTensor,
    /// One [`WeqInfo`] (4 words) per group of the whole tensor.
    pub info: &'a GpuTensor,
}

/// The sweeps of one batch of groups, prepared: its pipelines, parameters, binding windows and
/// the state buffer carrying boundaries across passes. [`encode`] records every pass; a
/// submit-and-wait driver can record them in rounds and stop once [`SweepPlan::converged`].
pub struct SweepPlan<'a> {
    ranges: &'a GpuTensor,
    prefix: &'a GpuTensor,
    out: &'a SweepOutputs<'a>,
    params: WeqSweepParams,
    entry: &'static str,
    workgroups: u32,
    windows: [Window; 6],
    state: GpuTensor,
    /// Words per group in `state`: boundaries 0..=H, sweeps run, converged flag.
    state_words: usize,
}

/// Prepares the sweeps of groups `batch` whose prefix sums (`bins + 1` entries each, batch
/// group 0 first) are in `prefix`; spans come from `ranges` (one `GroupRange` per group of
/// the whole tensor).
#[allow(clippy::too_many_arguments)]
pub fn plan<'a>(
    ctx: &Context,
    ranges: &'a GpuTensor,
    prefix: &'a GpuTensor,
    batch: Range<u64>,
    bins: u32,
    bits: u32,
    max_sweeps: u32,
    out: &'a SweepOutputs<'a>,
) -> Result<SweepPlan<'a>> {
    let groups = batch.end - batch.start;
    let per = 1u64 << bits;
    let all = ranges.byte_len() / 16;
    if !(1..=8).contains(&bits) || groups == 0 || batch.end > all || max_sweeps == 0 {
        return Err(Error::param(
            "weq_sweep",
            format!("{bits} bits, groups {batch:?} of {all}, {max_sweeps} sweeps"),
        ));
    }
    for t in [out.levels, out.thresholds] {
        t.expect_dtype("weq_sweep", ElemType::F32)?;
    }
    if out.levels.numel() as u64 != all * per
        || out.thresholds.numel() as u64 != all * per
        || out.info.byte_len() != all * 16
        || prefix.byte_len() < groups * (u64::from(bins) + 1) * PREFIX_WORDS as u64 * 4
    {
        return Err(Error::shape(
            "weq_sweep",
            "levels and thresholds need 2^bits entries per group, info one record per group",
        ));
    }
    let ranges_w = window_for(ctx, ranges.offset(), &batch, 16)?;
    let prefix_w = window_for(
        ctx,
        prefix.offset(),
        &(0..groups * (u64::from(bins) + 1)),
        8,
    )?;
    let table = batch.start * per..batch.end * per;
    let levels_w = window_for(ctx, out.levels.offset(), &table, 4)?;
    let thresholds_w = window_for(ctx, out.thresholds.offset(), &table, 4)?;
    let info_w = window_for(
        ctx,
        out.info.offset(),
        &batch,
        std::mem::size_of::<WeqInfo>() as u64,
    )?;
    let params = WeqSweepParams {
        bins,
        log2_bins: bins.trailing_zeros(),
        clusters: 1 << (bits - 1),
        groups: groups as u32,
        range_base: ranges_w.base,
        prefix_base: prefix_w.base,
        level_base: levels_w.base,
        threshold_base: thresholds_w.base,
        info_base: info_w.base,
        max_sweeps,
        sweeps_per_pass: sweeps_per_pass(bins, bits),
        first_pass: 1,
    };
    // Small groups: one thread per group; large ones: a workgroup per group.
    let narrow = bins <= NARROW_MAX_BINS;
    let (entry, workgroups, per_pass) = if narrow {
        // A thread's candidates number 2·bins + H per sweep, but loops run as long as any of
        // the 8 groups sharing a SIMD vector needs them, so count 8 groups' worth.
        let h = 1u32 << (bits - 1);
        let per_sweep = 8 * (2 * bins + 2 * h) + 4;
        let per_pass = ((LOOP_BUDGET - 64 * h) / per_sweep).max(1);
        (
            "sweep_narrow",
            (groups as u32).div_ceil(WORKGROUP_SIZE),
            per_pass,
        )
    } else {
        ("sweep", groups as u32, params.sweeps_per_pass)
    };
    let params = WeqSweepParams {
        sweeps_per_pass: per_pass,
        ..params
    };
    let state_words = (1usize << (bits - 1)) + 3;
    let state = GpuTensor::zeros(ctx, &[groups as usize * state_words], ElemType::U32)?;
    let state_w = window_for(ctx, state.offset(), &(0..groups * state_words as u64), 4)?;
    Ok(SweepPlan {
        ranges,
        prefix,
        out,
        params,
        entry,
        workgroups,
        windows: [ranges_w, prefix_w, levels_w, thresholds_w, info_w, state_w],
        state,
        state_words,
    })
}

impl SweepPlan<'_> {
    /// Passes that reach the sweep cap.
    pub fn passes(&self) -> u32 {
        self.params.max_sweeps.div_ceil(self.params.sweeps_per_pass)
    }

    /// Sweeps one pass runs at most.
    pub fn sweeps_per_pass(&self) -> u32 {
        self.params.sweeps_per_pass
    }

    /// Records passes `passes` (pass 0 starts from equal populations; a converged group
    /// returns at once in later passes).
    pub fn encode_passes(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        passes: Range<u32>,
    ) -> Result<()> {
        let sweep = ctx.pipeline(&SHADER, self.entry)?;
        let [_, prefix_w, _, _, _, state_w] = self.windows;
        for pass in passes {
            let p = WeqSweepParams {
                first_pass: u32::from(pass == 0),
                ..self.params
            };
            let uniform = ctx.uniform("weq_sweep params", &p);
            let bindings = [
                (0, uniform.as_entire_binding()),
                (2, prefix_w.bind(self.prefix.buffer())),
                (6, state_w.bind(self.state.buffer())),
            ];
            ctx.dispatch(encoder, &sweep, &bindings, self.workgroups)?;
        }
        Ok(())
    }

    /// Records the levels, thresholds and info of every group from its final boundaries.
    pub fn encode_finish(&self, ctx: &Context, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let [ranges_w, prefix_w, levels_w, thresholds_w, info_w, state_w] = self.windows;
        let uniform = ctx.uniform("weq_sweep finish params", &self.params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, ranges_w.bind(self.ranges.buffer())),
            (2, prefix_w.bind(self.prefix.buffer())),
            (3, levels_w.bind(self.out.levels.buffer())),
            (4, thresholds_w.bind(self.out.thresholds.buffer())),
            (5, info_w.bind(self.out.info.buffer())),
            (6, state_w.bind(self.state.buffer())),
        ];
        let finish = ctx.pipeline(&SHADER, "finish")?;
        ctx.dispatch(
            encoder,
            &finish,
            &bindings,
            self.params.groups.div_ceil(WORKGROUP_SIZE),
        )
    }

    /// Whether every group has converged (or reached the cap) after the passes submitted so
    /// far; reads the state back, so it waits for them.
    pub fn converged(&self, ctx: &Context) -> Result<bool> {
        let state: Vec<u32> = self.state.download(ctx)?;
        Ok(state
            .chunks(self.state_words)
            .all(|g| g[self.state_words - 1] != 0))
    }

    /// Submits the passes in rounds covering [`FIRST_ROUND_SWEEPS`] sweeps, then four times
    /// more each round, until every group has converged (or the cap), then the finish, and
    /// waits. `before` records work the first pass depends on (the histogram) into the first
    /// round. Sweeps normally stop after tens, far below the cap a single stream must budget.
    pub fn run(
        &self,
        ctx: &Context,
        before: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let (mut done, mut sweeps) = (0, FIRST_ROUND_SWEEPS);
        let mut before = Some(before);
        loop {
            let upto = sweeps
                .div_ceil(self.params.sweeps_per_pass)
                .min(self.passes());
            ctx.run("weq_sweep", |enc| {
                if let Some(f) = before.take() {
                    f(enc)?;
                }
                self.encode_passes(ctx, enc, done..upto)
            })?;
            done = upto;
            if done == self.passes() || self.converged(ctx)? {
                break;
            }
            sweeps = sweeps.saturating_mul(4);
        }
        ctx.run("weq_sweep finish", |enc| self.encode_finish(ctx, enc))
    }
}

/// Sweeps the first round of [`SweepPlan::run`] covers.
pub const FIRST_ROUND_SWEEPS: u32 = 32;

/// Records every pass of the sweeps of groups `batch` (see [`plan`]), then the levels,
/// thresholds and info of each group: the single-stream form for a host engine's encoder.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    ranges: &GpuTensor,
    prefix: &GpuTensor,
    batch: Range<u64>,
    bins: u32,
    bits: u32,
    max_sweeps: u32,
    out: &SweepOutputs<'_>,
) -> Result<()> {
    let p = plan(ctx, ranges, prefix, batch, bins, bits, max_sweeps, out)?;
    p.encode_passes(ctx, encoder, 0..p.passes())?;
    p.encode_finish(ctx, encoder)
}

/// Groups of at most this many bins are swept one thread per group: no barriers, which cost
/// software devices most of the workgroup form's time (MiniLM's 30522 × 384 embedding, 4-bit
/// per channel: 61.7 s -> 14.4 s on llvmpipe at 2048 rather than 1024). The limit keeps one
/// sweep of 8 SIMD lanes' loops, 8·(2·bins + 2H) iterations, under llvmpipe's 65,535.
pub const NARROW_MAX_BINS: u32 = 2048;

/// Loop iterations one invocation may run: llvmpipe ends every loop of an invocation past
/// 65,535 in all (Mesa's LP_MAX_TGSI_LOOP_ITERATIONS), silently; the rest is margin for
/// iterations the estimates below do not see.
const LOOP_BUDGET: u32 = 40_000;

/// Sweeps per dispatch so that one invocation's loops stay within `LOOP_BUDGET`: a sweep is
/// two phases, each costing a thread its share of the phase's candidates (at most bins + 64
/// in all), the segment offsets (64), a binary search (7) and the combine (up to 256).
pub fn sweeps_per_pass(bins: u32, bits: u32) -> u32 {
    let h = 1u32 << (bits - 1);
    let per_sweep = 2 * ((bins + 64) / WORKGROUP_SIZE + 1 + 64 + 8 + WORKGROUP_SIZE) + 4;
    // The first pass also runs H + 1 binary searches of log2(bins) + 1 steps.
    let init = 32 * (h / WORKGROUP_SIZE + 1);
    ((LOOP_BUDGET - init) / per_sweep).max(1)
}

/// The sweeps of every group of `ranges`, submitted in rounds and waited for
/// ([`SweepPlan::run`]): levels, thresholds and info on the host.
pub fn weq_sweep(
    ctx: &Context,
    ranges: &GpuTensor,
    prefix: &GpuTensor,
    bins: u32,
    bits: u32,
    max_sweeps: u32,
) -> Result<(Vec<f32>, Vec<f32>, Vec<WeqInfo>)> {
    let groups = ranges.byte_len() / 16;
    let per = (groups as usize) << bits;
    let levels = GpuTensor::zeros(ctx, &[per], ElemType::F32)?;
    let thresholds = GpuTensor::zeros(ctx, &[per], ElemType::F32)?;
    let info = GpuTensor::zeros(ctx, &[groups as usize * 4], ElemType::U32)?;
    let out = SweepOutputs {
        levels: &levels,
        thresholds: &thresholds,
        info: &info,
    };
    plan(ctx, ranges, prefix, 0..groups, bins, bits, max_sweeps, &out)?.run(ctx, |_| Ok(()))?;
    Ok((
        levels.to_f32(ctx)?,
        thresholds.to_f32(ctx)?,
        info.download(ctx)?,
    ))
}
