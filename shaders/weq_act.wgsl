// Shared by the weighted-entropy activation kernels (weq_act_histogram, weq_act_sweep,
// weq_act_forward; ALGORITHMS.md §3, "Activations"): the exact integer log index
// k = floor(16·log2 x) from a float's bits, levels 2^(m/16) built from bits, the fixed-point
// log2 and weights of the sweep, and the result record. Integer arithmetic only, so the CPU
// twins (src/cpu/weq_act_histogram.rs, weq_act_sweep.rs) give the same bits.
// Needs common.wgsl before it.

const WEQ_ACT_BINS: u32 = 1024u;
// k of positive subnormals: below every normal float (k(2^-126) = -2016).
const WEQ_ACT_K_SUBNORMAL: i32 = -2032;
// Where each table starts in `act_tables` (mirrors src/cpu/weq_act_histogram.rs).
const WEQ_ACT_THRESH: u32 = 0u;   // 16 mantissa thresholds ceil(2^23·(2^(i/16) − 1))
const WEQ_ACT_POW: u32 = 16u;     // 16 f32 bit patterns of 2^(i/16)
const WEQ_ACT_WEIGHT: u32 = 32u;  // 16 weights round(2^30 · 2^(−i/16))
const WEQ_ACT_LOG: u32 = 48u;     // 257 entries round(2^16 · log2(1 + i/256))

// Mirrors `WeqActResult` in src/cpu/weq_act_sweep.rs (32 bytes).
struct WeqActResult {
    step: u32,
    offset: i32,
    score_lo: u32,
    score_hi: u32,
    positive: u32,
    zero: u32,
    nonfinite: u32,
    k_top: i32,
}

@group(0) @binding(7) var<storage, read> act_tables: array<u32>;

// A positive value that is not +Inf or NaN.
fn weq_act_positive(b: u32) -> bool {
    return b != 0u && b < 0x7f800000u;
}

// NaN or ±Inf.
fn weq_act_nonfinite(b: u32) -> bool {
    return (b & 0x7fffffffu) >= 0x7f800000u;
}

// floor(16·log2 x) of a positive x from its bits: 16·(exponent) plus the number of
// thresholds the mantissa reaches, by a branchless 4-step binary search.
fn weq_act_klog(b: u32) -> i32 {
    let e = i32(b >> 23u);
    if (e == 0) { return WEQ_ACT_K_SUBNORMAL; }
    let m = b & 0x7fffffu;
    var j = 0u;
    j += select(0u, 8u, m >= act_tables[WEQ_ACT_THRESH + j + 8u]);
    j += select(0u, 4u, m >= act_tables[WEQ_ACT_THRESH + j + 4u]);
    j += select(0u, 2u, m >= act_tables[WEQ_ACT_THRESH + j + 2u]);
    j += select(0u, 1u, m >= act_tables[WEQ_ACT_THRESH + j + 1u]);
    return 16 * (e - 127) + i32(j);
}

// 2^(m/16): the table's 2^((m mod 16)/16) with floor(m/16) added to its exponent field,
// clamped to [2^-126, f32 max].
fn weq_act_pow16(m: i32) -> u32 {
    let e = m >> 4u;
    if (e > 127) { return 0x7f7fffffu; }
    if (e < -126) { return 0x00800000u; }
    return act_tables[WEQ_ACT_POW + u32(m & 15)] + (bitcast<u32>(e) << 23u);
}

// Q16 fixed-point log2 of n ≥ 1: exponent, table at the top 8 mantissa bits, linear
// interpolation on the next 16, rounded.
fn weq_act_lg(n: u32) -> u32 {
    let e = 31u - countLeadingZeros(n);
    let f = (n << (31u - e)) << 1u;
    let i = f >> 24u;
    let r = (f >> 8u) & 0xffffu;
    let t0 = act_tables[WEQ_ACT_LOG + i];
    let t1 = act_tables[WEQ_ACT_LOG + i + 1u];
    return (e << 16u) + t0 + (((t1 - t0) * r + 0x8000u) >> 16u);
}

// k of the batch's largest value, from its bits (0 when it is not positive).
fn weq_act_k_top(hi: f32) -> i32 {
    let b = bitcast<u32>(hi);
    return select(0, weq_act_klog(b), weq_act_positive(b));
}
