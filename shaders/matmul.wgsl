// f32 matrix product C = op(A)·op(B) (+ bias per column): op(A) is M×K, op(B) is K×N, each
// stored row-major and optionally transposed. Dense layers use it as y = x·Wᵀ + b (B = W,
// transposed), and their gradients as dX = dY·W and dW = dYᵀ·X. A 64×64 tile of C per
// workgroup, each thread a 4×4 block, K in steps of 16 staged through workgroup memory.
// Needs common.wgsl before it.

// Mirrors `MatmulParams` in src/gpu/matmul.rs (64 bytes).
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,     // 1: A is stored K×M
    trans_b: u32,     // 1: B is stored N×K
    lda: u32,         // row stride of A as stored
    ldb: u32,         // row stride of B as stored
    ldc: u32,         // row stride of C
    a_base: u32,      // first element of A in its bound window
    b_base: u32,
    c_base: u32,
    bias_base: u32,
    has_bias: u32,
    accumulate: u32,  // 1: C += op(A)·op(B)
    tiles_n: u32,     // workgroups along N
    _pad: u32,
}

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<f32, 1024>; // [TILE_K][TILE] : op(A) transposed, k-major
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE] : op(B), k-major

fn load_a(row: u32, kk: u32) -> f32 {
    if (row >= params.m || kk >= params.k) { return 0.0; }
    if (params.trans_a != 0u) { return a[params.a_base + kk * params.lda + row]; }
    return a[params.a_base + row * params.lda + kk];
}

fn load_b(kk: u32, col: u32) -> f32 {
    if (kk >= params.k || col >= params.n) { return 0.0; }
    if (params.trans_b != 0u) { return b[params.b_base + col * params.ldb + kk]; }
    return b[params.b_base + kk * params.ldb + col];
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    let row0 = (wg / params.tiles_n) * TILE;
    let col0 = (wg % params.tiles_n) * TILE;
    // The folded grid's tail: whole workgroups past the last tile row leave together.
    if (row0 >= params.m) { return; }
    // Thread (ty, tx) owns rows row0 + 4·ty .. +3 and columns col0 + 4·tx .. +3.
    let ty = lid / 16u;
    let tx = lid % 16u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        // 1024 values of each tile, 4 per thread.
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let kk = e / TILE;
            let x = e % TILE;
            tile_a[e] = load_a(row0 + x, k0 + kk);
            tile_b[e] = load_b(k0 + kk, col0 + x);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk * TILE + ty * 4u + i];
                bv[i] = tile_b[kk * TILE + tx * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = acc[i * 4u + j] + av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + ty * 4u + i;
        if (row >= params.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + tx * 4u + j;
            if (col >= params.n) { continue; }
            var v = acc[i * 4u + j];
            if (params.has_bias != 0u) { v += bias[params.bias_base + col]; }
            let at = params.c_base + row * params.ldc + col;
            if (params.accumulate != 0u) { v += c[at]; }
            c[at] = v;
        }
    }
}
