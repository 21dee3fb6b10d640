// Per-group min/max with a count of non-finite values (ALGORITHMS.md §1, min/max and absmax
// calibration), as a tiled tree reduction in fixed order; and the exponential moving average
// of such ranges across batches (activation calibration).
// Needs common.wgsl, affine.wgsl and tiles.wgsl before it.

// Mirrors `MinMaxParams` in src/gpu/minmax.rs (64 bytes).
struct MinMaxParams {
    tiles: TileParams,
    num_groups: u32,    // ema_update: groups to update
    ema_first: u32,     // ema_update: 1 when the state holds no batch yet
    ema_momentum: f32,  // ema_update: weight of the new batch
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: MinMaxParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> partials: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> ranges: array<GroupRange>;

var<workgroup> wg_lo: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_hi: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_bad: array<u32, WORKGROUP_SIZE>;

fn empty_range() -> GroupRange {
    return GroupRange(bitcast<f32>(0x7f800000u), bitcast<f32>(0xff800000u), 0u, 0u);
}

fn merge(a: GroupRange, b: GroupRange) -> GroupRange {
    return GroupRange(min(a.lo, b.lo), max(a.hi, b.hi), a.nonfinite + b.nonfinite, 0u);
}

// Tree-reduces the lanes of each tile (stride halving, fixed order) and lets lane 0 write.
fn finish_tile(slot: TileSlot, lid: u32, acc: GroupRange) {
    wg_lo[lid] = acc.lo;
    wg_hi[lid] = acc.hi;
    wg_bad[lid] = acc.nonfinite;
    for (var s = params.tiles.lanes / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (slot.lane < s) {
            wg_lo[lid] = min(wg_lo[lid], wg_lo[lid + s]);
            wg_hi[lid] = max(wg_hi[lid], wg_hi[lid + s]);
            wg_bad[lid] = wg_bad[lid] + wg_bad[lid + s];
        }
    }
    if (slot.valid && slot.lane == 0u) {
        let out = params.tiles.out_base + slot.tile - params.tiles.first_tile;
        ranges[out] = GroupRange(wg_lo[lid], wg_hi[lid], wg_bad[lid], 0u);
    }
}

// Pass 1: ranges of tiles of raw values.
@compute @workgroup_size(256)
fn reduce_values(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let slot = tile_slot(params.tiles, flat_workgroup(wid, nwg), lid);
    var acc = empty_range();
    if (slot.valid) {
        let r = tile_range(params.tiles, slot.tile);
        for (var i = r.x + slot.lane; i < r.y; i += params.tiles.lanes) {
            let x = values[i];
            if (is_finite_f32(x)) {
                acc.lo = min(acc.lo, x);
                acc.hi = max(acc.hi, x);
            } else {
                acc.nonfinite += 1u;
            }
        }
    }
    finish_tile(slot, lid, acc);
}

// Pass 2..: ranges of tiles of earlier partial ranges.
@compute @workgroup_size(256)
fn reduce_partials(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let slot = tile_slot(params.tiles, flat_workgroup(wid, nwg), lid);
    var acc = empty_range();
    if (slot.valid) {
        let r = tile_range(params.tiles, slot.tile);
        for (var i = r.x + slot.lane; i < r.y; i += params.tiles.lanes) {
            acc = merge(acc, partials[i]);
        }
    }
    finish_tile(slot, lid, acc);
}

// Running range: state ← batch on the first call, else state + m·(batch − state). A side
// without finite values (lo > hi, the empty range) never enters the average: an empty batch
// only adds its count, and an empty state takes the batch.
@compute @workgroup_size(256)
fn ema_update(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    let batch = partials[g];
    if (params.ema_first != 0u) {
        ranges[g] = batch;
        return;
    }
    let state = ranges[g];
    let count = state.nonfinite + batch.nonfinite;
    if (!(batch.lo <= batch.hi)) {
        ranges[g] = GroupRange(state.lo, state.hi, count, 0u);
        return;
    }
    if (!(state.lo <= state.hi)) {
        ranges[g] = GroupRange(batch.lo, batch.hi, count, 0u);
        return;
    }
    let m = params.ema_momentum;
    ranges[g] = GroupRange(state.lo + m * (batch.lo - state.lo),
                           state.hi + m * (batch.hi - state.hi),
                           count, 0u);
}
