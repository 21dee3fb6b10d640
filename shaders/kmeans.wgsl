// 1-D k-means update (Deep Compression §3, Han, Mao, Dally 2016; ALGORITHMS.md §5), after the
// assignment pass (codebook_assign with midpoint thresholds). kmeans_partials: each thread
// sums its share of the values per cluster (and counts them, and counts codes that changed
// since the last iteration) into its own record, with no barrier (a workgroup wider than a
// binding in parts, each extending the records). kmeans_update: one workgroup per cluster;
// lane l adds the records of threads l, l + 256, … in order (windows of records extending the
// lanes' running sums when they exceed a binding), then the lanes are added in fixed order.
// Device limits never change the order of an f32 addition: src/cpu/kmeans.rs repeats it.
// kmeans_finish: the new centroids (means; empty clusters keep theirs) or, for the fine-tuning
// gradient, the sums, and the midpoint thresholds of the next assignment.
// Needs common.wgsl and unpack.wgsl.

// Mirrors `KmeansParams` in src/gpu/kmeans.rs (64 bytes).
struct KmeansParams {
    len: u32,             // kmeans_partials: elements of the dispatch
    elem_base: u32,       // index of the dispatch's first element in the bound values
    code_base: u32,       // word of that element in the bound codes (it starts a word)
    mask_base: u32,       // word of that element in the bound keep-mask
    clusters: u32,        // k = 2^bits
    bits: u32,
    flags: u32,           // MASKED, COUNT_CHANGES, WRITE_SUMS, FIRST/LAST_WINDOW, ACCUMULATE
    num_workgroups: u32,
    rec_base: u32,        // record of the dispatch's (window's) first thread in the bound records
    changed_base: u32,    // its changed count in the bound counts
    threads: u32,         // kmeans_update: threads in the window
    elems_per_thread: u32,
    cluster_first: u32,   // kmeans_update: the dispatch's first cluster
    lane_base: u32,       // kmeans_update: lane 0 of that cluster in the bound lane sums
    _pad1: u32,
    _pad2: u32,
}

// Per thread (or in total) and cluster: the sum of the values and their count.
struct ClusterSum {
    sum: f32,
    count: u32,
}

const MASKED: u32 = 1u;
const COUNT_CHANGES: u32 = 2u;
const WRITE_SUMS: u32 = 4u;
const FIRST_WINDOW: u32 = 8u;
const LAST_WINDOW: u32 = 16u;
const ACCUMULATE: u32 = 32u;
const MAX_CLUSTERS: u32 = 256u;

@group(0) @binding(0) var<uniform> params: KmeansParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<u32>;          // codes (unpack.wgsl reads `src`)
@group(0) @binding(3) var<storage, read> old_codes: array<u32>;
@group(0) @binding(4) var<storage, read> keep: array<u32>;
@group(0) @binding(5) var<storage, read_write> partials: array<ClusterSum>;
@group(0) @binding(6) var<storage, read_write> changed: array<u32>;
@group(0) @binding(7) var<storage, read_write> centroids: array<f32>;
@group(0) @binding(8) var<storage, read_write> thresholds: array<f32>;
@group(0) @binding(9) var<storage, read_write> status: array<u32>;
@group(0) @binding(10) var<storage, read_write> totals: array<ClusterSum>;
@group(0) @binding(11) var<storage, read_write> lanes: array<ClusterSum>;   // k × 256, cluster major

var<workgroup> wg_sum: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_count: array<u32, WORKGROUP_SIZE>;

fn old_code(i: u32) -> u32 {
    let bit = i * params.bits;
    let w = params.code_base + bit / 32u;
    let shift = bit % 32u;
    var code = old_codes[w] >> shift;
    if (shift + params.bits > 32u) { code |= old_codes[w + 1u] << (32u - shift); }
    return code & ((1u << params.bits) - 1u);
}

// The value of element i for the sums, or None-like: `kept` false when the mask drops it.
struct Element {
    value: f32,
    code: u32,
    kept: bool,
}

fn element(i: u32) -> Element {
    var kept = true;
    if ((params.flags & MASKED) != 0u) {
        let m = params.mask_base * 32u + i;
        kept = ((keep[m / 32u] >> (m % 32u)) & 1u) == 1u;
    }
    return Element(values[params.elem_base + i], unpack_code(params.code_base, i, params.bits), kept);
}

