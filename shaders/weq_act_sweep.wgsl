// Search of the weighted-entropy log quantizer of activations (ALGORITHMS.md §3): one thread
// per (half step h, offset o) pair, h = 1..16, o = k_lo + 17 + t, t = 0..1023, each scoring
//   S = −Σ_j r_j·P_j·ln P_j  ∝  Σ_j w_j·n_j·(lg N − lg n_j)
// over the non-zero levels from the histogram's prefix sums (see src/cpu/weq_act_sweep.rs for
// the fixed-point form, exact in 64 bits), then a fixed-order tree reduction per workgroup
// (`sweep`) and across workgroups (`finish`) keeping the highest score, the lowest pair on
// ties. A thread runs at most ~280 loop iterations, far below llvmpipe's 65,535 cap.
// Needs common.wgsl, affine.wgsl (GroupRange) and weq_act.wgsl before it.

// Mirrors `WeqActSweepParams` in src/gpu/weq_act_sweep.rs (16 bytes).
struct WeqActSweepParams {
    levels: u32,      // non-zero levels L − 1
    pairs: u32,       // (h, o) pairs
    partials: u32,    // `sweep` workgroups (entries of `partials`)
    _pad: u32,
}

const OFFSETS: u32 = 1024u;
const OFFSET_MARGIN: i32 = 17;
const NO_PAIR: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: WeqActSweepParams;
@group(0) @binding(1) var<storage, read> ranges: array<GroupRange>;
@group(0) @binding(2) var<storage, read> hist: array<u32>;
// Per `sweep` workgroup: (score lo, score hi, pair, positive count).
@group(0) @binding(3) var<storage, read_write> partials: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> result: array<WeqActResult>;

var<workgroup> prefix: array<u32, 1025>;  // prefix[b]: positive elements in bins below b
var<workgroup> lane_sum: array<u32, WORKGROUP_SIZE>;
var<workgroup> best: array<vec4<u32>, WORKGROUP_SIZE>;

// a·b as (lo, hi), exactly, from 16-bit halves.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>((ll & 0xffffu) | (mid << 16u), ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

// Bits [sh, sh + 64) of the 96-bit w (w.x lowest).
fn shr96(w: vec3<u32>, sh: u32) -> vec2<u32> {
    if (sh >= 96u) { return vec2<u32>(0u, 0u); }
    let ws = sh / 32u;
    let bs = sh % 32u;
    let s0 = select(select(w.z, w.y, ws == 1u), w.x, ws == 0u);
    let s1 = select(select(0u, w.z, ws == 1u), w.y, ws == 0u);
    let s2 = select(0u, w.z, ws == 0u);
    if (bs == 0u) { return vec2<u32>(s0, s1); }
    return vec2<u32>((s0 >> bs) | (s1 << (32u - bs)), (s1 >> bs) | (s2 << (32u - bs)));
}

