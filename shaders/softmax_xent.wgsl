// Softmax cross-entropy over rows of logits: per row the loss log Σ e^z − z_label, whether
// the arg-max is the label, and ∂L/∂z = (softmax(z) − onehot)/rows for the mean loss.
// One thread per row. Needs common.wgsl before it.

// Mirrors `SoftmaxXentParams` in src/gpu/softmax_xent.rs (16 bytes).
struct SoftmaxXentParams {
    rows: u32,
    classes: u32,
    num_workgroups: u32,
    grad_scale: f32,    // 1/rows of the whole batch, for the mean loss
}

@group(0) @binding(0) var<uniform> params: SoftmaxXentParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> correct: array<u32>;

@compute @workgroup_size(256)
fn softmax_xent(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (r >= params.rows) { return; }
    let base = r * params.classes;
    let label = labels[r];
    var zmax = logits[base];
    var best = 0u;
    for (var c = 1u; c < params.classes; c++) {
        let z = logits[base + c];
        if (z > zmax) { zmax = z; best = c; }
    }
    var total = 0.0;
    for (var c = 0u; c < params.classes; c++) {
        total += exp(logits[base + c] - zmax);
    }
    loss[r] = log(total) + zmax - logits[base + label];
    correct[r] = select(0u, 1u, best == label);
    for (var c = 0u; c < params.classes; c++) {
        let p = exp(logits[base + c] - zmax) / total;
        grad[base + c] = (p - select(0.0, 1.0, c == label)) * params.grad_scale;
    }
}
