// Histogram of k = floor(16·log2 x) for the weighted-entropy log quantizer of activations
// (ALGORITHMS.md §3): 1024 unit bins over the 64 octaves below the batch's largest value
// (bin k − k_lo, k_lo = k_top − 1023; lower values in bin 0), a count of finite x ≤ 0 and a
// count of NaN/±Inf. Each workgroup bins its elements in workgroup memory and adds its
// non-zero bins to the global words; integer atomics, so every run gives the same counts.
// Needs common.wgsl, affine.wgsl (GroupRange) and weq_act.wgsl before it.

// Mirrors `WeqActHistogramParams` in src/gpu/weq_act_histogram.rs (16 bytes).
struct WeqActHistogramParams {
    len: u32,            // elements in this dispatch
    base: u32,           // first element in the bound values window
    num_workgroups: u32,
    _pad: u32,
}

const ELEMS_PER_THREAD: u32 = 16u;
// Bins, the x ≤ 0 count and the non-finite count.
const COUNTED_WORDS: u32 = 1026u;

@group(0) @binding(0) var<uniform> params: WeqActHistogramParams;
@group(0) @binding(1) var<storage, read> values: array<u32>;
@group(0) @binding(2) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> hist: array<atomic<u32>>;

var<workgroup> local_hist: array<atomic<u32>, COUNTED_WORDS>;

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    for (var i = lid; i < COUNTED_WORDS; i += WORKGROUP_SIZE) { atomicStore(&local_hist[i], 0u); }
    workgroupBarrier();
    let k_lo = weq_act_k_top(ranges[0].hi) - i32(WEQ_ACT_BINS - 1u);
    for (var k = 0u; k < ELEMS_PER_THREAD; k++) {
        let i = (wg * ELEMS_PER_THREAD + k) * WORKGROUP_SIZE + lid;
        if (i >= params.len) { break; }
        let b = values[params.base + i];
        var w = WEQ_ACT_BINS;  // finite x ≤ 0
        if (weq_act_positive(b)) {
            w = u32(clamp(weq_act_klog(b) - k_lo, 0, i32(WEQ_ACT_BINS - 1u)));
        } else if (weq_act_nonfinite(b)) {
            w = WEQ_ACT_BINS + 1u;
        }
        atomicAdd(&local_hist[w], 1u);
    }
    workgroupBarrier();
    for (var i = lid; i < COUNTED_WORDS; i += WORKGROUP_SIZE) {
        let c = atomicLoad(&local_hist[i]);
        if (c != 0u) { atomicAdd(&hist[i], c); }
    }
}
