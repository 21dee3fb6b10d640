// Shared by the WEQ weight kernels (weq_histogram, weq_sweep; ALGORITHMS.md §3, GPU form):
// the power-of-two span of a group's fine histogram of |w|, so every bin edge and every
// scaled magnitude is exact and the CPU twins reproduce the bins bit for bit.
// Needs affine.wgsl (GroupRange) before it. Mirrors src/cpu/weq_histogram.rs.

// Smallest span exponent: smaller magnitudes all fall into bin 0 (keeps widths normal).
const WEQ_EXP_MIN: i32 = -100;

// 2^k for |k| ≤ 126, built from its bits (exact).
fn weq_pow2(k: i32) -> f32 {
    return bitcast<f32>(u32(k + 127) << 23u);
}

// e with max|x| < 2^e: the histogram spans [0, 2^e).
fn weq_span_exponent(r: GroupRange) -> i32 {
    let m = max(abs(r.lo), abs(r.hi));
    let biased = i32((bitcast<u32>(m) >> 23u) & 0xffu);
    return clamp(biased - 126, WEQ_EXP_MIN, 128);
}

// |x| with subnormals flushed to 0, as GPUs may do anyway.
fn weq_magnitude(x: f32) -> f32 {
    let a = abs(x);
    return select(a, 0.0, a < 1.17549435e-38);
}

// Bits of fixed point per bin: bin b holds t < b + 1 ≤ 2^c, c = bit length of b, and stores
// floor(t² · 2^(31 − 2c)) < 2^31 per element, so every bin keeps 29+ significant bits.
fn weq_bin_shift(bin: u32) -> i32 {
    return 31 - 2 * i32(32u - countLeadingZeros(bin));
}