// Workgroup w of the dispatch covers elements [w·256·E, (w+1)·256·E); thread l of it takes
// elements w·256·E + e·256 + l, e = 0..E−1 (neighbouring threads read neighbouring elements)
// and sums them per cluster, in e order, into its own record: no barrier, and a fixed order
// of every addition. Up to 16 clusters the sums are vector selects over blocks of 4 clusters
// (no per-element indexing of thread-private arrays, which a SIMD device turns into
// gathers and scatters); more clusters index the accumulators by code. ACCUMULATE starts
// from the records (and counts) instead of zero: the dispatch is a later part of a workgroup.
@compute @workgroup_size(256)
fn kmeans_partials(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let t = wg * WORKGROUP_SIZE + lid;
    let first = wg * WORKGROUP_SIZE * params.elems_per_thread + lid;
    let extend = (params.flags & ACCUMULATE) != 0u;
    var moved = 0u;
    if (extend) { moved = changed[params.changed_base + t]; }
    let rec = params.rec_base + t * params.clusters;
    if (params.clusters <= 16u) {
        var start_s = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
        var start_n = array<vec4<u32>, 4>(vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u), vec4<u32>(0u));
        if (extend) {
            for (var j = 0u; j < params.clusters; j++) {
                let r = partials[rec + j];
                start_s[j / 4u][j % 4u] = r.sum;
                start_n[j / 4u][j % 4u] = r.count;
            }
        }
        // Four named accumulators (not an array) so they stay in registers.
        var s0 = start_s[0];
        var s1 = start_s[1];
        var s2 = start_s[2];
        var s3 = start_s[3];
        var n0 = start_n[0];
        var n1 = start_n[1];
        var n2 = start_n[2];
        var n3 = start_n[3];
        let lane = vec4<u32>(0u, 1u, 2u, 3u);
        for (var e = 0u; e < params.elems_per_thread; e++) {
            let i = first + e * WORKGROUP_SIZE;
            let el = element(min(i, params.len - 1u));
            let v = select(0.0, el.value, el.kept && i < params.len);
            let c = select(MAX_CLUSTERS, el.code, el.kept && i < params.len);
            let h0 = vec4<u32>(c) == lane;
            let h1 = vec4<u32>(c) == lane + vec4<u32>(4u);
            let h2 = vec4<u32>(c) == lane + vec4<u32>(8u);
            let h3 = vec4<u32>(c) == lane + vec4<u32>(12u);
            s0 += select(vec4<f32>(0.0), vec4<f32>(v), h0);
            s1 += select(vec4<f32>(0.0), vec4<f32>(v), h1);
            s2 += select(vec4<f32>(0.0), vec4<f32>(v), h2);
            s3 += select(vec4<f32>(0.0), vec4<f32>(v), h3);
            n0 += select(vec4<u32>(0u), vec4<u32>(1u), h0);
            n1 += select(vec4<u32>(0u), vec4<u32>(1u), h1);
            n2 += select(vec4<u32>(0u), vec4<u32>(1u), h2);
            n3 += select(vec4<u32>(0u), vec4<u32>(1u), h3);
            if ((params.flags & COUNT_CHANGES) != 0u) {
                moved += select(0u, 1u, c < MAX_CLUSTERS && c != old_code(min(i, params.len - 1u)));
            }
        }
        let sums = array<vec4<f32>, 4>(s0, s1, s2, s3);
        let counts = array<vec4<u32>, 4>(n0, n1, n2, n3);
        for (var j = 0u; j < params.clusters; j++) {
            partials[rec + j] = ClusterSum(sums[j / 4u][j % 4u], counts[j / 4u][j % 4u]);
        }
    } else {
        var sums: array<f32, MAX_CLUSTERS>;
        var counts: array<u32, MAX_CLUSTERS>;
        if (extend) {
            for (var j = 0u; j < params.clusters; j++) {
                let r = partials[rec + j];
                sums[j] = r.sum;
                counts[j] = r.count;
            }
        }
        for (var e = 0u; e < params.elems_per_thread; e++) {
            let i = first + e * WORKGROUP_SIZE;
            if (i >= params.len) { break; }
            let el = element(i);
            if (!el.kept) { continue; }
            sums[el.code] += el.value;
            counts[el.code] += 1u;
            if ((params.flags & COUNT_CHANGES) != 0u && el.code != old_code(i)) { moved += 1u; }
        }
        for (var j = 0u; j < params.clusters; j++) {
            partials[rec + j] = ClusterSum(sums[j], counts[j]);
        }
    }
    changed[params.changed_base + t] = moved;
}

