// Tiled per-group reductions (minmax, clip_search): a tensor's groups are cut into tiles of
// at most `tile_len` elements; `lanes` threads reduce one tile, so a workgroup holds
// WORKGROUP_SIZE / lanes tiles. Mirrors `TileParams` in src/gpu/tiles.rs (48 bytes).
struct TileParams {
    group_len: u32,       // elements per group
    tile_len: u32,        // elements per tile (the last tile of a group may be shorter)
    tiles_per_group: u32,
    lanes: u32,           // threads per tile, a power of two dividing WORKGROUP_SIZE
    first_tile: u32,      // global index of this dispatch's first tile
    num_tiles: u32,       // tiles in this dispatch
    elem_first: u32,      // global index of the element at `elem_base` of the bound input
    elem_base: u32,
    group_first: u32,     // global index of the group at `group_base` of per-group bindings
    group_base: u32,
    out_base: u32,        // index of this dispatch's first tile in per-tile outputs
    _pad: u32,
}

// This thread's place: which tile (global index, or >= first_tile + num_tiles when idle) and
// which lane of it.
struct TileSlot {
    tile: u32,
    lane: u32,
    valid: bool,
}

fn tile_slot(t: TileParams, wg: u32, lid: u32) -> TileSlot {
    let per_wg = WORKGROUP_SIZE / t.lanes;
    let local = wg * per_wg + lid / t.lanes;
    return TileSlot(t.first_tile + local, lid % t.lanes, local < t.num_tiles);
}

// Bound-window index range [start, end) of a tile's elements.
fn tile_range(t: TileParams, tile: u32) -> vec2<u32> {
    let g = tile / t.tiles_per_group;
    let k = tile % t.tiles_per_group;
    let start = g * t.group_len + k * t.tile_len;
    let end = min(start + t.tile_len, (g + 1u) * t.group_len);
    return vec2<u32>(start - t.elem_first + t.elem_base, end - t.elem_first + t.elem_base);
}

// Bound-window index of a tile's group in per-group bindings.
fn tile_group(t: TileParams, tile: u32) -> u32 {
    return tile / t.tiles_per_group - t.group_first + t.group_base;
}

var<workgroup> tree_sum_scratch: array<vec4<f32>, WORKGROUP_SIZE>;

// Sums v over the `lanes` threads of each tile in a fixed stride-halving order, so the result
// is the same on every run. Every thread of the workgroup must call it (it holds barriers);
// the sum is returned to every lane, valid in lane 0.
fn tree_sum4(lid: u32, lane: u32, lanes: u32, v: vec4<f32>) -> vec4<f32> {
    tree_sum_scratch[lid] = v;
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) {
            tree_sum_scratch[lid] = tree_sum_scratch[lid] + tree_sum_scratch[lid + s];
        }
    }
    workgroupBarrier();
    let r = tree_sum_scratch[lid];
    workgroupBarrier();
    return r;
}
