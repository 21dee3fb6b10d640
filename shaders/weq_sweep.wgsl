// Cluster-boundary sweeps of weighted-entropy quantization over a group's fine histogram
// (ALGORITHMS.md §3; Park, Ahn, Yoo, CVPR 2017, Algorithm 1): one workgroup per group. H
// magnitude clusters are contiguous runs of bins, started at equal population; each sweep moves
// every inner boundary, within its neighbours, to the bin maximising the weighted entropy
//   S = −Σ_n I_n·P_n·ln(P_n/2) = Σ_n E_n·(ln 2N − ln n_n) / N   (I_n·P_n = E_n/N),
// all candidate bins evaluated in parallel and a fixed-order tree reduction picking the best
// (ties: the lower bin); sweeps stop when one moves nothing. Then the levels ±r_n,
// r_n = sqrt(E_n/n_n), and the signed thresholds codebook_assign counts.
//
// llvmpipe stops any loop of an invocation once all its loops together have run 65,535
// iterations (Mesa's hang guard, LP_MAX_TGSI_LOOP_ITERATIONS), so a dispatch runs a bounded
// number of sweeps and keeps each group's boundaries in `state` for the next; `finish` then
// turns them into levels and thresholds.
// Needs common.wgsl, affine.wgsl and weq.wgsl before it.

// Mirrors `WeqSweepParams` in src/gpu/weq_sweep.rs (48 bytes).
struct WeqSweepParams {
    bins: u32,
    log2_bins: u32,
    clusters: u32,       // H = 2^(bits − 1) magnitude clusters
    groups: u32,         // groups in this dispatch
    range_base: u32,     // index of group 0 in the bound ranges
    prefix_base: u32,    // entry of group 0's prefix 0 in the bound prefix
    level_base: u32,     // element of group 0's first level in the bound levels
    threshold_base: u32, // element of group 0's first threshold in the bound thresholds
    info_base: u32,      // index of group 0 in the bound info
    max_sweeps: u32,     // cap on sweeps in all
    sweeps_per_pass: u32,// cap on sweeps in this dispatch
    first_pass: u32,     // 1: start from equal populations
}

// Mirrors `Prefix` in src/cpu/weq_histogram.rs.
struct Prefix {
    count: u32,
    energy: f32,
}

// Mirrors `WeqInfo` in src/cpu/weq_sweep.rs.
struct WeqInfo {
    entropy: f32,   // S of the group, in units of w²
    sweeps: u32,
    clusters: u32,  // non-empty magnitude clusters
    _pad: u32,
}

const MAX_CLUSTERS: u32 = 128u;

@group(0) @binding(0) var<uniform> params: WeqSweepParams;
@group(0) @binding(1) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(2) var<storage, read> prefix: array<Prefix>;
@group(0) @binding(3) var<storage, read_write> levels: array<f32>;
@group(0) @binding(4) var<storage, read_write> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read_write> info: array<WeqInfo>;
// Per batch group, H + 3 words: boundaries bnd[0..=H], sweeps run, 1 when converged.
@group(0) @binding(6) var<storage, read_write> state: array<u32>;

var<workgroup> bnd: array<u32, 129>;  // cluster n is bins [bnd[n], bnd[n + 1])
var<workgroup> best_v: array<f32, WORKGROUP_SIZE>;
var<workgroup> best_k: array<u32, WORKGROUP_SIZE>;
var<workgroup> current_v: f32;
var<workgroup> moved: u32;
var<workgroup> progress: vec2<u32>;  // (sweeps run, converged)

// E·(ln 2N − ln n) of the cluster of bins [a, b) of the group at `pb`; 0 when empty.
fn term(pb: u32, a: u32, b: u32, ln2n: f32) -> f32 {
    let n = prefix[pb + b].count - prefix[pb + a].count;
    if (n == 0u) { return 0.0; }
    return (prefix[pb + b].energy - prefix[pb + a].energy) * (ln2n - log(f32(n)));
}

fn ln_2n(pb: u32) -> f32 {
    return log(f32(max(prefix[pb + params.bins].count, 1u))) + 0.6931472;
}

// First bin k whose prefix count reaches `goal`.
fn lower_bound(pb: u32, goal: u32) -> u32 {
    var lo = 0u;
    var hi = params.bins;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (prefix[pb + mid].count < goal) { lo = mid + 1u; } else { hi = mid; }
    }
    return lo;
}