// Adds the lanes' (sum, count) in fixed order with two barriers: every 16th lane its 16,
// then lane 0 those. A leader reads only its own block and overwrites only its own slot.
fn reduce_lanes(lid: u32, s: f32, n: u32) -> ClusterSum {
    wg_sum[lid] = s;
    wg_count[lid] = n;
    workgroupBarrier();
    if (lid % 16u == 0u) {
        var bs = 0.0;
        var bn = 0u;
        for (var k = 0u; k < 16u; k++) {
            bs += wg_sum[lid + k];
            bn += wg_count[lid + k];
        }
        wg_sum[lid] = bs;
        wg_count[lid] = bn;
    }
    workgroupBarrier();
    var total = ClusterSum(0.0, 0u);
    if (lid == 0u) {
        for (var k = 0u; k < WORKGROUP_SIZE; k += 16u) {
            total.sum += wg_sum[k];
            total.count += wg_count[k];
        }
    }
    return total;
}

// One workgroup per cluster j: lane l adds the window's records l, l + 256, … in order onto
// its running sum (from zero in the first window, carried in `lanes` between windows); after
// the last window the lanes are added in fixed order into totals[j]. Cluster 0's workgroup
// also totals the window's changed codes into status[0].
@compute @workgroup_size(256)
fn kmeans_update(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let j = params.cluster_first + wg;
    let first = (params.flags & FIRST_WINDOW) != 0u;
    let lane = params.lane_base + wg * WORKGROUP_SIZE + lid;
    var s = 0.0;
    var n = 0u;
    if (!first) {
        let c = lanes[lane];
        s = c.sum;
        n = c.count;
    }
    for (var t = lid; t < params.threads; t += WORKGROUP_SIZE) {
        let r = partials[params.rec_base + t * params.clusters + j];
        s += r.sum;
        n += r.count;
    }
    if ((params.flags & LAST_WINDOW) != 0u) {
        let total = reduce_lanes(lid, s, n);
        if (lid == 0u) { totals[j] = total; }
    } else {
        lanes[lane] = ClusterSum(s, n);
    }
    if (j == 0u) {
        var moved = 0u;
        for (var t = lid; t < params.threads; t += WORKGROUP_SIZE) {
            moved += changed[params.changed_base + t];
        }
        workgroupBarrier();
        let m = reduce_lanes(lid, 0.0, moved);
        if (lid == 0u) {
            if (first) { status[0] = m.count; } else { status[0] += m.count; }
        }
    }
}

// One workgroup: every lane computes the new centroids it needs (its own and the next) from
// the totals and the old centroids, then, after a barrier, writes its centroid and its
// threshold (the midpoint, the last +inf; mirrors `midpoint_thresholds`). WRITE_SUMS writes
// the totals' sums instead and leaves the thresholds alone.
fn new_centroid(j: u32) -> f32 {
    let t = totals[j];
    if ((params.flags & WRITE_SUMS) != 0u) { return t.sum; }
    // Mirrored by cpu::kmeans::update_centroids; WGSL lets f32 division be off by 2.5 ulp,
    // so bit parity with the CPU holds where the device divides correctly rounded.
    if (t.count > 0u) { return t.sum / f32(t.count); }
    return centroids[j];
}

@compute @workgroup_size(256)
fn kmeans_finish(@builtin(local_invocation_index) lid: u32) {
    var c = 0.0;
    var t = bitcast<f32>(0x7f800000u);
    if (lid < params.clusters) {
        c = new_centroid(lid);
        if (lid + 1u < params.clusters) { t = c * 0.5 + new_centroid(lid + 1u) * 0.5; }
    }
    storageBarrier();
    workgroupBarrier();
    if (lid < params.clusters) {
        centroids[lid] = c;
        if ((params.flags & WRITE_SUMS) == 0u) { thresholds[lid] = t; }
    }
}
