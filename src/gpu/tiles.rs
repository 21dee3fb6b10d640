//! Plumbing for tiled per-group reductions (minmax, clip_search; WGSL half in
//! `shaders/tiles.wgsl`): groups are cut into tiles, each reduced by a power-of-two number of
//! lanes in a fixed tree order, and tiles are batched into dispatches whose input, per-group
//! and per-tile ranges each fit one binding window.

use crate::gpu::dispatch::spans;
use std::ops::Range;

use super::context::Context;
use super::dispatch::{WORKGROUP_SIZE, Window, window_of};
use crate::error::{Error, Result};

/// Uniform tile parameters; mirrors `TileParams` in tiles.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TileParams {
    /// Elements per group.
    pub group_len: u32,
    /// Elements per tile (the last tile of a group may be shorter).
    pub tile_len: u32,
    /// Tiles per group.
    pub tiles_per_group: u32,
    /// Threads per tile.
    pub lanes: u32,
    /// Global index of the dispatch's first tile.
    pub first_tile: u32,
    /// Tiles in the dispatch.
    pub num_tiles: u32,
    /// Global index of the element at `elem_base` of the bound input.
    pub elem_first: u32,
    /// Index of that element inside the bound input window.
    pub elem_base: u32,
    /// Global index of the group at `group_base` of per-group bindings.
    pub group_first: u32,
    /// Index of that group inside the per-group windows.
    pub group_base: u32,
    /// Index of the dispatch's first tile in per-tile outputs.
    pub out_base: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<TileParams>() == 48);

/// Elements a lane should cover before another lane pays off.
const ELEMS_PER_LANE: u64 = 8;

/// How a tensor of `numel` elements in groups of `group_len` is tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    /// Elements in the tensor.
    pub numel: u64,
    /// Elements per group.
    pub group_len: u64,
    /// Elements per tile.
    pub tile_len: u64,
    /// Tiles per group.
    pub tiles_per_group: u64,
    /// Threads per tile.
    pub lanes: u32,
}

/// One dispatch's share of a plan: its tiles and the windows they read and write.
#[derive(Clone, Debug)]
pub struct TileChunk {
    /// Global tile indices.
    pub tiles: Range<u64>,
    /// Groups the tiles belong to.
    pub groups: Range<u64>,
    /// Elements the tiles cover.
    pub elems: Range<u64>,
}

/// Largest tile: 8192 elements keep 32 lanes busy on 256 elements each.
pub const MAX_TILE: u64 = 8192;