// (n·dl·G[d mod 16]) >> (30 + d/16) in 64 bits; mirrors `term` in src/cpu/weq_act_sweep.rs.
fn weq_act_term(n: u32, dl: u32, d: u32) -> vec2<u32> {
    let v = mul_wide(n, dl);
    let g = act_tables[WEQ_ACT_WEIGHT + (d & 15u)];
    let p = mul_wide(v.x, g);
    let q = mul_wide(v.y, g);
    let w1 = p.y + q.x;
    let w2 = q.y + select(0u, 1u, w1 < p.y);
    return shr96(vec3<u32>(p.x, w1, w2), 30u + (d >> 4u));
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

// Whether candidate b (score lo, hi, pair) beats a: a higher score, or equal and a lower pair.
fn beats(b: vec4<u32>, a: vec4<u32>) -> bool {
    if (b.y != a.y) { return b.y > a.y; }
    if (b.x != a.x) { return b.x > a.x; }
    return b.z < a.z;
}

// Score of pair (h, t); mirrors `pair_score` in src/cpu/weq_act_sweep.rs.
fn pair_score(h: u32, t: u32, k_top: i32) -> vec2<u32> {
    let total = prefix[WEQ_ACT_BINS];
    var acc = vec2<u32>(0u, 0u);
    if (total == 0u) { return acc; }
    let step = 2u * h;
    let o = k_top - i32(WEQ_ACT_BINS - 1u) + OFFSET_MARGIN + i32(t);
    let base = u32(OFFSET_MARGIN + i32(t) - i32(h));
    let m_ref = k_top + 16;
    let lg_total = weq_act_lg(total);
    for (var q = 0u; q < params.levels; q++) {
        let a = base + q * step;
        if (a >= WEQ_ACT_BINS) { break; }
        let b = select(min(a + step, WEQ_ACT_BINS), WEQ_ACT_BINS, q == params.levels - 1u);
        let n = prefix[b] - prefix[a];
        if (n == 0u) { continue; }
        let d = u32(m_ref - (o + i32(q * step)));
        acc = add64(acc, weq_act_term(n, lg_total - weq_act_lg(n), d));
    }
    return acc;
}

// Tree reduction of `best` (fixed order), leaving the winner in best[0].
fn reduce_best(lid: u32) {
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s && beats(best[lid + s], best[lid])) { best[lid] = best[lid + s]; }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn sweep(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.partials) { return; }
    // Exclusive prefix sums of the bins: runs of 4 per lane, a Hillis–Steele scan of the runs.
    let b0 = lid * 4u;
    let c0 = hist[b0];
    let c1 = hist[b0 + 1u];
    let c2 = hist[b0 + 2u];
    let c3 = hist[b0 + 3u];
    lane_sum[lid] = c0 + c1 + c2 + c3;
    for (var d = 1u; d < WORKGROUP_SIZE; d = d * 2u) {
        workgroupBarrier();
        let add = select(0u, lane_sum[lid - min(d, lid)], lid >= d);
        workgroupBarrier();
        lane_sum[lid] += add;
    }
    workgroupBarrier();
    let run = lane_sum[lid] - (c0 + c1 + c2 + c3);
    prefix[b0] = run;
    prefix[b0 + 1u] = run + c0;
    prefix[b0 + 2u] = run + c0 + c1;
    prefix[b0 + 3u] = run + c0 + c1 + c2;
    if (lid == WORKGROUP_SIZE - 1u) { prefix[WEQ_ACT_BINS] = lane_sum[lid]; }
    workgroupBarrier();
    let pair = wg * WORKGROUP_SIZE + lid;
    var cand = vec4<u32>(0u, 0u, NO_PAIR, 0u);
    if (pair < params.pairs) {
        let s = pair_score(pair / OFFSETS + 1u, pair % OFFSETS, weq_act_k_top(ranges[0].hi));
        cand = vec4<u32>(s.x, s.y, pair, 0u);
    }
    best[lid] = cand;
    reduce_best(lid);
    if (lid == 0u) { partials[wg] = vec4<u32>(best[0].x, best[0].y, best[0].z, prefix[WEQ_ACT_BINS]); }
}

// One workgroup: the best of the `sweep` workgroups' winners, written as the result record.
@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var cand = vec4<u32>(0u, 0u, NO_PAIR, 0u);
    if (lid < params.partials) { cand = partials[lid]; }
    best[lid] = cand;
    reduce_best(lid);
    if (lid == 0u) {
        let k_top = weq_act_k_top(ranges[0].hi);
        let pair = best[0].z;
        result[0] = WeqActResult(
            2u * (pair / OFFSETS + 1u),
            k_top - i32(WEQ_ACT_BINS - 1u) + OFFSET_MARGIN + i32(pair % OFFSETS),
            best[0].x,
            best[0].y,
            partials[0].w,
            hist[WEQ_ACT_BINS],
            hist[WEQ_ACT_BINS + 1u],
            k_top);
    }
}
