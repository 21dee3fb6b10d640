// Fine histograms of |w| for weighted-entropy quantization (ALGORITHMS.md §3, GPU form; Park,
// Ahn, Yoo, CVPR 2017): per group, `bins` equal bins over [0, 2^e) holding the count and
// Σt² (t = |w|·bins/2^e, the magnitude in bin units) as a 64-bit fixed-point sum, both by
// integer atomics so the histogram is the same on every run; then per-group prefix sums in a
// fixed tree order. Needs common.wgsl, affine.wgsl and weq.wgsl before it.

// Mirrors `WeqHistogramParams` in src/gpu/weq_histogram.rs (48 bytes).
struct WeqHistogramParams {
    group_len: u32,
    bins: u32,
    log2_bins: u32,
    len: u32,            // histogram: elements in this dispatch; scan: groups
    elem_first: u32,     // global index of the element at `elem_base` of the bound values
    elem_base: u32,
    group_first: u32,    // global index of the batch's first group (histogram group 0)
    range_first: u32,    // global index of the group at `group_base` of the bound ranges
    group_base: u32,
    hist_base: u32,      // word of histogram group 0's bin 0 in the bound histogram
    prefix_base: u32,    // entry of histogram group 0's prefix 0 in the bound prefix
    num_workgroups: u32,
}

// One bin's running totals up to (not including) a bin: count and Σt².
struct Prefix {
    count: u32,
    energy: f32,
}

const ELEMS_PER_THREAD: u32 = 4u;
// Words per bin: count, Σ low word, Σ high word.
const BIN_WORDS: u32 = 3u;

@group(0) @binding(0) var<uniform> params: WeqHistogramParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> bins_in: array<u32>;
@group(0) @binding(5) var<storage, read_write> prefix: array<Prefix>;

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    for (var k = 0u; k < ELEMS_PER_THREAD; k++) {
        let i = (wg * ELEMS_PER_THREAD + k) * WORKGROUP_SIZE + lid;
        if (i >= params.len) { continue; }
        let global = (params.elem_first + i) / params.group_len;
        let g = global - params.group_first;
        let e = weq_span_exponent(ranges[params.group_base + global - params.range_first]);
        // Scaling by a power of two is exact: bin edges are exact multiples of 2^(e − log2 bins).
        let t = weq_magnitude(values[params.elem_base + i]) * weq_pow2(i32(params.log2_bins) - e);
        let bin = min(u32(floor(t)), params.bins - 1u);
        let q = u32(floor(t * t * weq_pow2(weq_bin_shift(bin))));
        let w = params.hist_base + (g * params.bins + bin) * BIN_WORDS;
        atomicAdd(&hist[w], 1u);
        let old = atomicAdd(&hist[w + 1u], q);
        // Integer adds commute, so the carry count (and the sum) is order-independent.
        if (old + q < old) { atomicAdd(&hist[w + 2u], 1u); }
    }
}

var<workgroup> scan_count: array<u32, WORKGROUP_SIZE>;
var<workgroup> scan_energy: array<f32, WORKGROUP_SIZE>;

// Σt² of one bin; u32 halves are converted in exact 16-bit pieces and products are by powers
// of two, so the value is the same with or without fused multiply-adds.
fn bin_energy(base: u32, bin: u32) -> f32 {
    let lo = bins_in[base + 1u];
    let hi = bins_in[base + 2u];
    let lo_f = f32(lo >> 16u) * 65536.0 + f32(lo & 0xffffu);
    let hi_f = f32(hi >> 16u) * 65536.0 + f32(hi & 0xffffu);
    return (hi_f * 4294967296.0 + lo_f) * weq_pow2(-weq_bin_shift(bin));
}

// Prefix sums of one group per workgroup: each thread sums a run of bins, a Hillis–Steele scan
// over the 256 runs (fixed order) gives each run's offset, then each thread writes its run.
@compute @workgroup_size(256)
fn scan(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg);
    if (g >= params.len) { return; }
    let per = (params.bins + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
    let start = min(lid * per, params.bins);
    let end = min(start + per, params.bins);
    let hbase = params.hist_base + g * params.bins * BIN_WORDS;
    var c = 0u;
    var s = 0.0;
    for (var b = start; b < end; b++) {
        c += bins_in[hbase + b * BIN_WORDS];
        s += bin_energy(hbase + b * BIN_WORDS, b);
    }
    scan_count[lid] = c;
    scan_energy[lid] = s;
    for (var d = 1u; d < WORKGROUP_SIZE; d = d * 2u) {
        workgroupBarrier();
        var ca = 0u;
        var sa = 0.0;
        if (lid >= d) {
            ca = scan_count[lid - d];
            sa = scan_energy[lid - d];
        }
        workgroupBarrier();
        scan_count[lid] += ca;
        scan_energy[lid] += sa;
    }
    workgroupBarrier();
    // Exclusive offset of this run: the inclusive total of the run before it.
    var oc = 0u;
    var os = 0.0;
    if (lid > 0u) {
        oc = scan_count[lid - 1u];
        os = scan_energy[lid - 1u];
    }
    let pbase = params.prefix_base + g * (params.bins + 1u);
    if (lid == 0u) { prefix[pbase] = Prefix(0u, 0.0); }
    for (var b = start; b < end; b++) {
        oc += bins_in[hbase + b * BIN_WORDS];
        os += bin_energy(hbase + b * BIN_WORDS, b);
        prefix[pbase + b + 1u] = Prefix(oc, os);
    }
}
