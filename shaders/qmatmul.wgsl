// Dequantizing matmul y = x·Wᵀ (+ bias), ALGORITHMS.md §7: x f32 [M, K], W [N, K] stored as
// a packed code stream (layout in src/format/pack.rs, row n at bit n·K·BITS, so rows may start
// mid-word) decoded on the fly, never materialised: affine w = (u + qmin − z)·s, codebook
// w = levels[g·2^BITS + u], or dense f32 words (BITS = 32, the float baseline). `gemv` serves
// small M (each W row read once per XROWS rows of x), `gemm` large M (64×64 tiles through
// workgroup memory). Products and short partial sums are in `real` (f16 where the device has
// it), every sum across blocks in f32. Needs real_f32.wgsl or real_f16.wgsl first, then
// common.wgsl and bitstream.wgsl.

// Mirrors `QMatmulParams` in src/gpu/qmatmul.rs (80 bytes).
struct QMatmulParams {
    m: u32,              // rows of x and y
    n: u32,              // rows of W in this dispatch (columns of y it writes)
    k: u32,              // inner dimension
    code_bit0: u32,      // bit of the dispatch's first W row in the bound code window
    code_words: u32,     // words in the bound code window
    groups_per_row: u32, // parameter groups per W row (0: one for the whole tensor)
    group_len: u32,      // codes per parameter group along K
    qmin: i32,           // a stored code u means q = u + qmin
    has_zero: u32,       // 1: zero points bound, else z = 0
    scale_base: u32,     // the dispatch's first group's scale (or first level) in its window
    zero_base: u32,
    x_base: u32,
    y_base: u32,         // y[0, the dispatch's first column] in its window
    ldy: u32,            // row stride of y (all N columns)
    bias_base: u32,
    has_bias: u32,
    tiles_n: u32,        // workgroups along the dispatch's columns
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const KIND_AFFINE: u32 = 0u;
const KIND_CODEBOOK: u32 = 1u;
const KIND_DENSE: u32 = 2u;
// Pipeline constants the host sets per weight (`constants` in src/gpu/qmatmul.rs `encode`), so
// the device compiler folds every branch on them.
override KIND: u32 = 0u;
override BITS: u32 = 4u;              // 1..=8, or 32 for dense
override ALIGNED: bool = false;       // every row starts on a word and BITS divides 32
override UNIFORM: bool = true;        // every 32-code block lies inside one parameter group
override LANES: u32 = 1u;             // gemv: threads sharing one W row (a power of two)
override XROWS: u32 = 1u;             // gemv: rows of x per pass, at most MAX_XROWS
override MASK: u32 = 0xffffffffu >> (32u - BITS);
override TABLE_LEN: u32 = 1u << min(BITS, 16u);  // codebook levels per group
// Codes taken from one 32-bit window of the stream, and windows per 32-code block.
override PER_WINDOW: u32 = 32u / BITS;
override WINDOWS: u32 = (BLOCK + PER_WINDOW - 1u) / PER_WINDOW;

const BLOCK: u32 = 32u;
const MAX_XROWS: u32 = 8u;
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

@group(0) @binding(0) var<uniform> params: QMatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>; // affine scales or codebook levels
@group(0) @binding(4) var<storage, read> zero: array<i32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<vec4<f32>, 256>;  // gemv: one x row's lane sums
var<workgroup> tile_x: array<vec4<real>, 256>;  // gemm: [TILE_K][TILE / 4] of x, k-major
var<workgroup> tile_w: array<vec4<real>, 256>;  // gemm: [TILE_K][TILE / 4] of decoded W

// Word i of the code window (for bitstream.wgsl), clamped to it.
fn stream_word(stream: u32, i: u32) -> u32 {
    return codes[min(i, params.code_words - 1u)];
}

// 32 bits of the code stream from bit `bit` of the bound window.
fn read_bits(bit: u32) -> u32 {
    return stream_bits(0u, bit);
}

// Parameter group of code k of W row `row` (relative to the dispatch's first group).
fn group_of(row: u32, k: u32) -> u32 {
    return row * params.groups_per_row + k / params.group_len;
}

// qmin − z of group g: the affine weight is (u + this)·s.
fn affine_offset(g: u32) -> f32 {
    var z = 0i;
    if (params.has_zero != 0u) { z = zero[params.zero_base + g]; }
    return f32(params.qmin - z);
}

// The weight stored as code u in group g, fully decoded.
fn weight_value(u: u32, g: u32) -> f32 {
    if (KIND == KIND_DENSE) { return bitcast<f32>(u); }
    if (KIND == KIND_CODEBOOK) { return scale[params.scale_base + g * TABLE_LEN + u]; }
    return (f32(u) + affine_offset(g)) * scale[params.scale_base + g];
}

// The decoded weights of four rows' codes `u` (groups `g`) at one column.
fn weight4(u: vec4<u32>, g: vec4<u32>) -> vec4<f32> {
    return vec4(weight_value(u.x, g.x), weight_value(u.y, g.y),
                weight_value(u.z, g.z), weight_value(u.w, g.w));
}

// Adds codes [k0, k0 + kn) (kn ≤ BLOCK) of four W rows times x rows m0.. to `acc`, one vector
// lane per W row, so each x value loaded meets four codes. A block in one affine group sums
// (u + qmin − z)·x in `real` and scales once, in f32.
fn gemv_block(rows: vec4<u32>, k0: u32, kn: u32, xrow: ptr<function, array<u32, MAX_XROWS>>,
              acc: ptr<function, array<vec4<f32>, MAX_XROWS>>) {
    let factored = KIND == KIND_AFFINE && UNIFORM;
    let g = rows * params.groups_per_row + k0 / params.group_len;
    var off = vec4(0.0);
    if (factored) {
        off = vec4(affine_offset(g.x), affine_offset(g.y), affine_offset(g.z), affine_offset(g.w));
    }
    let row_bit = params.code_bit0 + (rows * params.k + k0) * BITS;
    var part: array<vec4<real>, MAX_XROWS>;
    for (var w = 0u; w < WINDOWS; w++) {
        let bit = row_bit + w * PER_WINDOW * BITS;
        var word: vec4<u32>;
        // Windows past a tail block's end may read past the stream: WebGPU bounds-checks the
        // read, and those codes only meet the zero select below.
        if (ALIGNED) {
            word = vec4(codes[bit.x / 32u], codes[bit.y / 32u], codes[bit.z / 32u], codes[bit.w / 32u]);
        } else {
            word = vec4(read_bits(bit.x), read_bits(bit.y), read_bits(bit.z), read_bits(bit.w));
        }
        for (var c = 0u; c < PER_WINDOW; c++) {
            let kk = w * PER_WINDOW + c;
            let u = (word >> vec4(c * BITS)) & vec4(MASK);
            var wv: vec4<real>;
            if (factored) {
                wv = vec4<real>(vec4<f32>(u) + off);
            } else if (UNIFORM) {
                wv = vec4<real>(weight4(u, g));
            } else {
                wv = vec4<real>(weight4(u, rows * params.groups_per_row + (k0 + kk) / params.group_len));
            }
            for (var j = 0u; j < XROWS; j++) {
                let xv = real(x[(*xrow)[j] + k0 + kk]);
                part[j] += select(vec4<real>(), wv * xv, kk < kn);
            }
        }
    }
    var s = vec4(1.0);
    if (factored) {
        let b = params.scale_base;
        s = vec4(scale[b + g.x], scale[b + g.y], scale[b + g.z], scale[b + g.w]);
    }
    for (var j = 0u; j < XROWS; j++) { (*acc)[j] += vec4<f32>(part[j]) * s; }
}

// Small M: thread t of a workgroup owns four W rows (t, t + T, t + 2T, t + 3T for T threads
// along N) for XROWS rows of x. With LANES > 1, LANES threads share those rows, each taking
// every LANES-th block of 32 codes, and their sums are added in a fixed tree.
@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    let m0 = (wg / params.tiles_n) * XROWS;
    // The folded grid's tail: whole workgroups past the last pass leave together.
    if (m0 >= params.m) { return; }
    let threads = WORKGROUP_SIZE / LANES;
    let lane = lid % LANES;
    let first = (wg % params.tiles_n) * threads * 4u + lid / LANES;
    let want = first + vec4(0u, 1u, 2u, 3u) * threads;
    // Rows past N compute a copy of the last row and store nothing (no early exit: barriers).
    let rows = min(want, vec4(params.n - 1u));
    var xrow: array<u32, MAX_XROWS>;
    for (var j = 0u; j < XROWS; j++) {
        xrow[j] = params.x_base + min(m0 + j, params.m - 1u) * params.k;
    }
    var acc: array<vec4<f32>, MAX_XROWS>;
    let full = params.k / BLOCK;
    for (var b = lane; b < full; b += LANES) {
        gemv_block(rows, b * BLOCK, BLOCK, &xrow, &acc);
    }
    if (params.k % BLOCK != 0u && lane == full % LANES) {
        gemv_block(rows, full * BLOCK, params.k % BLOCK, &xrow, &acc);
    }
    if (LANES > 1u) {
        for (var j = 0u; j < XROWS; j++) {
            partial[lid] = acc[j];
            workgroupBarrier();
            for (var s = LANES / 2u; s > 0u; s /= 2u) {
                if (lane < s) { partial[lid] += partial[lid + s]; }
                workgroupBarrier();
            }
            acc[j] = partial[lid];
            workgroupBarrier();
        }
    }
    if (lane != 0u) { return; }
    var b = vec4(0.0);
    if (params.has_bias != 0u) {
        let at = params.bias_base + rows;
        b = vec4(bias[at.x], bias[at.y], bias[at.z], bias[at.w]);
    }
    for (var j = 0u; j < XROWS; j++) {
        let m = m0 + j;
        let v = acc[j] + b;
        let at = params.y_base + m * params.ldy + want;
        if (m < params.m) {
            for (var i = 0u; i < 4u; i++) {
                if (want[i] < params.n) { y[at[i]] = v[i]; }
            }
        }
    }
}

