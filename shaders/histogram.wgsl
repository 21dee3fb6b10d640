// Per-group histograms of values over each group's range, and percentile clipping from them
// (ALGORITHMS.md §1, percentile calibration). Counts are integer atomics, so the histogram is
// the same on every run whatever the order of the adds.
// Needs common.wgsl and affine.wgsl before it.

// Mirrors `HistogramParams` in src/gpu/histogram.rs (64 bytes).
struct HistogramParams {
    group_len: u32,
    bins: u32,
    symmetric: u32,     // 1: histogram of |x| over [0, max(|lo|, |hi|)]
    len: u32,           // histogram: elements in this dispatch; select: groups
    elem_first: u32,    // global index of the element at `elem_base` of the bound values
    elem_base: u32,
    group_first: u32,   // global index of the group at `group_base` of the bound ranges
    group_base: u32,
    hist_base: u32,     // word of group_first's bin 0 in the bound histogram
    num_workgroups: u32,
    p_lo: f32,          // lower clip quantile, 1 − P/100
    p_hi: f32,          // upper clip quantile, P/100
    out_base: u32,      // index of group_first in the bound output ranges
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const ELEMS_PER_THREAD: u32 = 4u;

@group(0) @binding(0) var<uniform> params: HistogramParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> clipped: array<GroupRange>;

// The histogram's span for a group: [lo, hi] or, symmetric, [0, max(|lo|, |hi|)].
fn hist_span(r: GroupRange) -> vec2<f32> {
    if (params.symmetric != 0u) { return vec2<f32>(0.0, max(abs(r.lo), abs(r.hi))); }
    return vec2<f32>(r.lo, r.hi);
}

// Bin of v in [lo, hi] cut into `bins` equal bins; mirrors `bin_of` in src/cpu/histogram.rs.
fn bin_of(v: f32, lo: f32, hi: f32, bins: u32) -> u32 {
    if (!(hi > lo)) { return 0u; }
    let t = floor((v - lo) * (f32(bins) / (hi - lo)));
    return u32(clamp(t, 0.0, f32(bins - 1u)));
}

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    for (var k = 0u; k < ELEMS_PER_THREAD; k++) {
        let i = (wg * ELEMS_PER_THREAD + k) * WORKGROUP_SIZE + lid;
        if (i >= params.len) { continue; }
        var v = values[params.elem_base + i];
        if (!is_finite_f32(v)) { continue; }
        let g = (params.elem_first + i) / params.group_len - params.group_first;
        let span = hist_span(ranges[params.group_base + g]);
        if (params.symmetric != 0u) { v = abs(v); }
        let b = bin_of(v, span.x, span.y, params.bins);
        atomicAdd(&hist[params.hist_base + g * params.bins + b], 1u);
    }
}

// First bin whose running count reaches `rank` (1-based) in a group's histogram at `base`.
fn bin_at_rank(base: u32, rank: u32) -> u32 {
    var cum = 0u;
    for (var b = 0u; b < params.bins; b++) {
        cum += counts[base + b];
        if (cum >= rank) { return b; }
    }
    return params.bins - 1u;
}

// Clip each group's range at the P-th percentile (and, asymmetric, the (100−P)-th): the upper
// end becomes the upper edge of the bin holding rank ceil(P·n), the lower end the lower edge of
// the bin holding rank ceil((1−P)·n).
@compute @workgroup_size(256)
fn percentile_select(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let g = wg * WORKGROUP_SIZE + lid;
    if (g >= params.len) { return; }
    let r = ranges[params.group_base + g];
    let base = params.hist_base + g * params.bins;
    var n = 0u;
    for (var b = 0u; b < params.bins; b++) { n += counts[base + b]; }
    var out = r;
    if (n > 0u) {
        let span = hist_span(r);
        let width = (span.y - span.x) / f32(params.bins);
        let b_hi = bin_at_rank(base, max(1u, u32(ceil(params.p_hi * f32(n)))));
        let hi = min(span.y, span.x + f32(b_hi + 1u) * width);
        if (params.symmetric != 0u) {
            out.lo = -hi;
            out.hi = hi;
        } else {
            let b_lo = bin_at_rank(base, max(1u, u32(ceil(params.p_lo * f32(n)))));
            out.lo = max(span.x, span.x + f32(b_lo) * width);
            out.hi = hi;
        }
    }
    clipped[params.out_base + g] = out;
}
