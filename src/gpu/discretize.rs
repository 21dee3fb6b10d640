//! Launcher for `shaders/discretize.wgsl`: the x0 search of linear/exponential discretization
//! (ALGORITHMS.md §4), every candidate of every group in parallel. Per round: one pass of
//! (tile, candidate) sums, tree reductions of each (group, candidate)'s tiles in fixed order
//! (as minmax reduces ranges), and a select pass that moves each group's search state. Rounds
//! are recorded back to back; nothing is read back in between. CPU twin:
//! `src/cpu/discretize.rs`.

use crate::gpu::dispatch::spans;
use std::ops::Range;

use super::context::Context;
use super::dispatch::{COMMON_WGSL, Shader, WORKGROUP_SIZE, Window};
use super::minmax;
use super::segments::AFFINE_WGSL;
use super::tensor::{ElemType, GpuTensor};
use super::tiles::{TILES_WGSL, TileChunk, TileParams, TilePlan, window_for};
use crate::error::{Error, Result};
use crate::kernel::discretize::{
    self as shared, LANE_WORK, MAX_TILE, SearchSpec, SearchState, Tiling,
};

/// The composed WGSL of this kernel family.
pub const SHADER: Shader = Shader {
    name: "discretize",
    parts: &[
        COMMON_WGSL,
        AFFINE_WGSL,
        TILES_WGSL,
        include_str!("../../shaders/discretize.wgsl"),
    ],
};

/// Uniform parameters; mirrors `DiscretizeParams` in discretize.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DiscretizeParams {
    /// Tiling of the pass (select uses the group fields).
    pub tiles: TileParams,
    /// Candidates per round, C.
    pub candidates: u32,
    /// Positive levels K.
    pub half_levels: u32,
    /// 0 linear partition, 1 exponential (`partition` is a reserved word in WGSL).
    pub exponential: u32,
    /// Workgroups of the dispatch.
    pub num_workgroups: u32,
    /// `disc_moments`: global record index at `rec_base` of the bound output.
    pub rec_first: u32,
    /// Index of that record (or, in `disc_select`, of the first group's) in the bound window.
    pub rec_base: u32,
    /// `disc_select`: groups in the dispatch.
    pub num_groups: u32,
    /// `disc_select`: index of the first group's first correlation in the bound window.
    pub corr_base: u32,
    /// Index in the bound states of the group at `tiles.group_base` of the bound ranges.
    pub state_base: u32,
    /// `disc_moments`: the dispatch's first candidate.
    pub cand_first: u32,
    /// `disc_moments`: candidates in the dispatch (a small grid may need several).
    pub cand_count: u32,
    /// `disc_select`: 1 in the first round (the state holds no best yet).
    pub first_round: u32,
    /// `1/(C+1)`, rounded on the host.
    pub inv_c1: f32,
    /// `1/(K−1)`, rounded on the host (0 when K = 1).
    pub inv_km1: f32,
    /// `2^(−2⌈log2 n⌉)`, n the group length.
    pub n_scale: f32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<DiscretizeParams>() == 112);

/// The tiling `ctx` gives a search: [`Tiling::DEFAULT`] unless a binding holds fewer
/// elements. The CPU twin needs the same to write the same bits.
pub fn tiling(ctx: &Context) -> Tiling {
    Tiling {
        value_tile: max_tile(ctx, 1),
        record_tile: max_tile(ctx, RECORD_BYTES / 4),
    }
}

/// The largest tile for elements of `words` 4-byte words: [`MAX_TILE`], or less when one
/// binding holds fewer elements.
fn max_tile(ctx: &Context, words: u64) -> u64 {
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(4));
    let fit = ctx.work_limits().max_binding_bytes.saturating_sub(align) / (4 * words);
    MAX_TILE.min(fit).max(1)
}

/// Bytes of one `Moments` record.
const RECORD_BYTES: u64 = 32;

/// Words of one `SearchState`.
const STATE_WORDS: u64 = 8;

/// Device buffers of a search: per group its range and search state, and per (group,
/// candidate) the last round's `(cov, vq)` (the host turns them into correlations with
/// [`shared::correlations`]).
#[derive(Clone, Debug)]
pub struct SearchBuffers {
    /// One `GroupRange` per group.
    pub ranges: GpuTensor,
    /// One [`SearchState`] per group.
    pub states: GpuTensor,
    /// `groups × C × 2` f32 `(cov, vq)` pairs, group major.
    pub scores: GpuTensor,
}

impl SearchBuffers {
    /// Buffers for `groups` groups and `candidates` candidates, states at their start.
    pub fn new(ctx: &Context, groups: usize, candidates: u32) -> Result<Self> {
        Self::starting_from(ctx, groups, candidates, SearchState::INITIAL)
    }

    /// Buffers whose states all start as `start` (a first interval other than (0, 1)).
    pub fn starting_from(
        ctx: &Context,
        groups: usize,
        candidates: u32,
        start: SearchState,
    ) -> Result<Self> {
        let states = vec![start; groups];
        Ok(Self {
            ranges: minmax::ranges_tensor(ctx, groups)?,
            states: GpuTensor::upload(
                ctx,
                &states,
                &[groups, STATE_WORDS as usize],
                ElemType::U32,
            )?,
            scores: GpuTensor::zeros(ctx, &[groups * candidates as usize * 2], ElemType::F32)?,
        })
    }
}

