// Batched affine quantization to packed codes (ALGORITHMS.md §1, layout in src/format/pack.rs):
// stored code u = q − qmin occupies bits [i·b, i·b + b) of the segment's little-endian u32
// bitstream. One thread builds one output word from the (at most 33) codes overlapping it,
// so no two threads write the same word and no atomics are needed.
// Needs common.wgsl, affine.wgsl and segments.wgsl before it.

@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> zero: array<i32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn quantize_pack(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let index = find_segment(wg, params.num_segments);
    let seg = segments[index];
    let w = (wg - starts[index]) * WORKGROUP_SIZE + lid;
    let words = (seg.len * seg.bits + 31u) / 32u;
    if (w >= words) { return; }
    let bit0 = w * 32u;
    let first = bit0 / seg.bits;
    let end = min(seg.len, (bit0 + 32u + seg.bits - 1u) / seg.bits);
    var word = 0u;
    for (var c = first; c < end; c++) {
        let g = segment_group(seg, c);
        let q = quantize_code(src[seg.src + c], scale[g], zero[g], seg.qmin, seg.qmax);
        let code = u32(q - seg.qmin);
        let pos = i32(c * seg.bits) - i32(bit0);
        if (pos >= 0) {
            word |= code << u32(pos);
        } else {
            word |= code >> u32(-pos);
        }
    }
    dst[seg.dst + w] = word;
}
