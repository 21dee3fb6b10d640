// Batched affine fake quantization (ALGORITHMS.md §1): x̂ = (clamp(round(x/s) + z) - z)·s for
// every element of every segment, each segment with its own groups, scales and range.
// Needs common.wgsl, affine.wgsl and segments.wgsl before it.

const ELEMS_PER_THREAD: u32 = 4u;

@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> zero: array<i32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

fn fake_quant_value(seg: AffineSegment, i: u32, x: f32) -> f32 {
    let g = segment_group(seg, i);
    let s = scale[g];
    let z = zero[g];
    return dequantize_code(quantize_code(x, s, z, seg.qmin, seg.qmax), s, z);
}

// Out of place: src -> dst. Each workgroup covers WORKGROUP_SIZE·ELEMS_PER_THREAD elements
// of one segment, threads striding by WORKGROUP_SIZE so loads coalesce.
@compute @workgroup_size(256)
fn fake_quant(@builtin(workgroup_id) wid: vec3<u32>,
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
            dst[seg.dst + i] = fake_quant_value(seg, i, src[seg.src + i]);
        }
    }
}

// In place on dst (a buffer cannot be bound read-only and read-write in one dispatch).
@compute @workgroup_size(256)
fn fake_quant_inplace(@builtin(workgroup_id) wid: vec3<u32>,
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
            dst[seg.dst + i] = fake_quant_value(seg, i, dst[seg.dst + i]);
        }
    }
}