/// Records the whole search over every group of `group_len` elements of `input` (f32) into
/// `bufs`, whose states hold the first interval (normally [`SearchState::INITIAL`]).
pub fn encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    input: &GpuTensor,
    group_len: usize,
    spec: &SearchSpec,
    bufs: &SearchBuffers,
) -> Result<()> {
    spec.validate()?;
    input.expect_dtype("discretize", ElemType::F32)?;
    let plan = TilePlan::with_lane_work(input.numel(), group_len, max_tile(ctx, 1), LANE_WORK)?;
    let groups = plan.num_groups();
    let c = u64::from(spec.candidates);
    if bufs.ranges.byte_len() != groups * 16
        || bufs.states.byte_len() != groups * STATE_WORDS * 4
        || bufs.scores.byte_len() != groups * c * 8
    {
        return Err(Error::shape(
            "discretize",
            "search buffers do not match the groups and candidates",
        ));
    }
    minmax::encode(ctx, encoder, input, group_len, &bufs.ranges)?;
    let records = groups * c * plan.tiles_per_group;
    let sums = GpuTensor::zeros(ctx, &[(records * RECORD_BYTES / 4) as usize], ElemType::U32)?;
    let k = spec.half_levels();
    let base = DiscretizeParams {
        candidates: spec.candidates,
        half_levels: k,
        exponential: spec.partition.id(),
        inv_c1: shared::reciprocal(spec.candidates + 1),
        inv_km1: if k > 1 {
            shared::reciprocal(k - 1)
        } else {
            0.0
        },
        n_scale: shared::n_scale(group_len as u64),
        ..Default::default()
    };
    for round in 0..spec.rounds {
        moments_pass(ctx, encoder, &plan, &base, input, bufs, &sums)?;
        let reduced = reduce_records(ctx, encoder, groups * c, plan.tiles_per_group, &sums)?;
        let select = DiscretizeParams {
            first_round: u32::from(round == 0),
            ..base
        };
        select_pass(ctx, encoder, &plan, &select, &reduced, bufs)?;
    }
    Ok(())
}

/// [`encode`], submitted and waited for: the final states (finished on the host) and the last
/// round's correlations.
pub fn search(
    ctx: &Context,
    input: &GpuTensor,
    group_len: usize,
    spec: &SearchSpec,
) -> Result<(Vec<SearchState>, Vec<f32>)> {
    let groups = input.numel() / group_len.max(1);
    let bufs = SearchBuffers::new(ctx, groups, spec.candidates)?;
    ctx.run("discretize", |enc| {
        encode(ctx, enc, input, group_len, spec, &bufs)
    })?;
    let ranges: Vec<crate::affine::GroupRange> = bufs.ranges.download(ctx)?;
    let mut states: Vec<SearchState> = bufs.states.download(ctx)?;
    for (s, r) in states.iter_mut().zip(&ranges) {
        s.finish(r.lo.abs().max(r.hi.abs()));
    }
    let corrs = shared::correlations(&bufs.scores.to_f32(ctx)?, &states, spec.candidates);
    Ok((states, corrs))
}

/// Windows of a group range of the ranges (16-byte) and states (32-byte) tensors.
fn group_windows(bufs: &SearchBuffers, ctx: &Context, g: &Range<u64>) -> Result<(Window, Window)> {
    Ok((
        window_for(ctx, bufs.ranges.offset(), g, 16)?,
        window_for(ctx, bufs.states.offset(), g, STATE_WORDS * 4)?,
    ))
}

/// The (tile, candidate) sums of one round into `out` (record of group g, candidate c, tile
/// k of the group at `(g·C + c)·T + k`).
fn moments_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    plan: &TilePlan,
    base: &DiscretizeParams,
    input: &GpuTensor,
    bufs: &SearchBuffers,
    out: &GpuTensor,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, "disc_moments")?;
    let (c, t) = (u64::from(base.candidates), plan.tiles_per_group);
    let words_per_group = c * t * RECORD_BYTES / 4;
    for chunk in plan.chunks(ctx, words_per_group.max(STATE_WORDS), c * RECORD_BYTES / 4) {
        let values_w = window_for(ctx, input.offset(), &chunk.elems, 4)?;
        let (ranges_w, states_w) = group_windows(bufs, ctx, &chunk.groups)?;
        let (first, last) = (chunk.tiles.start, chunk.tiles.end - 1);
        let rec_lo = first / t * c * t + first % t;
        let rec_hi = (last / t * c + c - 1) * t + last % t + 1;
        let out_w = window_for(ctx, out.offset(), &(rec_lo..rec_hi), RECORD_BYTES)?;
        // Candidates per dispatch: all of them unless the grid cannot hold that many copies of
        // the chunk's tile workgroups.
        let tile_wgs = u64::from(plan.workgroups(&chunk));
        let grid = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2);
        let per_dispatch = (grid / tile_wgs.max(1)).min(c);
        if per_dispatch == 0 {
            return Err(Error::param(
                "discretize",
                format!("{tile_wgs} workgroups of one candidate exceed the dispatch grid"),
            ));
        }
        let mut first = 0;
        while first < c {
            let count = per_dispatch.min(c - first);
            let workgroups = u32::try_from(tile_wgs * count)
                .map_err(|_| Error::param("discretize", "more than 2^32 workgroups in one pass"))?;
            let params = DiscretizeParams {
                tiles: plan.params(&chunk, &values_w, &ranges_w, 0),
                num_workgroups: workgroups,
                rec_first: rec_lo as u32,
                rec_base: out_w.base,
                state_base: states_w.base,
                cand_first: first as u32,
                cand_count: count as u32,
                ..*base
            };
            let uniform = ctx.uniform("discretize params", &params);
            let bindings = [
                (0, uniform.as_entire_binding()),
                (1, values_w.bind(input.buffer())),
                (2, ranges_w.bind(bufs.ranges.buffer())),
                (3, states_w.bind(bufs.states.buffer())),
                (4, out_w.bind(out.buffer())),
            ];
            ctx.dispatch(encoder, &pipeline, &bindings, workgroups)?;
            first += count;
        }
    }
    Ok(())
}

