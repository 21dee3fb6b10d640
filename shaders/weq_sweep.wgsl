// Cluster-boundary sweeps of weighted-entropy quantization over a group's fine histogram
// (ALGORITHMS.md §3; Park, Ahn, Yoo, CVPR 2017, Algorithm 1): one workgroup per group. H
// magnitude clusters are contiguous runs of bins, started at equal population; each sweep moves
// every inner boundary, within its neighbours, to the bin maximising the weighted entropy
//   S = −Σ_n I_n·P_n·ln(P_n/2) = Σ_n E_n·(ln 2N − ln n_n) / N   (I_n·P_n = E_n/N),
// (ties: the lower bin); sweeps stop when one moves nothing. A sweep moves the odd boundaries
// together, then the even ones (red-black order): a boundary's candidates depend only on its
// two neighbours, so boundaries of one parity do not interact, and every move still raises S.
// All candidates of a phase are cut evenly across the workgroup's threads; each thread keeps
// the best of each boundary it touches, and a fixed-order combine picks each boundary's best,
// so a sweep needs a handful of barriers whatever H is. Then the levels ±r_n,
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

const NO_SEGMENT: u32 = 0xffffffffu;

var<workgroup> bnd: array<u32, 129>;  // cluster n is bins [bnd[n], bnd[n + 1])
// The phase's boundaries are segments s = 0..m of the flat candidate list: boundary
// j = first + 2s, candidates k = bnd[j − 1]..=bnd[j + 1] at flat indices seg_off[s]...
var<workgroup> seg_off: array<u32, 65>;
var<workgroup> seg_cur_v: array<f32, 64>;  // S terms at the boundary's current bin
var<workgroup> seg_own_v: array<f32, 64>;  // best of a segment one thread covered whole
var<workgroup> seg_own_k: array<u32, 64>;
var<workgroup> seg_owned: array<u32, 64>;
// Each thread's best of the segment straddling the start (first) and end (last) of its chunk.
var<workgroup> first_s: array<u32, WORKGROUP_SIZE>;
var<workgroup> first_v: array<f32, WORKGROUP_SIZE>;
var<workgroup> first_k: array<u32, WORKGROUP_SIZE>;
var<workgroup> last_s: array<u32, WORKGROUP_SIZE>;
var<workgroup> last_v: array<f32, WORKGROUP_SIZE>;
var<workgroup> last_k: array<u32, WORKGROUP_SIZE>;
var<workgroup> moved: atomic<u32>;
var<workgroup> progress: vec2<u32>;  // (sweeps run, converged)

// E·(ln 2N − ln n) of the cluster between two prefix entries; 0 when empty.
fn cluster_term(a: Prefix, b: Prefix, ln2n: f32) -> f32 {
    let n = b.count - a.count;
    if (n == 0u) { return 0.0; }
    return (b.energy - a.energy) * (ln2n - log(f32(n)));
}

