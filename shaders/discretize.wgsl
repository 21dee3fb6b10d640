// Correlation-maximising discretization (ALGORITHMS.md §4): for every group and every x0
// candidate, the sums that give the Pearson correlation between the weights and their nearest
// levels 0, ±r_k (linear or exponential partition of [x0, 1], in units of m = max|w|), tiled
// and reduced in fixed order; then one thread per group picks the best candidate and
// narrows the next round's interval around it. Mirrors src/cpu/discretize.rs.
// Needs common.wgsl, affine.wgsl and tiles.wgsl before it.

// Parity rule: everything that decides a bit of the output (levels, thresholds, candidate
// x0, the sums, the argmax) uses only +, −, ×, comparisons, selects, conversions and bit
// casts, with constants that need a division (1/(C+1), 1/(K−1)) rounded once on the host; no
// exp2/log2/pow (implementation-defined precision), no division (2.5 ULP) and no sqrt. The
// exponential ratio α is found by bisection on x0·α^(K−1) ≥ 1 with products only. This holds
// on devices that round every product (Vulkan lets a driver fuse a·b + c into an FMA, and
// naga emits no NoContraction; lavapipe does not fuse) and keep subnormals (a device that
// flushes them differs only on weights below ~1e-19 of the group's maximum).

// Mirrors `DiscretizeParams` in src/gpu/discretize.rs (112 bytes).
struct DiscretizeParams {
    tiles: TileParams,
    candidates: u32,      // C
    half_levels: u32,     // K = 2^(b−1) − 1
    exponential: u32,     // 0 linear partition, 1 exponential
    num_workgroups: u32,  // workgroups of the dispatch (the folded grid may have more)
    rec_first: u32,       // disc_moments: global record at `rec_base` of the bound output
    rec_base: u32,        // disc_select: first record of the dispatch's groups
    num_groups: u32,      // disc_select: groups in the dispatch
    corr_base: u32,       // disc_select: first score pair of the dispatch's groups
    state_base: u32,      // index in the bound states of the group at `tiles.group_base`
    cand_first: u32,      // disc_moments: the dispatch's first candidate
    cand_count: u32,      // disc_moments: candidates in the dispatch
    first_round: u32,     // disc_select: 1 when the state holds no best yet
    inv_c1: f32,          // 1/(C+1), host-rounded
    inv_km1: f32,         // 1/(K−1), host-rounded (0 when K = 1)
    n_scale: f32,         // 2^(−2⌈log2 n⌉) for the score comparison
    _pad: u32,
}

// Mirrors `SearchState` in src/kernel/discretize.rs (32 bytes); best_corr and scale are the
// host's.
struct SearchState {
    lo: f32,        // the next round's candidates lie in (lo, hi)
    hi: f32,
    best_x0: f32,
    best_corr: f32,
    scale: f32,
    cov: f32,       // the best candidate's n·Σwq − Σw·Σq
    vw: f32,        // n·Σw² − (Σw)²
    vq: f32,        // the best candidate's n·Σq² − (Σq)²
}