@compute @workgroup_size(256)
fn sweep(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg);
    if (g >= params.groups) { return; }
    let h = params.clusters;
    let pb = params.prefix_base + g * (params.bins + 1u);
    let sb = g * (h + 3u);
    let ln2n = ln_2n(pb);
    if (params.first_pass != 0u) {
        // Equal population: boundary j at the first bin where the count reaches ceil(j·N/H).
        let total = prefix[pb + params.bins].count;
        for (var j = lid; j <= h; j += WORKGROUP_SIZE) {
            let goal = (total / h) * j + ((total % h) * j + h - 1u) / h;
            bnd[j] = select(lower_bound(pb, goal), params.bins, j == h);
        }
        if (lid == 0u) { progress = vec2<u32>(0u, 0u); }
    } else {
        for (var j = lid; j <= h; j += WORKGROUP_SIZE) { bnd[j] = state[sb + j]; }
        if (lid == 0u) { progress = vec2<u32>(state[sb + h + 1u], state[sb + h + 2u]); }
    }
    let start = workgroupUniformLoad(&progress);
    if (start.y != 0u) { return; }
    var sweeps = start.x;
    var converged = 0u;
    for (var pass_sweep = 0u; pass_sweep < params.sweeps_per_pass; pass_sweep++) {
        if (sweeps >= params.max_sweeps) { break; }
        if (lid == 0u) { moved = 0u; }
        workgroupBarrier();
        for (var j = 1u; j < h; j++) {
            let a = bnd[j - 1u];
            let c = bnd[j + 1u];
            let cur = bnd[j];
            var bv = -1.0;
            var bk = 0xffffffffu;
            for (var k = a + lid; k <= c; k += WORKGROUP_SIZE) {
                let v = term(pb, a, k, ln2n) + term(pb, k, c, ln2n);
                if (v > bv) { bv = v; bk = k; }
                if (k == cur) { current_v = v; }
            }
            best_v[lid] = bv;
            best_k[lid] = bk;
            for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
                workgroupBarrier();
                if (lid < s) {
                    let v2 = best_v[lid + s];
                    let k2 = best_k[lid + s];
                    if (v2 > best_v[lid] || (v2 == best_v[lid] && k2 < best_k[lid])) {
                        best_v[lid] = v2;
                        best_k[lid] = k2;
                    }
                }
            }
            workgroupBarrier();
            // Only a strict gain moves a boundary, so S rises every move and sweeps end.
            if (lid == 0u && best_v[0] > current_v) {
                bnd[j] = best_k[0];
                moved = 1u;
            }
            workgroupBarrier();
        }
        sweeps++;
        if (workgroupUniformLoad(&moved) == 0u) {
            converged = 1u;
            break;
        }
    }
    for (var j = lid; j <= h; j += WORKGROUP_SIZE) { state[sb + j] = bnd[j]; }
    if (lid == 0u) {
        state[sb + h + 1u] = sweeps;
        state[sb + h + 2u] = select(converged, 1u, sweeps >= params.max_sweeps);
    }
}

// The same sweeps for small groups, one thread per group and no barriers (a workgroup per
// group would spend its time in barriers): candidates in ascending order, a strict gain to
// move, ties to the lower bin, exactly as the workgroup form decides.
@compute @workgroup_size(256)
fn sweep_narrow(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.groups) { return; }
    let h = params.clusters;
    let pb = params.prefix_base + g * (params.bins + 1u);
    let sb = g * (h + 3u);
    let ln2n = ln_2n(pb);
    var bn: array<u32, 129>;
    var sweeps = 0u;
    if (params.first_pass != 0u) {
        let total = prefix[pb + params.bins].count;
        for (var j = 0u; j < h; j++) {
            bn[j] = lower_bound(pb, (total / h) * j + ((total % h) * j + h - 1u) / h);
        }
        bn[h] = params.bins;
    } else {
        if (state[sb + h + 2u] != 0u) { return; }
        for (var j = 0u; j <= h; j++) { bn[j] = state[sb + j]; }
        sweeps = state[sb + h + 1u];
    }
    var converged = 0u;
    for (var pass_sweep = 0u; pass_sweep < params.sweeps_per_pass; pass_sweep++) {
        if (sweeps >= params.max_sweeps) { break; }
        var moved = false;
        for (var j = 1u; j < h; j++) {
            let a = bn[j - 1u];
            let c = bn[j + 1u];
            var bv = -1.0;
            var bk = 0u;
            var cv = 0.0;
            for (var k = a; k <= c; k++) {
                let v = term(pb, a, k, ln2n) + term(pb, k, c, ln2n);
                if (v > bv) { bv = v; bk = k; }
                if (k == bn[j]) { cv = v; }
            }
            if (bv > cv) {
                bn[j] = bk;
                moved = true;
            }
        }
        sweeps++;
        if (!moved) {
            converged = 1u;
            break;
        }
    }
    for (var j = 0u; j <= h; j++) { state[sb + j] = bn[j]; }
    state[sb + h + 1u] = sweeps;
    state[sb + h + 2u] = select(converged, 1u, sweeps >= params.max_sweeps);
}

