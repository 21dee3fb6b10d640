// Codebook decoding: x̂ = levels[group · 2^bits + u] for the b-bit code u of each element
// (layout in src/format/pack.rs). Needs common.wgsl, affine.wgsl, segments.wgsl and unpack.wgsl.

const ELEMS_PER_THREAD: u32 = 4u;

@group(0) @binding(3) var<storage, read> levels: array<f32>;
@group(0) @binding(5) var<storage, read> src: array<u32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn codebook_dequantize(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let index = find_segment(wg, params.num_segments);
    let seg = segments[index];
    let first = (wg - starts[index]) * WORKGROUP_SIZE * ELEMS_PER_THREAD;
    for (var k = 0u; k < ELEMS_PER_THREAD; k++) {
        let i = first + k * WORKGROUP_SIZE + lid;
        if (i < seg.len) {
            let code = unpack_code(seg.src, i, seg.bits);
            dst[seg.dst + i] = levels[(segment_group(seg, i) << seg.bits) + code];
        }
    }
}