// E·(ln 2N − ln n) of the cluster of bins [a, b) of the group at `pb`; 0 when empty.
fn term(pb: u32, a: u32, b: u32, ln2n: f32) -> f32 {
    return cluster_term(prefix[pb + a], prefix[pb + b], ln2n);
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

// The thread whose chunk of a `total`-candidate list holds flat index i: chunks are
// [floor(t·total/256), floor((t+1)·total/256)).
fn chunk_of(i: u32, total: u32) -> u32 {
    return min(WORKGROUP_SIZE - 1u, (WORKGROUP_SIZE * (i + 1u) - 1u) / total);
}

// Better of two candidates: higher value, then lower bin.
fn better(v: f32, k: u32, bv: f32, bk: u32) -> bool {
    return v > bv || (v == bv && k < bk);
}

// One phase of a sweep: every boundary j = first, first + 2, … < H moved to its best bin at
// once (they do not interact). Every thread of the workgroup calls it (it holds barriers).
fn sweep_phase(pb: u32, ln2n: f32, first: u32, lid: u32) {
    let h = params.clusters;
    let m = select(0u, (h - first + 1u) / 2u, h > first);
    if (lid == 0u) {
        seg_off[0] = 0u;
        for (var s = 0u; s < m; s++) {
            let j = first + 2u * s;
            seg_off[s + 1u] = seg_off[s] + bnd[j + 1u] - bnd[j - 1u] + 1u;
        }
    }
    if (lid < m) { seg_owned[lid] = 0u; }
    first_s[lid] = NO_SEGMENT;
    last_s[lid] = NO_SEGMENT;
    workgroupBarrier();
    let total = seg_off[m];
    let lo = lid * total / WORKGROUP_SIZE;
    let hi = (lid + 1u) * total / WORKGROUP_SIZE;
    if (lo < hi) {
        // Segment of `lo`: the last s with seg_off[s] <= lo.
        var a = 0u;
        var b = m;
        while (b - a > 1u) {
            let mid = (a + b) / 2u;
            if (seg_off[mid] <= lo) { a = mid; } else { b = mid; }
        }
        var s = a;
        var bv = -1.0;
        var bk = 0xffffffffu;
        // The segment's boundary, its candidates' range and prefix ends, kept in registers.
        var j = first + 2u * s;
        var a_bin = bnd[j - 1u];
        var cur = bnd[j];
        var lo_p = prefix[pb + a_bin];
        var hi_p = prefix[pb + bnd[j + 1u]];
        var base = seg_off[s];
        var end = seg_off[s + 1u];
        for (var i = lo; i < hi; i++) {
            let k = a_bin + (i - base);
            let p = prefix[pb + k];
            let v = cluster_term(lo_p, p, ln2n) + cluster_term(p, hi_p, ln2n);
            if (better(v, k, bv, bk)) { bv = v; bk = k; }
            if (k == cur) { seg_cur_v[s] = v; }
            let seg_end = i + 1u == end;
            if (seg_end || i + 1u == hi) {
                if (base >= lo && seg_end) {
                    seg_own_v[s] = bv;
                    seg_own_k[s] = bk;
                    seg_owned[s] = 1u;
                } else if (base < lo) {
                    first_s[lid] = s;
                    first_v[lid] = bv;
                    first_k[lid] = bk;
                } else {
                    last_s[lid] = s;
                    last_v[lid] = bv;
                    last_k[lid] = bk;
                }
                bv = -1.0;
                bk = 0xffffffffu;
                s++;
                if (s < m) {
                    j += 2u;
                    a_bin = bnd[j - 1u];
                    cur = bnd[j];
                    lo_p = prefix[pb + a_bin];
                    hi_p = prefix[pb + bnd[j + 1u]];
                    base = end;
                    end = seg_off[s + 1u];
                }
            }
        }
    }
    workgroupBarrier();
    if (lid < m) {
        var bv = seg_own_v[lid];
        var bk = seg_own_k[lid];
        if (seg_owned[lid] == 0u) {
            // Split across threads: combine their pieces in thread order.
            bv = -1.0;
            bk = 0xffffffffu;
            let t_end = chunk_of(seg_off[lid + 1u] - 1u, total);
            for (var t = chunk_of(seg_off[lid], total); t <= t_end; t++) {
                if (first_s[t] == lid && better(first_v[t], first_k[t], bv, bk)) {
                    bv = first_v[t];
                    bk = first_k[t];
                }
                if (last_s[t] == lid && better(last_v[t], last_k[t], bv, bk)) {
                    bv = last_v[t];
                    bk = last_k[t];
                }
            }
        }
        // Only a strict gain moves a boundary, so S rises every move and sweeps end.
        if (bv > seg_cur_v[lid]) {
            bnd[first + 2u * lid] = bk;
            atomicStore(&moved, 1u);
        }
    }
    workgroupBarrier();
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
        if (lid == 0u) { atomicStore(&moved, 0u); }
        sweep_phase(pb, ln2n, 1u, lid);
        sweep_phase(pb, ln2n, 2u, lid);
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
// group would spend its time in barriers): the same red-black order, candidates in ascending
// order, a strict gain to move, ties to the lower bin, exactly as the workgroup form decides.
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
        // Red-black order, as in the workgroup form: odd boundaries, then even ones.
        for (var first = 1u; first <= 2u; first++) {
            for (var j = first; j < h; j += 2u) {
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
