// Batched affine quantization to packed codes (ALGORITHMS.md §1, layout in src/format/pack.rs):
// stored code u = q − qmin occupies bits [i·b, i·b + b) of the segment's little-endian u32
// bitstream. One thread builds one output word from the (at most 33) codes overlapping it,
// so no two threads write the same word and no atomics are needed.
// Needs common.wgsl, affine.wgsl, segments.wgsl and pack.wgsl.

@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> zero: array<i32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

// The stored code of element c: u = q − qmin.
fn code_of(seg: AffineSegment, c: u32) -> u32 {
    let g = segment_group(seg, c);
    return u32(quantize_code(src[seg.src + c], scale[g], zero[g], seg.qmin, seg.qmax) - seg.qmin);
}

@compute @workgroup_size(256)
fn quantize_pack(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let wg = flat_workgroup(wid, nwg);
    if (wg >= params.num_workgroups) { return; }
    let index = find_segment(wg, params.num_segments);
    let seg = segments[index];
    let w = (wg - starts[index]) * WORKGROUP_SIZE + lid;
    if (w < packed_words(seg)) {
        dst[seg.dst + w] = pack_word(seg, w);
    }
}
