// Step-size initialisation on the device (ALGORITHMS.md §2): per-group moments Σ|v|, Σv, Σv²
// by tiled tree sums, then LSQ's s = 2·mean|v|/√QP (Esser et al. 2020 §2.1) or LSQ+'s weight
// rule s = max(|μ − 3σ|, |μ + 3σ|)/2^(b−1) (Bhalgat et al. 2020 §3.3); and the conversion of an
// affine (scale, zero point) found by the MSE search into LSQ+'s (s, β = −z·s).
// Needs common.wgsl and tiles.wgsl before it.

// Mirrors `LsqInitParams` in src/gpu/lsq_init.rs (64 bytes).
struct LsqInitParams {
    tiles: TileParams,
    mode: u32,          // 0: LSQ, 1: LSQ+ weights
    qp: f32,
    half_levels: f32,   // 2^(b−1)
    num_groups: u32,    // per-group entries: groups in the dispatch
}

@group(0) @binding(0) var<uniform> params: LsqInitParams;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> partials_in: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> step: array<f32>;
@group(0) @binding(5) var<storage, read_write> beta: array<f32>;
@group(0) @binding(6) var<storage, read> scale: array<f32>;
@group(0) @binding(7) var<storage, read> zero: array<i32>;

@compute @workgroup_size(256)
fn moments(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = params.tiles;
    let slot = tile_slot(t, flat_workgroup(wid, nwg), lid);
    var acc = vec4<f32>(0.0);
    if (slot.valid) {
        let r = tile_range(t, slot.tile);
        for (var i = r.x + slot.lane; i < r.y; i += t.lanes) {
            let x = v[i];
            acc += vec4<f32>(abs(x), x, x * x, 0.0);
        }
    }
    let sum = tree_sum4(lid, slot.lane, t.lanes, acc);
    if (slot.valid && slot.lane == 0u) {
        partials[t.out_base + slot.tile - t.first_tile] = sum;
    }
}

// Per group: the tiles' moments added in order, then the initial step; β = 0.
@compute @workgroup_size(256)
fn init_step(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    let t = params.tiles;
    let first = (t.group_first + g) * t.tiles_per_group - t.first_tile + t.out_base;
    var m = vec4<f32>(0.0);
    for (var j = 0u; j < t.tiles_per_group; j++) {
        m += partials_in[first + j];
    }
    let n = f32(t.group_len);
    var s: f32;
    if (params.mode == 0u) {
        s = 2.0 * (m.x / n) / sqrt(params.qp);
    } else {
        let mu = m.y / n;
        let sigma = sqrt(max(m.z / n - mu * mu, 0.0));
        s = max(abs(mu - 3.0 * sigma), abs(mu + 3.0 * sigma)) / params.half_levels;
    }
    // An all-zero group still needs a positive step.
    if (!(s > 0.0)) { s = 1.0; }
    step[t.group_base + g] = s;
    beta[t.group_base + g] = 0.0;
}

// (s, β) = (scale, −zero·scale): the same quantizer as the affine one (ALGORITHMS.md §2).
@compute @workgroup_size(256)
fn from_affine(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    step[g] = scale[g];
    beta[g] = -f32(zero[g]) * scale[g];
}
