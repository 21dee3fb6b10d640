// Magnitude pruning (Deep Compression §2, Han, Mao, Dally 2016; ALGORITHMS.md §5): the keep-mask
// bit of an element is 1 when |x| exceeds its group's threshold, packed 1 bit per element like
// any code (layout in src/format/pack.rs). One thread builds one mask word, as codebook_assign
// builds one code word. Needs common.wgsl, affine.wgsl, segments.wgsl and pack.wgsl.

@group(0) @binding(3) var<storage, read> threshold: array<f32>;
@group(0) @binding(5) var<storage, read> src: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<u32>;

// The keep bit of element c.
fn code_of(seg: AffineSegment, c: u32) -> u32 {
    return select(0u, 1u, abs(src[seg.src + c]) > threshold[segment_group(seg, c)]);
}

@compute @workgroup_size(256)
fn prune_mask(@builtin(workgroup_id) wid: vec3<u32>,
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
