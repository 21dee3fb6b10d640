// LSQ / LSQ+ quantizer with a learnable step s and offset β per group (Esser et al. 2020,
// Bhalgat et al. 2020; ALGORITHMS.md §2): v̄ = round(clamp((v − β)/s, −QN, QP)),
// v̂ = v̄·s + β. The backward pass is one fused sweep over v and ∂L/∂v̂ writing v̂ and the
// straight-through ∂L/∂v and reducing ∂L/∂s and ∂L/∂β per tile; lsq_reduce sums the tiles of
// each group in order. No per-element step gradients are stored.
// Needs common.wgsl and tiles.wgsl before it.

// Mirrors `LsqParams` in src/gpu/lsq.rs (96 bytes).
struct LsqParams {
    tiles: TileParams,  // elem_base and group_base are 0: each tensor has its own base below
    qn: f32,            // QN: 2^(b−1) for signed weights, 0 for unsigned activations
    qp: f32,            // QP: 2^(b−1) − 1 signed, 2^b − 1 unsigned
    grad_scale: f32,    // g multiplying ∂L/∂s (LSQ §2.2: 1/√(N·QP), or the caller's)
    num_groups: u32,    // lsq_reduce: groups in the dispatch
    elem_bases: vec4<u32>,  // window bases of v, ∂L/∂v̂, ∂L/∂v, v̂
    group_bases: vec4<u32>, // window bases of s, β, ∂L/∂s, ∂L/∂β
}

@group(0) @binding(0) var<uniform> params: LsqParams;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> grad_vhat: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_v: array<f32>;
@group(0) @binding(6) var<storage, read_write> vhat: array<f32>;
@group(0) @binding(7) var<storage, read_write> partials: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read> partials_in: array<vec2<f32>>;
@group(0) @binding(9) var<storage, read_write> grad_step: array<f32>;
@group(0) @binding(10) var<storage, read_write> grad_beta: array<f32>;

// u = (v − β)/s clamped to [−QN, QP] then rounded half to even.
fn lsq_level(x: f32, s: f32, b: f32) -> f32 {
    return round(clamp((x - b) / s, -params.qn, params.qp));
}

@compute @workgroup_size(256)
fn lsq_forward(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = params.tiles;
    let slot = tile_slot(t, flat_workgroup(wid, nwg), lid);
    if (!slot.valid) { return; }
    let g = tile_group(t, slot.tile);
    let s = step[params.group_bases.x + g];
    let b = beta[params.group_bases.y + g];
    let r = tile_range(t, slot.tile);
    let e = params.elem_bases;
    for (var i = r.x + slot.lane; i < r.y; i += t.lanes) {
        vhat[e.w + i] = lsq_level(v[e.x + i], s, b) * s + b;
    }
}

// Fused backward: v̂, ∂L/∂v (straight-through inside the range, 0 outside) and per-tile
// Σ ∂L/∂v̂·∂v̂/∂s and Σ ∂L/∂v̂·∂v̂/∂β, with ∂v̂/∂s = round(u) − u inside, −QN below, QP above
// and ∂v̂/∂β = 0 inside, 1 outside (LSQ eq. 3, LSQ+ eq. 5).
@compute @workgroup_size(256)
fn lsq_backward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = params.tiles;
    let slot = tile_slot(t, flat_workgroup(wid, nwg), lid);
    var acc = vec4<f32>(0.0);
    if (slot.valid) {
        let g = tile_group(t, slot.tile);
        let s = step[params.group_bases.x + g];
        let b = beta[params.group_bases.y + g];
        let r = tile_range(t, slot.tile);
        let e = params.elem_bases;
        for (var i = r.x + slot.lane; i < r.y; i += t.lanes) {
            let u = (v[e.x + i] - b) / s;
            let dy = grad_vhat[e.y + i];
            var ds: f32;
            var db = 0.0;
            var dx = 0.0;
            if (u <= -params.qn) {
                ds = -params.qn;
                db = 1.0;
            } else if (u >= params.qp) {
                ds = params.qp;
                db = 1.0;
            } else {
                ds = round(u) - u;
                dx = dy;
            }
            grad_v[e.z + i] = dx;
            vhat[e.w + i] = round(clamp(u, -params.qn, params.qp)) * s + b;
            acc += vec4<f32>(dy * ds, dy * db, 0.0, 0.0);
        }
    }
    let sum = tree_sum4(lid, slot.lane, t.lanes, acc);
    if (slot.valid && slot.lane == 0u) {
        partials[t.out_base + slot.tile - t.first_tile] = sum.xy;
    }
}

// Per group: the tiles' partial sums added in order; ∂L/∂s scaled by g.
@compute @workgroup_size(256)
fn lsq_reduce(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    let t = params.tiles;
    let first = (t.group_first + g) * t.tiles_per_group - t.first_tile + t.out_base;
    var sum = vec2<f32>(0.0);
    for (var j = 0u; j < t.tiles_per_group; j++) {
        sum += partials_in[first + j];
    }
    grad_step[params.group_bases.z + g] = params.grad_scale * sum.x;
    grad_beta[params.group_bases.w + g] = sum.y;
}
