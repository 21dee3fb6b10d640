// MSE-optimal clipping (ALGORITHMS.md §1): for every group, the clip ratio r_k = (K − k)/K,
// k = 0..K−1, whose range (r·lo, r·hi) minimises Σ (x − x̂)² after affine fake quantization.
// Errors are tree-reduced per tile in fixed order; a group's best ratio is the first minimum.
// Needs common.wgsl, affine.wgsl and tiles.wgsl before it.

// Mirrors `ClipSearchParams` in src/gpu/clip_search.rs (80 bytes).
struct ClipSearchParams {
    tiles: TileParams,
    qmin: i32,
    qmax: i32,
    symmetric: u32,
    candidates: u32,     // K
    num_groups: u32,     // clip_select: groups in the dispatch
    num_workgroups: u32, // clip_select
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: ClipSearchParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> errors: array<f32>;
@group(0) @binding(4) var<storage, read> tile_errors: array<f32>;
@group(0) @binding(5) var<storage, read_write> best: array<GroupRange>;

var<workgroup> wg_err: array<f32, WORKGROUP_SIZE>;

fn candidate_ratio(k: u32) -> f32 {
    return f32(params.candidates - k) / f32(params.candidates);
}

fn clipped(r: GroupRange, k: u32) -> GroupRange {
    let ratio = candidate_ratio(k);
    return GroupRange(r.lo * ratio, r.hi * ratio, r.nonfinite, 0u);
}

// Squared error of fake-quantizing the lane's share of [start, end) with range c.
fn lane_error(c: GroupRange, start: u32, end: u32, lanes: u32) -> f32 {
    let p = affine_from_range(c.lo, c.hi, params.qmin, params.qmax, params.symmetric != 0u);
    var acc = 0.0;
    for (var i = start; i < end; i += lanes) {
        let x = values[i];
        if (is_finite_f32(x)) {
            let d = x - dequantize_code(quantize_code(x, p.scale, p.zero, params.qmin, params.qmax),
                                        p.scale, p.zero);
            acc += d * d;
        }
    }
    return acc;
}

// Per tile and candidate, the summed squared error. A group of one tile picks its best
// candidate here; larger groups write per-tile errors for clip_select.
@compute @workgroup_size(256)
fn clip_errors(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = params.tiles;
    let slot = tile_slot(t, flat_workgroup(wid, nwg), lid);
    var r = GroupRange(0.0, 0.0, 0u, 0u);
    var span = vec2<u32>(0u, 0u);
    if (slot.valid) {
        r = ranges[tile_group(t, slot.tile)];
        span = tile_range(t, slot.tile);
    }
    var best_err = bitcast<f32>(0x7f800000u);
    var best_k = 0u;
    for (var k = 0u; k < params.candidates; k++) {
        wg_err[lid] = lane_error(clipped(r, k), span.x + slot.lane, span.y, t.lanes);
        for (var s = t.lanes / 2u; s > 0u; s = s / 2u) {
            workgroupBarrier();
            if (slot.lane < s) { wg_err[lid] = wg_err[lid] + wg_err[lid + s]; }
        }
        workgroupBarrier();
        let e = wg_err[lid];
        if (slot.valid && slot.lane == 0u) {
            if (t.tiles_per_group == 1u) {
                if (e < best_err) { best_err = e; best_k = k; }
            } else {
                errors[(t.out_base + slot.tile - t.first_tile) * params.candidates + k] = e;
            }
        }
        workgroupBarrier();
    }
    if (slot.valid && slot.lane == 0u && t.tiles_per_group == 1u) {
        best[tile_group(t, slot.tile)] = clipped(r, best_k);
    }
}

// Groups of several tiles: sum each candidate's errors over the group's tiles in order and
// keep the first minimum. One thread per group.
@compute @workgroup_size(256)
fn clip_select(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let g = wg * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    let t = params.tiles;
    let first_tile = (t.group_first + g) * t.tiles_per_group - t.first_tile + t.out_base;
    var best_err = bitcast<f32>(0x7f800000u);
    var best_k = 0u;
    for (var k = 0u; k < params.candidates; k++) {
        var e = 0.0;
        for (var j = 0u; j < t.tiles_per_group; j++) {
            e += tile_errors[(first_tile + j) * params.candidates + k];
        }
        if (e < best_err) { best_err = e; best_k = k; }
    }
    best[t.group_base + g] = clipped(ranges[t.group_base + g], best_k);
}
