// Batched unpacking of affine codes back to floats: x̂ = (u + qmin − z)·s, u the b-bit code at
// bits [i·b, i·b + b) of the segment's bitstream (layout in src/format/pack.rs).
// Needs common.wgsl, affine.wgsl, segments.wgsl and unpack.wgsl.

const ELEMS_PER_THREAD: u32 = 4u;

@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> zero: array<i32>;
@group(0) @binding(5) var<storage, read> src: array<u32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn dequantize(@builtin(workgroup_id) wid: vec3<u32>,
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
            let g = segment_group(seg, i);
            let q = i32(unpack_code(seg.src, i, seg.bits)) + seg.qmin;
            dst[seg.dst + i] = dequantize_code(q, scale[g], zero[g]);
        }
    }
}
