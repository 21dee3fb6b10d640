// (scale, zero point) of every group from its calibrated range (ALGORITHMS.md §1), so a
// calibrate-then-quantize chain stays on the device. One thread per group.
// Needs common.wgsl and affine.wgsl before it.

// Mirrors `AffineParamsParams` in src/gpu/affine_params.rs (32 bytes).
struct AffineParamsParams {
    num_groups: u32,
    qmin: i32,
    qmax: i32,
    symmetric: u32,
    num_workgroups: u32,
    range_base: u32,   // index of group 0 in the bound windows below
    scale_base: u32,
    zero_base: u32,
}

@group(0) @binding(0) var<uniform> params: AffineParamsParams;
@group(0) @binding(1) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> zero: array<i32>;

@compute @workgroup_size(256)
fn affine_params(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let g = wg * WORKGROUP_SIZE + lid;
    if (g >= params.num_groups) { return; }
    let r = ranges[params.range_base + g];
    let p = affine_from_range(r.lo, r.hi, params.qmin, params.qmax, params.symmetric != 0u);
    scale[params.scale_base + g] = p.scale;
    zero[params.zero_base + g] = p.zero;
}
