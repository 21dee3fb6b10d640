// Parameter updates on the device, elementwise: SGD with momentum and Adam (Kingma & Ba 2015,
// Algorithm 1), with optional weight decay and a floor that keeps LSQ steps positive.
// Needs common.wgsl before it.

// Mirrors `OptimizerParams` in src/gpu/optimizer.rs (48 bytes).
struct OptimizerParams {
    n: u32,
    base: u32,
    num_workgroups: u32,
    use_floor: u32,     // 1: w = max(w, floor) after the step
    lr: f32,
    momentum: f32,      // SGD μ
    beta1: f32,         // Adam β1
    beta2: f32,         // Adam β2
    eps: f32,
    weight_decay: f32,  // L2 added to the gradient
    bias_corr1: f32,    // Adam 1 − β1^t
    bias_corr2: f32,    // Adam 1 − β2^t
    floor: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: OptimizerParams;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
}

fn finish(k: u32, x: f32) {
    w[k] = select(x, max(x, params.floor), params.use_floor != 0u);
}

// m ← μ·m + g + λ·w;  w ← w − lr·m
@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= params.n) { return; }
    let k = params.base + i;
    let g = grad[k] + params.weight_decay * w[k];
    let mk = params.momentum * m[k] + g;
    m[k] = mk;
    finish(k, w[k] - params.lr * mk);
}

// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  w ← w − lr·(m/c1)/(√(v/c2) + ε)
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= params.n) { return; }
    let k = params.base + i;
    let g = grad[k] + params.weight_decay * w[k];
    let mk = params.beta1 * m[k] + (1.0 - params.beta1) * g;
    let vk = params.beta2 * v[k] + (1.0 - params.beta2) * g * g;
    m[k] = mk;
    v[k] = vk;
    let update = (mk / params.bias_corr1) / (sqrt(vk / params.bias_corr2) + params.eps);
    finish(k, w[k] - params.lr * update);
}
