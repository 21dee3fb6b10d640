// Fake-quant forward of the weighted-entropy log quantizer of activations (ALGORITHMS.md §3),
// ReLU merged, elementwise: x ≤ 0 → 0; else q = min(L − 2, ⌊(k − o + h)/step⌋) with
// k = floor(16·log2 x) exact, h = step/2; q < 0 → 0; else 2^((o + q·step)/16). NaN passes
// through. Step and offset come from a `WeqActResult` record (the sweep's output, or one the
// host wrote). Mirrors src/cpu/weq_act_forward.rs. Needs common.wgsl and weq_act.wgsl first.

// Mirrors `WeqActForwardParams` in src/gpu/weq_act_forward.rs (32 bytes).
struct WeqActForwardParams {
    n: u32,              // elements in this dispatch
    base: u32,           // first element in the bound input window
    out_base: u32,       // first element in the bound output window
    num_workgroups: u32,
    levels: u32,         // non-zero levels L − 1
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: WeqActForwardParams;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> quant: array<WeqActResult>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// Code of a non-NaN x: 0 for the zero level, q + 1 for level r_{q+1}.
fn weq_act_code(b: u32, step: u32, offset: i32) -> u32 {
    if (b == 0u || b >= 0x80000000u) { return 0u; }
    let t = weq_act_klog(b) - offset + i32(step / 2u);
    if (t < 0) { return 0u; }
    return min(u32(t) / step, params.levels - 1u) + 1u;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (i >= params.n) { return; }
    let b = x[params.base + i];
    let step = quant[0].step;
    let offset = quant[0].offset;
    var out = 0u;
    if (weq_act_nonfinite(b) && (b & 0x7fffffu) != 0u) {
        out = b;
    } else {
        let c = weq_act_code(b, step, offset);
        if (c != 0u) { out = weq_act_pow16(offset + i32((c - 1u) * step)); }
    }
    y[params.out_base + i] = out;
}