/// Sums each run of `per` consecutive records of `src` (`runs` runs) by repeated tiled tree
/// reductions; returns a tensor of `runs` records (`src` itself when `per` is 1).
fn reduce_records(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    runs: u64,
    per: u64,
    src: &GpuTensor,
) -> Result<GpuTensor> {
    if per == 1 {
        return Ok(src.clone());
    }
    let pipeline = ctx.pipeline(&SHADER, "disc_reduce")?;
    let words = RECORD_BYTES / 4;
    let tile = max_tile(ctx, words);
    let mut plan = TilePlan::with_lane_work((runs * per) as usize, per as usize, tile, LANE_WORK)?;
    let mut source = src.clone();
    loop {
        let target = GpuTensor::zeros(
            ctx,
            &[(plan.num_tiles() * RECORD_BYTES / 4) as usize],
            ElemType::U32,
        )?;
        for chunk in plan.chunks_of(ctx, words, 1, words) {
            let input_w = window_for(ctx, source.offset(), &chunk.elems, RECORD_BYTES)?;
            let out_w = window_for(ctx, target.offset(), &chunk.tiles, RECORD_BYTES)?;
            let params = DiscretizeParams {
                tiles: plan.params(&chunk, &input_w, &input_w, out_w.base),
                ..Default::default()
            };
            let uniform = ctx.uniform("discretize reduce params", &params);
            let bindings = [
                (0, uniform.as_entire_binding()),
                (4, out_w.bind(target.buffer())),
                (5, input_w.bind(source.buffer())),
            ];
            ctx.dispatch(encoder, &pipeline, &bindings, plan.workgroups(&chunk))?;
        }
        if plan.tiles_per_group == 1 {
            return Ok(target);
        }
        plan = TilePlan::with_lane_work(
            plan.num_tiles() as usize,
            plan.tiles_per_group as usize,
            tile,
            LANE_WORK,
        )?;
        source = target;
    }
}

/// Per group: correlations of the round's candidates, the best, the state moved.
fn select_pass(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    plan: &TilePlan,
    base: &DiscretizeParams,
    sums: &GpuTensor,
    bufs: &SearchBuffers,
) -> Result<()> {
    let pipeline = ctx.pipeline(&SHADER, "disc_select")?;
    let c = u64::from(base.candidates);
    let per_chunk =
        ((ctx.work_limits().max_binding_bytes.saturating_sub(256)) / (c * RECORD_BYTES)).max(1);
    let groups = plan.num_groups();
    for g in spans(0..groups, per_chunk) {
        let recs = g.start * c..g.end * c;
        let sums_w = window_for(ctx, sums.offset(), &recs, RECORD_BYTES)?;
        let corr_w = window_for(ctx, bufs.scores.offset(), &recs, 8)?;
        let (ranges_w, states_w) = group_windows(bufs, ctx, &g)?;
        let n = (g.end - g.start) as u32;
        let chunk = TileChunk {
            tiles: 0..0,
            groups: g.clone(),
            elems: 0..0,
        };
        let params = DiscretizeParams {
            tiles: plan.params(&chunk, &ranges_w, &ranges_w, 0),
            num_workgroups: n.div_ceil(WORKGROUP_SIZE),
            num_groups: n,
            rec_base: sums_w.base,
            corr_base: corr_w.base,
            state_base: states_w.base,
            ..*base
        };
        let uniform = ctx.uniform("discretize select params", &params);
        let bindings = [
            (0, uniform.as_entire_binding()),
            (3, states_w.bind(bufs.states.buffer())),
            (5, sums_w.bind(sums.buffer())),
            (6, corr_w.bind(bufs.scores.buffer())),
        ];
        ctx.dispatch(encoder, &pipeline, &bindings, params.num_workgroups)?;
    }
    Ok(())
}
