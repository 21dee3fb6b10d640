// gemmlowp's fixed-point requantization (Jacob et al. 2018 §2.2; src/requant.rs, mirrored bit
// for bit): the 64-bit product of SaturatingRoundingDoublingHighMul built from 32-bit pieces,
// WGSL having no i64, then RoundingDivideByPOT. int32 arithmetic wraps, as in WGSL. Used by
// int8_matmul and requantize.

// The unsigned 64-bit product of a and b as (low, high) words, from 16-bit halves.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (mid << 16u) | (p00 & 0xffffu);
    let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2(lo, hi);
}

// gemmlowp SaturatingRoundingDoublingHighMul: (a·b + nudge) / 2^31 truncated toward zero, the
// nudge 2^30 for a non-negative product and 1 − 2^30 otherwise; i32::MIN² saturates.
fn srdhm(a: i32, b: i32) -> i32 {
    let int_min = bitcast<i32>(0x80000000u);
    if (a == int_min && b == int_min) { return 2147483647i; }
    // |a|, |b| as u32 (|i32::MIN| = 2^31 fits), the product's sign apart.
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    var p = mul_wide(select(ua, 0u - ua, a < 0i), select(ub, 0u - ub, b < 0i));
    if ((a < 0) != (b < 0)) {
        // Two's complement negation of the 64-bit value.
        let lo = ~p.x + 1u;
        p = vec2(lo, ~p.y + select(0u, 1u, lo == 0u));
    }
    let negative = (p.y & 0x80000000u) != 0u;
    // + nudge, as 64-bit words.
    let n = select(vec2(0x40000000u, 0u), vec2(0xc0000001u, 0xffffffffu), negative);
    let lo = p.x + n.x;
    let hi = p.y + n.y + select(0u, 1u, lo < p.x);
    // floor(v / 2^31), then toward zero for a negative v with a non-zero remainder.
    var q = bitcast<i32>((hi << 1u) | (lo >> 31u));
    if ((hi & 0x80000000u) != 0u && (lo & 0x7fffffffu) != 0u) { q += 1i; }
    return q;
}

// gemmlowp RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero (e ≤ 31).
fn rdbpot(x: i32, e: u32) -> i32 {
    let mask = bitcast<i32>((1u << e) - 1u);
    let remainder = x & mask;
    let threshold = (mask >> 1u) + select(0i, 1i, x < 0i);
    return (x >> e) + select(0i, 1i, remainder > threshold);
}

// TFLite MultiplyByQuantizedMultiplier: acc·M0·2^exponent, rounded; a left shift wraps.
fn multiply_by_quantized_multiplier(acc: i32, m0: i32, exponent: i32) -> i32 {
    let left = u32(max(exponent, 0i));
    let right = u32(max(-exponent, 0i));
    return rdbpot(srdhm(acc << left, m0), right);
}

// clamp(zero + acc·M, qmin, qmax), the zero point added with int32 wrap-around.
fn requantize_value(acc: i32, m0: i32, exponent: i32, zero: i32, qmin: i32, qmax: i32) -> i32 {
    return clamp(multiply_by_quantized_multiplier(acc, m0, exponent) + zero, qmin, qmax);
}
