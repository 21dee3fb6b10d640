// The affine quantizer shared by fake_quant, quantize_pack, dequantize and calibration
// (ALGORITHMS.md §1). Mirrors src/affine.rs; the host prepends it to those kernels.

// One tensor (or one chunk of a tensor) of a batched affine kernel. Mirrors
// `AffineSegment` in src/affine.rs field for field (36 bytes).
struct AffineSegment {
    src: u32,         // first input element (or word) in the bound input window
    dst: u32,         // first output element (or word) in the bound output window
    len: u32,         // elements in the segment
    group_len: u32,   // consecutive elements sharing one (scale, zero point)
    group_phase: u32, // position of element 0 inside its group (a chunk may start mid-group)
    param: u32,       // index of element 0's group in the bound scale/zero windows
    qmin: i32,
    qmax: i32,
    bits: u32,        // code width for packing; fake quantization reads qmin/qmax only
}

// q = clamp(round(x / s) + z, qmin, qmax); WGSL round() is half-to-even (DESIGN.md).
fn quantize_code(x: f32, s: f32, z: i32, qmin: i32, qmax: i32) -> i32 {
    let v = clamp(round(x / s) + f32(z), f32(qmin), f32(qmax));
    return i32(v);
}

// x̂ = (q - z) · s
fn dequantize_code(q: i32, s: f32, z: i32) -> f32 {
    return f32(q - z) * s;
}

// Group of element i of a segment, as an index into the bound scale/zero windows.
fn segment_group(seg: AffineSegment, i: u32) -> u32 {
    return seg.param + (seg.group_phase + i) / seg.group_len;
}