// Sums of q, q², w·q, w, w² (w shifted by the group's midrange); mirrors `Moments`.
struct Moments {
    q: f32,
    qq: f32,
    wq: f32,
    w: f32,
    ww: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> params: DiscretizeParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(3) var<storage, read_write> states: array<SearchState>;
@group(0) @binding(4) var<storage, read_write> moments_out: array<Moments>;
@group(0) @binding(5) var<storage, read> moments_in: array<Moments>;
@group(0) @binding(6) var<storage, read_write> scores: array<vec2<f32>>;

var<workgroup> wg_q: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_qq: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_wq: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_w: array<f32, WORKGROUP_SIZE>;
var<workgroup> wg_ww: array<f32, WORKGROUP_SIZE>;

fn zero_moments() -> Moments {
    return Moments(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
}

fn add_moments(a: Moments, b: Moments) -> Moments {
    return Moments(a.q + b.q, a.qq + b.qq, a.wq + b.wq, a.w + b.w, a.ww + b.ww, 0.0, 0.0, 0.0);
}

fn candidate_x0(s: SearchState, c: u32) -> f32 {
    return s.lo + (s.hi - s.lo) * (f32(c + 1u) * params.inv_c1);
}

// x0·α^(K−1) by squaring (bits of K−1 ascending); mirrors `pow_levels`.
fn pow_levels(a: f32) -> f32 {
    var r = 1.0;
    var b = a;
    var e = params.half_levels - 1u;
    while (e > 0u) {
        if ((e & 1u) == 1u) { r = r * b; }
        b = b * b;
        e = e >> 1u;
    }
    return r;
}

// The smallest α found by bisection with x0·α^(K−1) ≥ 1 (K ≥ 2); mirrors `solve_alpha`.
fn solve_alpha(x0: f32) -> f32 {
    var lo = 1.0;
    var hi = 2.0;
    for (var i = 0u; i < 160u; i++) {
        if (x0 * pow_levels(hi) >= 1.0) { break; }
        lo = hi;
        hi = hi * 2.0;
    }
    for (var i = 0u; i < 64u; i++) {
        let mid = (lo + hi) * 0.5;
        if (!(mid > lo && mid < hi)) { break; }
        if (x0 * pow_levels(mid) < 1.0) { lo = mid; } else { hi = mid; }
    }
    return hi;
}

// One candidate's levels and thresholds against |w| for a group of maximum m; mirrors
// `Ladder` and `Scan`. Levels: r_1 = x0, r_K = 1, between them x0·(P(j−2)·α) or
// x0 + (j−1)·d. Thresholds |w| ≥ T(s) (s = 0..K−2, between r_{s+1} and r_{s+2}):
// (m·x0)·h·P(s) with h = (1 + α)/2, or m·(x0 + (2s+1)·d/2). P(s) multiplies pw[bit] over the
// set bits of s from the top, pw[i] = α^(2^i).
struct Ladder {
    x0: f32,
    m: f32,
    alpha: f32,   // exponential ratio
    d: f32,       // linear step
    zero_t: f32,  // 0.5·(m·x0): below it the zero level
    base: f32,    // (m·x0)·h
    half_d: f32,
    nb: u32,      // bits of K − 2
    pw: array<f32, 8>,
}

fn ladder(x0: f32, m: f32) -> Ladder {
    let k = params.half_levels;
    var l = Ladder(x0, m, 1.0, 0.0, 0.5 * (m * x0), 0.0, 0.0, 0u,
                   array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
    if (k <= 1u) { return l; }
    if (k > 2u) { l.nb = 32u - countLeadingZeros(k - 2u); }
    if (params.exponential == 1u) {
        l.alpha = solve_alpha(x0);
        l.base = (m * x0) * (0.5 + 0.5 * l.alpha);
        var p = l.alpha;
        for (var i = 0u; i < 8u; i++) {
            l.pw[i] = p;
            p = p * p;
        }
    } else {
        l.d = (1.0 - x0) * params.inv_km1;
        l.half_d = 0.5 * l.d;
    }
    return l;
}

// The discretized magnitude of a = |w| in level units: 0 below the zero threshold, else the
// level after the last threshold ≤ a, found by a binary search whose probes are the same
// on both twins (ties go to the larger level). Loops run on uniform counts; per-element
// choices are selects.
fn magnitude(l: Ladder, a: f32) -> f32 {
    let k = params.half_levels;
    if (k <= 1u) { return select(l.x0, 0.0, a < l.zero_t); }
    var pos = 0u;
    var j = 1u;
    var r = l.x0;
    // One loop per partition (a uniform branch): the linear probes need no powers of α.
    if (params.exponential == 1u) {
        var p = 1.0;
        for (var bit = l.nb; bit > 0u; bit--) {
            let cand = pos + (1u << (bit - 1u));
            let pc = p * l.pw[bit - 1u];
            let take = cand <= k - 2u && l.base * pc <= a;
            pos = select(pos, cand, take);
            p = select(p, pc, take);
        }
        j = select(1u, pos + 2u, l.base <= a);
        r = l.x0 * (p * l.alpha);
    } else {
        for (var bit = l.nb; bit > 0u; bit--) {
            let cand = pos + (1u << (bit - 1u));
            let t = l.m * (l.x0 + f32(2u * cand + 1u) * l.half_d);
            pos = select(pos, cand, cand <= k - 2u && t <= a);
        }
        j = select(1u, pos + 2u, l.m * (l.x0 + l.half_d) <= a);
        r = l.x0 + f32(j - 1u) * l.d;
    }
    r = select(r, l.x0, j == 1u);
    r = select(r, 1.0, j == k);
    return select(r, 0.0, a < l.zero_t);
}

fn discretized(x: f32, l: Ladder) -> f32 {
    let q = magnitude(l, abs(x));
    return select(select(0.0, q, x > 0.0), -q, x < 0.0);
}

fn store_lane(i: u32, m: Moments) {
    wg_q[i] = m.q;
    wg_qq[i] = m.qq;
    wg_wq[i] = m.wq;
    wg_w[i] = m.w;
    wg_ww[i] = m.ww;
}

fn load_lane(i: u32) -> Moments {
    return Moments(wg_q[i], wg_qq[i], wg_wq[i], wg_w[i], wg_ww[i], 0.0, 0.0, 0.0);
}

// Sums the lanes of each tile in fixed order with two barriers (each costs a CPU-emulated
// device as much as hundreds of elements): every 16th lane adds its 16 (or all) lanes in
// order, then lane 0 adds those partial sums in order. Lane 0 of the tile gets the total.
fn reduce_tile(slot: TileSlot, lid: u32, acc: Moments) -> Moments {
    let lanes = params.tiles.lanes;
    let fan = min(lanes, 16u);
    store_lane(lid, acc);
    workgroupBarrier();
    // A leader reads only its own block and then overwrites only its own slot.
    if (slot.lane % fan == 0u) {
        var part = zero_moments();
        for (var j = 0u; j < fan; j++) { part = add_moments(part, load_lane(lid + j)); }
        store_lane(lid, part);
    }
    workgroupBarrier();
    var total = zero_moments();
    if (slot.lane == 0u) {
        for (var j = 0u; j < lanes; j += fan) { total = add_moments(total, load_lane(lid + j)); }
    }
    return total;
}

// Pass 1: one (tile, candidate) per tile slot; workgroup w·n + i holds candidate
// cand_first + i of the tiles of tile-workgroup w (n = cand_count), so neighbouring
// workgroups read the same values. Record of
// (group g, candidate c, tile k of the group) = (g·C + c)·T + k.
@compute @workgroup_size(256)
fn disc_moments(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let flat = flat_workgroup(wid, nwg);
    if (flat >= params.num_workgroups) { return; }
    let t = params.tiles;
    let c = params.cand_first + flat % params.cand_count;
    let slot = tile_slot(t, flat / params.cand_count, lid);
    var acc = zero_moments();
    if (slot.valid) {
        let g = tile_group(t, slot.tile);
        let r = ranges[g];
        let m = max(abs(r.lo), abs(r.hi));
        let mid = 0.5 * r.lo + 0.5 * r.hi;
        let l = ladder(candidate_x0(states[g - t.group_base + params.state_base], c), m);
        let span = tile_range(t, slot.tile);
        for (var i = span.x + slot.lane; i < span.y; i += t.lanes) {
            let x = values[i];
            let q = discretized(x, l);
            let w = x - mid;
            acc.q += q;
            acc.qq += q * q;
            acc.wq += w * q;
            acc.w += w;
            acc.ww += w * w;
        }
    }
    let sum = reduce_tile(slot, lid, acc);
    if (slot.valid && slot.lane == 0u) {
        let g = slot.tile / t.tiles_per_group;
        let k = slot.tile % t.tiles_per_group;
        let rec = (g * params.candidates + c) * t.tiles_per_group + k;
        moments_out[rec - params.rec_first + params.rec_base] = sum;
    }
}

// Pass 2..: sums of runs of records (a (group, candidate)'s tiles), as minmax reduces ranges.
@compute @workgroup_size(256)
fn disc_reduce(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = params.tiles;
    let slot = tile_slot(t, flat_workgroup(wid, nwg), lid);
    var acc = zero_moments();
    if (slot.valid) {
        let r = tile_range(t, slot.tile);
        for (var i = r.x + slot.lane; i < r.y; i += t.lanes) {
            acc = add_moments(acc, moments_in[i]);
        }
    }
    let sum = reduce_tile(slot, lid, acc);
    if (slot.valid && slot.lane == 0u) {
        moments_out[t.out_base + slot.tile - t.first_tile] = sum;
    }
}

// A candidate's score key: corr ∝ cov/√vq within a group (vw is the group's), compared as
// cov·|cov|/vq by cross-multiplying, cov scaled by f (2^−⌊e(vw)/2⌋−1, so (cov·f)² ≲ vq) and vq
// by n_scale (so vq ≤ 1): powers of two, so the order is the exact key's up to one rounding
// per product, and no product overflows. (0, 1) when a variance is not positive.
fn score_key(cov: f32, vw: f32, vq: f32, f: f32) -> vec2<f32> {
    if (vw > 0.0 && vq > 0.0) {
        let a = cov * f;
        return vec2<f32>(a * abs(a), vq * params.n_scale);
    }
    return vec2<f32>(0.0, 1.0);
}

// Whether key a beats key b (strictly: ties keep the earlier).
fn beats(a: vec2<f32>, b: vec2<f32>) -> bool {
    return a.x * b.y > b.x * a.y;
}

// 2^(−⌊e/2⌋−1) for the exponent e of v > 0 (1 otherwise); mirrors `cov_factor`.
fn cov_factor(v: f32) -> f32 {
    if (!(v > 0.0)) { return 1.0; }
    let e = i32((bitcast<u32>(v) >> 23u) & 0xffu) - 127;
    return bitcast<f32>(u32(127 - (e >> 1u) - 1) << 23u);
}

// One thread per group: every candidate's (cov, vq), the first best by `beats`, the state
// moved (best so far with its sums, next interval ±one step around the best).
@compute @workgroup_size(256)
fn disc_select(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let gi = wg * WORKGROUP_SIZE + lid;
    if (gi >= params.num_groups) { return; }
    let gw = params.state_base + gi;
    var st = states[gw];
    let n = f32(params.tiles.group_len);
    let first = params.rec_base + gi * params.candidates;
    let s0 = moments_in[first];
    let vw = n * s0.ww - s0.w * s0.w;
    let f = cov_factor(vw);
    var best_key = vec2<f32>(0.0, 1.0);
    var best_c = 0u;
    var best_cov = 0.0;
    var best_vq = 0.0;
    for (var c = 0u; c < params.candidates; c++) {
        let s = moments_in[first + c];
        let cov = n * s.wq - s.w * s.q;
        let vq = n * s.qq - s.q * s.q;
        scores[params.corr_base + gi * params.candidates + c] = vec2<f32>(cov, vq);
        let key = score_key(cov, vw, vq, f);
        if (c == 0u || beats(key, best_key)) {
            best_key = key;
            best_c = c;
            best_cov = cov;
            best_vq = vq;
        }
    }
    let step = (st.hi - st.lo) * params.inv_c1;
    if (params.first_round == 1u || beats(best_key, score_key(st.cov, vw, st.vq, f))) {
        st.best_x0 = candidate_x0(st, best_c);
        st.cov = best_cov;
        st.vq = best_vq;
    }
    st.vw = vw;
    st.lo = max(st.best_x0 - step, 0.0);
    st.hi = min(st.best_x0 + step, 1.0);
    states[gw] = st;
}