// The first non-empty bin of [lo, hi) (which holds elements): the cluster's boundary is the
// lower edge of the bin of its smallest magnitude, like the exact algorithm's b_n.
fn first_filled(pb: u32, lo: u32, hi: u32) -> u32 {
    let base = prefix[pb + lo].count;
    var a = lo;
    var b = hi;
    while (a < b) {
        let mid = (a + b) / 2u;
        if (prefix[pb + mid + 1u].count == base) { a = mid + 1u; } else { b = mid; }
    }
    return a;
}

// The smallest f32 above x (x finite, not −0).
fn next_up(x: f32) -> f32 {
    if (x == 0.0) { return 1.17549435e-38; }
    let b = bitcast<u32>(x);
    return bitcast<f32>(select(b + 1u, b - 1u, x < 0.0));
}

// Levels, thresholds and info of group g from its final boundaries, one thread per group;
// mirrors `assemble` in src/cpu/weq_sweep.rs. Empty clusters move to the top with doubled
// levels and +inf bounds, levels are forced strictly increasing (and positive), and
// magnitudes mirror by sign: codes 0..H−1 are −r_{H−1}..−r_0, codes H..2H−1 are r_0..r_{H−1}.
@compute @workgroup_size(256)
fn finish(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let g = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (g >= params.groups) { return; }
    let h = params.clusters;
    let pb = params.prefix_base + g * (params.bins + 1u);
    let sb = g * (h + 3u);
    let ln2n = ln_2n(pb);
    let width = weq_pow2(weq_span_exponent(ranges[params.range_base + g]) - i32(params.log2_bins));
    var r: array<f32, MAX_CLUSTERS>;
    var b: array<f32, MAX_CLUSTERS>;
    var m = 0u;
    var s = 0.0;
    for (var n = 0u; n < h; n++) {
        let lo = state[sb + n];
        let hi = state[sb + n + 1u];
        let count = prefix[pb + hi].count - prefix[pb + lo].count;
        if (count == 0u) { continue; }
        let e = prefix[pb + hi].energy - prefix[pb + lo].energy;
        r[m] = sqrt(max(e, 0.0) / f32(count)) * width;
        b[m] = f32(first_filled(pb, lo, hi)) * width;
        s += term(pb, lo, hi, ln2n);
        m++;
    }
    let clusters = max(m, 1u);
    if (m == 0u) {
        r[0] = 0.0;
        b[0] = 0.0;
        m = 1u;
    }
    let inf = bitcast<f32>(0x7f800000u);
    for (var n = m; n < h; n++) {
        r[n] = r[n - 1u] * 2.0;
        b[n] = inf;
    }
    r[0] = max(r[0], 1.17549435e-38);
    for (var n = 1u; n < h; n++) {
        r[n] = min(max(r[n], next_up(r[n - 1u])), 3.40282347e38);
    }
    let lb = params.level_base + g * 2u * h;
    let tb = params.threshold_base + g * 2u * h;
    for (var n = 0u; n < h; n++) {
        levels[lb + h - 1u - n] = -r[n];
        levels[lb + h + n] = r[n];
    }
    // Negative x with |x| = b_n must land in cluster n too: its threshold is just above −b_n.
    for (var n = 1u; n < h; n++) {
        thresholds[tb + h - 1u - n] = select(next_up(-b[n]), -inf, b[n] == inf);
        thresholds[tb + h - 1u + n] = b[n];
    }
    thresholds[tb + h - 1u] = 0.0;
    thresholds[tb + 2u * h - 1u] = inf;
    let total = prefix[pb + params.bins].count;
    info[params.info_base + g] =
        WeqInfo(s * width * width / f32(max(total, 1u)), state[sb + h + 1u], clusters, 0u);
}
