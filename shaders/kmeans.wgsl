// 1-D k-means update (Deep Compression §3, Han, Mao, Dally 2016; ALGORITHMS.md §5), after the
// assignment pass (codebook_assign with midpoint thresholds). kmeans_partials: each thread
// sums the values of its run of elements per cluster (and counts them, and counts codes that
// changed since the last iteration) into its own record, with no barrier; kmeans_update: one
// workgroup per cluster adds the threads' records in fixed order and moves the centroid to the
// mean (or, for the fine-tuning gradient, writes the sum); kmeans_thresholds: midpoints of the
// new centroids for the next assignment and the total of changed codes.
// Needs common.wgsl and unpack.wgsl.

// Mirrors `KmeansParams` in src/gpu/kmeans.rs (48 bytes).
struct KmeansParams {
    len: u32,             // kmeans_partials: elements of the dispatch
    elem_base: u32,       // index of the dispatch's first element in the bound values
    code_base: u32,       // word of that element in the bound codes (it starts a word)
    mask_base: u32,       // word of that element in the bound keep-mask
    clusters: u32,        // k = 2^bits
    bits: u32,
    flags: u32,           // 1: skip elements the mask drops; 2: count changed codes; 4: sums
    num_workgroups: u32,
    thread_base: u32,     // record of the dispatch's first thread (partials) / first cluster
    threads: u32,         // kmeans_update: thread records in all
    elems_per_thread: u32,
    _pad: u32,
}

// Per thread and cluster: the sum of the values and their count.
struct ClusterSum {
    sum: f32,
    count: u32,
}

const MASKED: u32 = 1u;
const COUNT_CHANGES: u32 = 2u;
const WRITE_SUMS: u32 = 4u;
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

var<workgroup> wg_sum: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_count: array<u32, WORKGROUP_SIZE>;
var<workgroup> wg_changed: atomic<u32>;

fn old_code(i: u32) -> u32 {
    let bit = i * params.bits;
    let w = params.code_base + bit / 32u;
    let shift = bit % 32u;
    var code = old_codes[w] >> shift;
    if (shift + params.bits > 32u) { code |= old_codes[w + 1u] << (32u - shift); }
    return code & ((1u << params.bits) - 1u);
}

// Thread t of the dispatch covers elements [t·E, t·E + E): consecutive, so its record
// depends on nothing but its own run, and runs are added in thread order afterwards.
@compute @workgroup_size(256)
fn kmeans_partials(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let t = wg * WORKGROUP_SIZE + lid;
    let first = t * params.elems_per_thread;
    if (first >= params.len) { return; }
    let end = min(first + params.elems_per_thread, params.len);
    var sums: array<f32, MAX_CLUSTERS>;
    var counts: array<u32, MAX_CLUSTERS>;
    var moved = 0u;
    for (var i = first; i < end; i++) {
        if ((params.flags & MASKED) != 0u) {
            let m = params.mask_base * 32u + i;
            if (((keep[m / 32u] >> (m % 32u)) & 1u) == 0u) { continue; }
        }
        let code = unpack_code(params.code_base, i, params.bits);
        sums[code] += values[params.elem_base + i];
        counts[code] += 1u;
        if ((params.flags & COUNT_CHANGES) != 0u && code != old_code(i)) { moved += 1u; }
    }
    let rec = (params.thread_base + t) * params.clusters;
    for (var j = 0u; j < params.clusters; j++) {
        partials[rec + j] = ClusterSum(sums[j], counts[j]);
    }
    changed[params.thread_base + t] = moved;
}

// One workgroup per cluster: lane l adds records l, l + 256, … in order, then the lanes are
// added in fixed order (every 16th lane its 16, then lane 0 those); lane 0 writes the mean
// (the old centroid if the cluster is empty) or, with WRITE_SUMS, the sum.
@compute @workgroup_size(256)
fn kmeans_update(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let j = params.thread_base + wg;
    var s = 0.0;
    var n = 0u;
    for (var t = lid; t < params.threads; t += WORKGROUP_SIZE) {
        let r = partials[t * params.clusters + j];
        s += r.sum;
        n += r.count;
    }
    wg_sum[lid] = s;
    wg_count[lid] = n;
    workgroupBarrier();
    // A leader reads only its own block and then overwrites only its own slot.
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
    if (lid == 0u) {
        var total = 0.0;
        var count = 0u;
        for (var k = 0u; k < WORKGROUP_SIZE; k += 16u) {
            total += wg_sum[k];
            count += wg_count[k];
        }
        if ((params.flags & WRITE_SUMS) != 0u) {
            centroids[j] = total;
        } else if (count > 0u) {
            centroids[j] = total / f32(count);
        }
    }
}

// One workgroup: nearest-centroid thresholds (midpoints, the last +inf; mirrors
// `midpoint_thresholds`) and status[0] = codes that changed in all.
@compute @workgroup_size(256)
fn kmeans_thresholds(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { atomicStore(&wg_changed, 0u); }
    workgroupBarrier();
    var moved = 0u;
    for (var t = lid; t < params.threads; t += WORKGROUP_SIZE) { moved += changed[t]; }
    atomicAdd(&wg_changed, moved);
    for (var j = lid; j < params.clusters; j += WORKGROUP_SIZE) {
        if (j + 1u < params.clusters) {
            thresholds[j] = centroids[j] * 0.5 + centroids[j + 1u] * 0.5;
        } else {
            thresholds[j] = bitcast<f32>(0x7f800000u);
        }
    }
    workgroupBarrier();
    if (lid == 0u) { status[0] = atomicLoad(&wg_changed); }
}
