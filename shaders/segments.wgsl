// The segment table of a batched affine kernel (fake_quant, quantize_pack, dequantize):
// bindings 0-2 in every such kernel. The host prepends it after affine.wgsl.

// Mirrors `SegmentParams` in src/gpu/segments.rs.
struct SegmentParams {
    num_segments: u32,
    num_workgroups: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: SegmentParams;
@group(0) @binding(1) var<storage, read> segments: array<AffineSegment>;
// First flat workgroup of each segment, ascending.
@group(0) @binding(2) var<storage, read> starts: array<u32>;

// Index of the segment owning flat workgroup `wg`: the last one whose first workgroup is
// at most `wg` (`starts` is ascending, one entry per segment).
fn find_segment(wg: u32, count: u32) -> u32 {
    var lo = 0u;
    var hi = count;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (starts[mid] <= wg) { lo = mid; } else { hi = mid; }
    }
    return lo;
}
