// Full-integer matmul (ALGORITHMS.md §6; Jacob et al. 2018 §2.3): int8 activations x [M, K]
// and int8 weights W [N, K], both packed 8-bit codes (src/format/pack.rs, u = q − qmin),
// int32 accumulation acc = Σ_k (qx − zx)(qw − zw) + bias, then either the accumulators or
// int8 outputs requantized with gemmlowp's fixed-point multiplier M0·2^exponent. Needs
// common.wgsl, bitstream.wgsl and fixed_point.wgsl.
//
// A code u is read as the signed byte a = u − 128 (u ^ 0x80), so q − z = a − (z − qmin − 128)
// and acc = Σa·w − zw'·Σa − zx'·Σw + K·zx'·zw' with the primed offsets: four bytes at a time by
// dot4I8Packed, or by extractBits when DOT4 is off. int32 arithmetic wraps, on both backends.

// Mirrors `Int8MatmulParams` in src/gpu/int8_matmul.rs (96 bytes).
struct Int8MatmulParams {
    m: u32,
    n: u32,              // N: columns of y (all of them)
    k: u32,
    col0: u32,           // the dispatch's first column (W row) of y
    cols: u32,           // the dispatch's columns
    x_bit0: u32,         // bit of x[0, 0] in the bound x window
    x_words: u32,
    w_bit0: u32,         // bit of the dispatch's first W row in the bound W window
    w_words: u32,
    x_offset: i32,       // zx − qmin_x − 128
    w_offset: i32,       // −qmin_w − 128 (plus the row's zero point when has_w_zero)
    has_w_zero: u32,
    w_zero_base: u32,    // the dispatch's first W zero point in its window
    has_bias: u32,
    bias_base: u32,
    mult_base: u32,      // the dispatch's first (M0, exponent) pair, in i32 words
    per_channel: u32,    // 1: one multiplier per column, else one for all
    out_zero: i32,
    out_qmin: i32,
    out_qmax: i32,
    requant: u32,        // 1: packed int8 codes out, 0: int32 accumulators out
    y_base: u32,         // y's first word in its window
    words_per_row: u32,  // 0: thread t covers outputs 4t..4t+3 of all M·N; else per chunk row
    num_words: u32,      // threads with work in this dispatch
}

override DOT4: bool = true;       // dot4I8Packed, else a plain byte loop
override ALIGNED: bool = false;   // K % 4 == 0 and both windows start on a word

@group(0) @binding(0) var<uniform> params: Int8MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> w_zero: array<i32>;
@group(0) @binding(4) var<storage, read> mult: array<i32>;  // (M0, exponent) pairs
@group(0) @binding(5) var<storage, read> bias: array<i32>;
@group(0) @binding(6) var<storage, read_write> y: array<u32>;

const ONES: u32 = 0x01010101u;
const SIGN_FLIP: u32 = 0x80808080u;

const X_STREAM: u32 = 0u;
const W_STREAM: u32 = 1u;

// Word i of x or W (for bitstream.wgsl), clamped to its window.
fn stream_word(stream: u32, i: u32) -> u32 {
    if (stream == W_STREAM) { return w[min(i, params.w_words - 1u)]; }
    return x[min(i, params.x_words - 1u)];
}

// Four codes of x or W from bit `bit` (a multiple of 8).
fn codes4(stream: u32, bit: u32) -> u32 {
    if (ALIGNED) { return stream_word(stream, bit / 32u); }
    return stream_bits(stream, bit);
}

// Σ a_j·b_j over four signed bytes.
fn dot4(a: u32, b: u32) -> i32 {
    if (DOT4) { return dot4I8Packed(a, b); }
    var s = 0i;
    for (var j = 0u; j < 4u; j++) {
        s += extractBits(bitcast<i32>(a), 8u * j, 8u) * extractBits(bitcast<i32>(b), 8u * j, 8u);
    }
    return s;
}

// Thread t computes four consecutive outputs (one packed word of y): the flat outputs
// 4t..4t+3, or with `words_per_row` four columns of one row of the dispatch's chunk.
@compute @workgroup_size(256)
fn int8_matmul(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = flat_workgroup(wid, nwg) * WORKGROUP_SIZE + lid;
    if (t >= params.num_words) { return; }
    var e0 = 4u * t;
    if (params.words_per_row != 0u) {
        e0 = (t / params.words_per_row) * params.n + params.col0 + 4u * (t % params.words_per_row);
    }
    let total = params.m * params.n;
    var xb: vec4<u32>;
    var wb: vec4<u32>;
    var zw: vec4<i32>;
    for (var i = 0u; i < 4u; i++) {
        let e = min(e0 + i, total - 1u);
        let row = min(e % params.n - params.col0, params.cols - 1u);
        xb[i] = params.x_bit0 + (e / params.n) * params.k * 8u;
        wb[i] = params.w_bit0 + row * params.k * 8u;
        zw[i] = params.w_offset;
        if (params.has_w_zero != 0u) { zw[i] += w_zero[params.w_zero_base + row]; }
    }
    var dot = vec4(0i);
    var sa = vec4(0i);
    var sw = vec4(0i);
    let kw = (params.k + 3u) / 4u;
    for (var j = 0u; j < kw; j++) {
        // Bytes past K (the last word of a row) are zero after the sign flip.
        let keep = select(0xffffffffu, (1u << (8u * (params.k % 4u))) - 1u, j * 4u + 4u > params.k);
        for (var i = 0u; i < 4u; i++) {
            let a = (codes4(X_STREAM, xb[i] + 32u * j) ^ SIGN_FLIP) & keep;
            let b = (codes4(W_STREAM, wb[i] + 32u * j) ^ SIGN_FLIP) & keep;
            dot[i] += dot4(a, b);
            sa[i] += dot4(a, ONES);
            sw[i] += dot4(b, ONES);
        }
    }
    var word = 0u;
    for (var i = 0u; i < 4u; i++) {
        let e = e0 + i;
        let row = e % params.n - params.col0;
        if (e >= total || row >= params.cols) { continue; }
        var acc = dot[i] - zw[i] * sa[i] - params.x_offset * sw[i]
                  + i32(params.k) * params.x_offset * zw[i];
        if (params.has_bias != 0u) { acc += bias[params.bias_base + row]; }
        if (params.requant == 0u) {
            y[params.y_base + e] = bitcast<u32>(acc);
        } else {
            let c = params.mult_base + 2u * select(0u, row, params.per_channel != 0u);
            let q = requantize_value(acc, mult[c], mult[c + 1u], params.out_zero, params.out_qmin,
                                     params.out_qmax);
            word |= (bitcast<u32>(q - params.out_qmin) & 0xffu) << (8u * i);
        }
    }
    if (params.requant != 0u) { y[params.y_base + e0 / 4u] = word; }
}
