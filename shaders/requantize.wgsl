// Requantization of int32 accumulators [rows, n] into int32 outputs (ALGORITHMS.md §6):
// y = clamp(zero + acc·M0·2^exponent, qmin, qmax) with one (M0, exponent) pair per column or
// one for all. Needs common.wgsl and fixed_point.wgsl.

// Mirrors `RequantizeParams` in src/gpu/requantize.rs (48 bytes).
struct RequantizeParams {
    len: u32,            // accumulators
    n: u32,              // columns
    acc_base: u32,       // first accumulator in its window
    mult_base: u32,      // first (M0, exponent) pair in its window, in i32 words
    per_channel: u32,    // 1: one pair per column
    out_zero: i32,
    out_qmin: i32,
    out_qmax: i32,
    y_base: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: RequantizeParams;
@group(0) @binding(1) var<storage, read> acc: array<i32>;
@group(0) @binding(2) var<storage, read> mult: array<i32>;  // (M0, exponent) pairs
@group(0) @binding(3) var<storage, read_write> y: array<i32>;

@compute @workgroup_size(256)
fn requantize(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (e >= params.len) { return; }
    let c = params.mult_base + 2u * select(0u, e % params.n, params.per_channel != 0u);
    y[params.y_base + e] = requantize_value(acc[params.acc_base + e], mult[c], mult[c + 1u],
                                            params.out_zero, params.out_qmin, params.out_qmax);
}