impl TilePlan {
    /// The plan for `ctx`: tiles of at most [`MAX_TILE`] elements, fewer when a tile of 16-byte
    /// elements (a later pass over partial results) would not fit one binding window.
    pub fn on(ctx: &Context, numel: usize, group_len: usize) -> Result<Self> {
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(16));
        let fit = (ctx.work_limits().max_binding_bytes.saturating_sub(align) / 16).max(1);
        Self::new(numel, group_len, MAX_TILE.min(fit))
    }

    /// Tiles of at most `max_tile` elements over groups of `group_len`.
    pub fn new(numel: usize, group_len: usize, max_tile: u64) -> Result<Self> {
        Self::with_lane_work(numel, group_len, max_tile, ELEMS_PER_LANE)
    }

    /// [`new`](Self::new) with about `elems_per_lane` elements per lane: kernels whose
    /// reduction costs more than their loads (many barriers on a CPU-emulated device) want
    /// fewer, busier lanes.
    pub fn with_lane_work(
        numel: usize,
        group_len: usize,
        max_tile: u64,
        elems_per_lane: u64,
    ) -> Result<Self> {
        if group_len == 0 || !numel.is_multiple_of(group_len) {
            return Err(Error::param(
                "tiles",
                format!("group length {group_len} does not divide {numel} elements"),
            ));
        }
        if numel as u64 >= u64::from(u32::MAX) {
            return Err(Error::param(
                "tiles",
                format!("{numel} elements exceed u32 indexing"),
            ));
        }
        let group_len = group_len as u64;
        let tile_len = group_len.min(max_tile.max(1));
        let lanes = tile_len
            .div_ceil(elems_per_lane.max(1))
            .next_power_of_two()
            .min(u64::from(WORKGROUP_SIZE)) as u32;
        Ok(Self {
            numel: numel as u64,
            group_len,
            tile_len,
            tiles_per_group: group_len.div_ceil(tile_len),
            lanes,
        })
    }

    /// Number of groups.
    pub fn num_groups(&self) -> u64 {
        self.numel / self.group_len
    }

    /// Number of tiles.
    pub fn num_tiles(&self) -> u64 {
        self.num_groups() * self.tiles_per_group
    }

    /// Global element range of tile `t`.
    pub fn tile_elems(&self, t: u64) -> Range<u64> {
        let (g, k) = (t / self.tiles_per_group, t % self.tiles_per_group);
        let start = g * self.group_len + k * self.tile_len;
        start..(start + self.tile_len).min((g + 1) * self.group_len)
    }

    /// Batches of consecutive tiles whose element span (4-byte elements), group span
    /// (`words_per_group` 4-byte words each) and per-tile output (`words_per_tile` each) each
    /// fit one binding, and whose workgroups fit one dispatch.
    pub fn chunks(
        &self,
        ctx: &Context,
        words_per_group: u64,
        words_per_tile: u64,
    ) -> Vec<TileChunk> {
        self.chunks_of(ctx, 1, words_per_group, words_per_tile)
    }

    /// [`TilePlan::chunks`] for input elements of `words_per_elem` 4-byte words (the partial
    /// results of an earlier pass).
    pub fn chunks_of(
        &self,
        ctx: &Context,
        words_per_elem: u64,
        words_per_group: u64,
        words_per_tile: u64,
    ) -> Vec<TileChunk> {
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment.max(16)) / 4;
        let budget = (ctx.work_limits().max_binding_bytes / 4)
            .saturating_sub(align)
            .max(1);
        let tiles_by_elems = (budget / (self.tile_len * words_per_elem.max(1))).max(1);
        // A chunk may start and end mid-group: one group more than whole groups.
        let groups = (budget / words_per_group.max(1)).saturating_sub(1).max(1);
        let tiles_by_groups = groups * self.tiles_per_group;
        let tiles_by_out = (budget / words_per_tile.max(1)).max(1);
        let per_wg = u64::from(WORKGROUP_SIZE / self.lanes);
        let tiles_by_grid = u64::from(ctx.work_limits().max_workgroups_per_dim).pow(2) * per_wg;
        let per_chunk = tiles_by_elems
            .min(tiles_by_groups)
            .min(tiles_by_out)
            .min(tiles_by_grid)
            .max(1);
        let mut out = Vec::new();
        let mut t = 0;
        while t < self.num_tiles() {
            let end = (t + per_chunk).min(self.num_tiles());
            out.push(TileChunk {
                tiles: t..end,
                groups: t / self.tiles_per_group..(end - 1) / self.tiles_per_group + 1,
                elems: self.tile_elems(t).start..self.tile_elems(end - 1).end,
            });
            t = end;
        }
        out
    }

    /// Batches of whole groups for a per-group pass after the tile pass (one thread per
    /// group, per-group outputs windowed, per-tile partials bound whole).
    pub fn group_chunks(&self, ctx: &Context) -> Vec<TileChunk> {
        let per_chunk = (ctx.work_limits().max_binding_bytes / 16)
            .saturating_sub(16)
            .max(1);
        spans(0..self.num_groups(), per_chunk)
            .map(|g| TileChunk {
                tiles: g.start * self.tiles_per_group..g.end * self.tiles_per_group,
                elems: g.start * self.group_len..g.end * self.group_len,
                groups: g,
            })
            .collect()
    }

    /// Tile parameters for a per-group pass over `chunk` whose per-tile partials are bound
    /// whole (tile t at index t) and whose per-group outputs start at `groups.base`.
    pub fn group_params(&self, chunk: &TileChunk, groups: &Window) -> TileParams {
        TileParams {
            first_tile: 0,
            out_base: 0,
            ..self.params(chunk, groups, groups, 0)
        }
    }

    /// Workgroups for a chunk.
    pub fn workgroups(&self, chunk: &TileChunk) -> u32 {
        let per_wg = u64::from(WORKGROUP_SIZE / self.lanes);
        (chunk.tiles.end - chunk.tiles.start).div_ceil(per_wg) as u32
    }

    /// Uniform parameters for a chunk, given the windows of its input (`elems`), per-group
    /// bindings (`groups`) and per-tile outputs (whose base is `out_base`).
    pub fn params(
        &self,
        chunk: &TileChunk,
        input: &Window,
        groups: &Window,
        out_base: u32,
    ) -> TileParams {
        TileParams {
            group_len: self.group_len as u32,
            tile_len: self.tile_len as u32,
            tiles_per_group: self.tiles_per_group as u32,
            lanes: self.lanes,
            first_tile: chunk.tiles.start as u32,
            num_tiles: (chunk.tiles.end - chunk.tiles.start) as u32,
            elem_first: chunk.elems.start as u32,
            elem_base: input.base,
            group_first: chunk.groups.start as u32,
            group_base: groups.base,
            out_base,
            _pad: 0,
        }
    }
}

/// The window of `range` (in `elem_size`-byte elements) of a tensor at `byte_offset`.
pub fn window_for(
    ctx: &Context,
    byte_offset: u64,
    range: &Range<u64>,
    elem_size: u64,
) -> Result<Window> {
    window_of(
        ctx,
        byte_offset,
        range.start,
        range.end - range.start,
        elem_size,
    )
}

/// `shaders/tiles.wgsl`.
pub(crate) const TILES_WGSL: &str = include_str!("../../shaders/tiles.wgsl");

/// Windows of the same range of several tensors, each with its own base.
pub fn windows_of(
    ctx: &Context,
    tensors: &[&super::tensor::GpuTensor],
    range: &Range<u64>,
    elem_size: u64,
) -> Result<Vec<Window>> {
    tensors
        .iter()
        .map(|t| window_for(ctx, t.offset(), range, elem_size))
        .collect()
}

/// The bases of up to four windows, for a kernel's `vec4<u32>` of per-tensor bases.
pub fn bases4(windows: &[Window]) -> [u32; 4] {
    std::array::from_fn(|i| windows.get(i).map_or(0, |w| w.base))
}

/// Windows of the same range of several tensors that a kernel indexes with one base (its
/// `elem_base` or `group_base`): they must land on the same offset inside their windows.
pub fn shared_windows(
    ctx: &Context,
    op: &str,
    tensors: &[&super::tensor::GpuTensor],
    range: &Range<u64>,
    elem_size: u64,
) -> Result<Vec<Window>> {
    let windows = tensors
        .iter()
        .map(|t| window_for(ctx, t.offset(), range, elem_size))
        .collect::<Result<Vec<_>>>()?;
    if windows.windows(2).any(|w| w[0].base != w[1].base) {
        return Err(Error::param(
            op,
            "tensors indexed together must start at the same offset modulo the binding alignment",
        ));
    }
    Ok(windows)
}
