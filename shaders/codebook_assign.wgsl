// Codebook quantization to packed codes: code = number of the group's sorted thresholds
// t_0 ≤ … ≤ t_{L−2} that are ≤ x (L = 2^bits entries per group, the last unused; unused
// thresholds are +inf). Thresholds at midpoints of sorted levels give the nearest level (ties
// go up); WEQ passes its cluster boundaries. One thread builds one output word, like
// quantize_pack. Needs common.wgsl, affine.wgsl, segments.wgsl and pack.wgsl.

@group(0) @binding(3) var<storage, read> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

// Binary search: the first threshold above x, among L − 1.
fn assign_code(x: f32, base: u32, levels: u32) -> u32 {
    var lo = 0u;
    var hi = levels - 1u;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (thresholds[base + mid] <= x) { lo = mid + 1u; } else { hi = mid; }
    }
    return lo;
}

// The code of element c.
fn code_of(seg: AffineSegment, c: u32) -> u32 {
    let levels = 1u << seg.bits;
    return assign_code(src[seg.src + c], segment_group(seg, c) * levels, levels);
}

@compute @workgroup_size(256)
fn codebook_assign(@builtin(workgroup_id) wid: vec3<u32>,
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