// Large M: a 64×64 tile of y per workgroup, each thread a 4×4 block held as four vec4
// columns, K in steps of TILE_K. Each step a thread stages four rows of x at one k and decodes
// four W rows' codes at one k, each as one vec4 of workgroup memory.
@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    let row0 = (wg / params.tiles_n) * TILE;
    let col0 = (wg % params.tiles_n) * TILE;
    if (row0 >= params.m) { return; }
    let ty = lid / 16u;
    let tx = lid % 16u;
    // Staging: this thread's k within the step and its four rows of x / of W.
    let sk = lid / 16u;
    let quad = vec4(0u, 1u, 2u, 3u) + (lid % 16u) * 4u;
    let xrows = row0 + quad;
    let xoff = params.x_base + min(xrows, vec4(params.m - 1u)) * params.k;
    let wrows = min(col0 + quad, vec4(params.n - 1u));
    let wbit = params.code_bit0 + wrows * params.k * BITS;
    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    var acc2 = vec4(0.0);
    var acc3 = vec4(0.0);
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        let kk = k0 + sk;
        let inside = kk < params.k;
        let xv = vec4(x[xoff.x + kk], x[xoff.y + kk], x[xoff.z + kk], x[xoff.w + kk]);
        tile_x[lid] = vec4<real>(select(vec4(0.0), xv, (xrows < vec4(params.m)) & vec4(inside)));
        let u = vec4(read_bits(wbit.x + kk * BITS), read_bits(wbit.y + kk * BITS),
                     read_bits(wbit.z + kk * BITS), read_bits(wbit.w + kk * BITS)) & vec4(MASK);
        let wv = weight4(u, wrows * params.groups_per_row + kk / params.group_len);
        tile_w[lid] = vec4<real>(select(vec4(0.0), wv, vec4(inside)));
        workgroupBarrier();
        for (var s = 0u; s < TILE_K; s++) {
            let a = tile_x[s * 16u + ty];
            let b = tile_w[s * 16u + tx];
            acc0 += vec4<f32>(a * b.x);
            acc1 += vec4<f32>(a * b.y);
            acc2 += vec4<f32>(a * b.z);
            acc3 += vec4<f32>(a * b.w);
        }
        workgroupBarrier();
    }
    let acc = mat4x4<f32>(acc0, acc1, acc2, acc3);
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + tx * 4u + j;
        if (col >= params.n) { continue; }
        var b = 0.0;
        if (params.has_bias != 0u) { b = bias[params.bias_base + col]; }
        for (var i = 0u; i < 4u; i++) {
            let row = row0 + ty * 4u + i;
            if (row < params.m) { y[params.y_base + row * params.ldy + col] = acc[j][i] + b; }
        }
    }
}
