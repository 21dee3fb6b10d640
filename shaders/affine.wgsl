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

// The calibrated range of one group; mirrors `GroupRange` in src/affine.rs (16 bytes).
struct GroupRange {
    lo: f32,
    hi: f32,
    nonfinite: u32, // NaN and ±Inf values, left out of [lo, hi]
    _pad: u32,
}

fn is_finite_f32(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

struct AffineParams {
    scale: f32,
    zero: i32,
}

// A usable scale: s when it is a positive normal number, else 1 (an all-zero range); at most
// f32::MAX / 2^ceil(log2 reach), so that (q − z)·s stays finite for every code pair, reach being
// the largest |q − z| of the scheme. Mirrors `positive_scale` in src/affine.rs.
fn positive_scale(s: f32, reach: u32) -> f32 {
    // ceil(log2 reach): firstLeadingBit(0) is all ones, so reach 1 gives 0.
    let e = firstLeadingBit(max(reach, 1u) - 1u) + 1u;
    if (s >= 1.17549435e-38 && s <= 3.40282347e38) { return min(s, ldexp(3.40282347e38, -i32(e))); }
    return 1.0;
}

// (scale, zero point) for a calibrated range; mirrors `affine_from_range` in src/affine.rs.
// Symmetric: s = max(|lo|, |hi|) / ((qmax − qmin)/2). Asymmetric: the range is widened to hold 0,
// s = (hi − lo)/(qmax − qmin), z = clamp(round(qmin − lo/s), qmin, qmax).
fn affine_from_range(lo: f32, hi: f32, qmin: i32, qmax: i32, symmetric: bool) -> AffineParams {
    let levels = f32(qmax - qmin);
    if (symmetric) {
        let a = max(abs(lo), abs(hi));
        return AffineParams(positive_scale(a / (levels * 0.5), u32(-qmin)), 0);
    }
    let l = min(lo, 0.0);
    let h = max(hi, 0.0);
    // hi − lo overflows f32 past half its range: divide first there.
    let wide = h > 1.70141173e38 || l < -1.70141173e38;
    let s = positive_scale(select((h - l) / levels, h / levels - l / levels, wide), u32(qmax - qmin));
    let z = clamp(round(f32(qmin) - l / s), f32(qmin), f32(qmax));
    return AffineParams(s, i32(z));
}
