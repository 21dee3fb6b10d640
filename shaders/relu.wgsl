// ReLU and its gradient, elementwise. Needs common.wgsl before it.

// Mirrors `ReluParams` in src/gpu/relu.rs (16 bytes).
struct ReluParams {
    n: u32,              // elements in this dispatch
    base: u32,           // first element in the bound windows
    num_workgroups: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: ReluParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
}

// out = max(x, 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= params.n) { return; }
    out[params.base + i] = max(x[params.base + i], 0.0);
}

// out = dy where x > 0, else 0
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= params.n) { return; }
    let k = params.base + i;
    out[k] = select(0.0, dy[k], x[k] > 0.0);
}
