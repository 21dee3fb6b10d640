// Correlation-maximising discretization (ALGORITHMS.md §4): for every group and every x0
// candidate, the sums that give the Pearson correlation between the weights and their nearest
// levels 0, ±r_k (linear or exponential partition of [x0, 1], in units of m = max|w|), tiled
// and reduced in fixed order; then one thread per group picks the best candidate and
// narrows the next round's interval around it. Mirrors src/cpu/discretize.rs.
// Needs common.wgsl, affine.wgsl and tiles.wgsl before it.

// Mirrors `DiscretizeParams` in src/gpu/discretize.rs (96 bytes).
struct DiscretizeParams {
    tiles: TileParams,
    candidates: u32,      // C
    half_levels: u32,     // K = 2^(b−1) − 1
    exponential: u32,     // 0 linear partition, 1 exponential
    num_workgroups: u32,  // workgroups of the dispatch (the folded grid may have more)
    rec_first: u32,       // disc_moments: global record at `rec_base` of the bound output
    rec_base: u32,        // disc_select: first record of the dispatch's groups
    num_groups: u32,      // disc_select: groups in the dispatch
    corr_base: u32,       // disc_select: first correlation of the dispatch's groups
    state_base: u32,      // index in the bound states of the group at `tiles.group_base`
    cand_first: u32,      // disc_moments: the dispatch's first candidate
    cand_count: u32,      // disc_moments: candidates in the dispatch
    _pad: u32,
}

// Mirrors `SearchState` in src/cpu/discretize.rs (32 bytes).
struct SearchState {
    lo: f32,        // the next round's candidates lie in (lo, hi)
    hi: f32,
    best_x0: f32,
    best_corr: f32,
    scale: f32,     // σ_w / σ_q at the best x0 (variance-preserving level factor)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
@group(0) @binding(6) var<storage, read_write> correlations: array<f32>;

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
    return s.lo + (s.hi - s.lo) * (f32(c + 1u) / f32(params.candidates + 1u));
}

// The levels of one x0: y = f(u)·a + b (f = identity or log2) reaches k at the midpoint
// between r_k and r_{k+1}; c is the linear step d or log2(x0). Mirrors `Ladder::new`.
struct Ladder {
    x0: f32,
    a: f32,
    b: f32,
    c: f32,
}

fn ladder(x0: f32) -> Ladder {
    let k = params.half_levels;
    if (k <= 1u) { return Ladder(x0, 0.0, 0.0, 0.0); }
    let km1 = f32(k - 1u);
    if (params.exponential == 1u) {
        let lx = log2(x0);
        let la = -lx / km1;                        // log2 α, α^(K−1) = 1/x0
        let h = log2(0.5 + 0.5 * exp2(la));        // log2 of the midpoint factor (1 + α)/2
        let a = 1.0 / la;
        return Ladder(x0, a, -(lx + h) * a, lx);
    }
    let d = (1.0 - x0) / km1;
    let a = 1.0 / d;
    return Ladder(x0, a, -x0 * a - 0.5, d);
}

// Index of the level nearest to u = |w|/m: 0 for the zero level, ties upward. Branches only
// on uniform values; per-element choices are selects (divergent branches cost a SIMD device
// both sides).
fn magnitude_index(l: Ladder, u: f32) -> u32 {
    let k = params.half_levels;
    var j = 1u;
    if (k > 1u) {
        var f = u;
        if (params.exponential == 1u) { f = log2(max(u, 1e-30)); }
        let y = f * l.a + l.b;
        j = select(1u, 2u + u32(min(y, f32(k - 2u))), y >= 0.0);
    }
    return select(j, 0u, u < 0.5 * l.x0);
}

// r_j in units of m (0 for j = 0): x0 + (j−1)·d, or x0^((K−j)/(K−1)).
fn level(l: Ladder, j: u32) -> f32 {
    let k = params.half_levels;
    var r = l.x0;
    if (k > 1u) {
        if (params.exponential == 1u) {
            r = exp2(l.c * (f32(k - max(j, 1u)) / f32(k - 1u)));
        } else {
            r = l.x0 + f32(max(j, 1u) - 1u) * l.c;
        }
    }
    return select(r, 0.0, j == 0u);
}

fn discretized(x: f32, inv_m: f32, l: Ladder) -> f32 {
    let q = level(l, magnitude_index(l, abs(x) * inv_m));
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
        var inv_m = 0.0;
        if (m > 0.0) { inv_m = 1.0 / m; }
        let l = ladder(candidate_x0(states[g - t.group_base + params.state_base], c));
        let span = tile_range(t, slot.tile);
        for (var i = span.x + slot.lane; i < span.y; i += t.lanes) {
            let x = values[i];
            let q = discretized(x, inv_m, l);
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

// One thread per group: every candidate's correlation, the first maximum, the state moved
// (best so far, variance-preserving scale, next interval ±one step around the best).
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
    let r = ranges[params.tiles.group_base + gi];
    let m = max(abs(r.lo), abs(r.hi));
    let n = f32(params.tiles.group_len);
    var best = bitcast<f32>(0xff800000u);
    var best_c = 0u;
    var best_scale = m;
    for (var c = 0u; c < params.candidates; c++) {
        let s = moments_in[params.rec_base + gi * params.candidates + c];
        let cov = n * s.wq - s.w * s.q;
        let vw = n * s.ww - s.w * s.w;
        let vq = n * s.qq - s.q * s.q;
        var corr = 0.0;
        var scale = m;
        if (vw > 0.0 && vq > 0.0) {
            corr = cov / (sqrt(vw) * sqrt(vq));
            scale = sqrt(vw) / sqrt(vq);
        }
        correlations[params.corr_base + gi * params.candidates + c] = corr;
        if (corr > best) {
            best = corr;
            best_c = c;
            best_scale = scale;
        }
    }
    let step = (st.hi - st.lo) / f32(params.candidates + 1u);
    if (best > st.best_corr) {
        st.best_x0 = candidate_x0(st, best_c);
        st.best_corr = best;
        st.scale = best_scale;
    }
    st.lo = max(st.best_x0 - step, 0.0);
    st.hi = min(st.best_x0 + step, 1.0);
    states[gw] = st;
}
