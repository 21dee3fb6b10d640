//! Fixed-point requantization of int32 accumulators (ALGORITHMS.md §6; Jacob et al. 2018,
//! "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
//! Inference", §2.2), exactly as gemmlowp and TFLite apply it: the real multiplier
//! `M = s_in·s_w / s_out` is written `M0·2^exponent` with `M0 ∈ [0.5, 1)` stored as the int32
//! `round(M0·2^31)`, and `x·M` is `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x·2^l,
//! M0), r)` with `l = max(exponent, 0)`, `r = max(−exponent, 0)`. ALGORITHMS.md's `n` is
//! `−exponent`. Mirrored bit for bit by `shaders/int8_matmul.wgsl`.

use crate::error::{Error, Result};

/// A real multiplier as gemmlowp's fixed-point pair. Mirrored by two consecutive i32 words
/// (`m0`, `exponent`) in the kernels' multiplier tensors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantizedMultiplier {
    /// `round(M0·2^31)`, in `[2^30, 2^31)`, or 0 for a zero multiplier.
    pub m0: i32,
    /// Power of two: `M = M0·2^exponent`, in `[-31, 30]`.
    pub exponent: i32,
}
const _: () = assert!(std::mem::size_of::<QuantizedMultiplier>() == 8);

impl QuantizedMultiplier {
    /// Smallest exponent kept; TFLite's `QuantizeMultiplier` turns smaller ones into zero.
    pub const MIN_EXPONENT: i32 = -31;
    /// Largest exponent (a left shift of 30 bits).
    pub const MAX_EXPONENT: i32 = 30;

    /// The pair for a real multiplier `m ≥ 0`, as TFLite's `QuantizeMultiplier`: `frexp`,
    /// then `M0·2^31` rounded half away from zero, renormalised when it rounds up to `2^31`.
    /// Multipliers below `2^-32` become zero.
    pub fn from_real(m: f64) -> Result<Self> {
        if !(m.is_finite() && m >= 0.0) {
            return Err(Error::param(
                "requantize",
                format!("multiplier {m} is not a finite non-negative number"),
            ));
        }
        if m == 0.0 {
            return Ok(Self::default());
        }
        let (q, mut exponent) = frexp(m);
        let mut m0 = (q * (1u64 << 31) as f64).round() as i64;
        if m0 == 1 << 31 {
            m0 /= 2;
            exponent += 1;
        }
        if exponent < Self::MIN_EXPONENT {
            return Ok(Self::default());
        }
        if exponent > Self::MAX_EXPONENT {
            return Err(Error::param(
                "requantize",
                format!("multiplier {m} exceeds 2^{}", Self::MAX_EXPONENT),
            ));
        }
        Ok(Self {
            m0: m0 as i32,
            exponent,
        })
    }

    /// The pair for `s_in·s_w / s_out`, computed in f64.
    pub fn for_scales(s_in: f32, s_w: f32, s_out: f32) -> Result<Self> {
        if !(s_out > 0.0) {
            return Err(Error::param(
                "requantize",
                format!("output scale {s_out} is not positive"),
            ));
        }
        Self::from_real(f64::from(s_in) * f64::from(s_w) / f64::from(s_out))
    }

    /// Checks the fields a kernel relies on.
    pub fn validate(&self, op: &str) -> Result<()> {
        let m0_ok = self.m0 == 0 || self.m0 >= 1 << 30;
        let e_ok = (Self::MIN_EXPONENT..=Self::MAX_EXPONENT).contains(&self.exponent);
        if !(m0_ok && e_ok) {
            return Err(Error::param(
                op,
                format!(
                    "multiplier {self:?} is not normalised (M0 in [2^30, 2^31) or 0, exponent in [-31, 30])"
                ),
            ));
        }
        Ok(())
    }

    /// The real value `m0·2^(exponent − 31)`.
    pub fn to_real(&self) -> f64 {
        f64::from(self.m0) * 2f64.powi(self.exponent - 31)
    }

    /// `x·M`, rounded as TFLite's `MultiplyByQuantizedMultiplier` (a left shift wraps, as
    /// the int32 multiply does there).
    #[inline]
    pub fn apply(&self, x: i32) -> i32 {
        let left = self.exponent.max(0) as u32;
        let right = (-self.exponent).max(0) as u32;
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(x.wrapping_shl(left), self.m0),
            right,
        )
    }
}

/// The int8 output quantization: zero point and code range (stored codes `q − qmin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputQuant {
    /// Zero point.
    pub zero: i32,
    /// Smallest code.
    pub qmin: i32,
    /// Largest code (at most qmin + 255).
    pub qmax: i32,
}

impl OutputQuant {
    /// Checks that the codes fit 8 bits.
    pub fn check(&self, op: &str) -> Result<()> {
        if self.qmin > self.qmax || i64::from(self.qmax) - i64::from(self.qmin) > 255 {
            return Err(Error::param(
                op,
                format!(
                    "output range [{}, {}] does not fit 8 bits",
                    self.qmin, self.qmax
                ),
            ));
        }
        Ok(())
    }
}

/// `m = q·2^e` with `q ∈ [0.5, 1)`, for finite `m > 0`.
fn frexp(m: f64) -> (f64, i32) {
    // Subnormals are first scaled into the normal range.
    let (m, bias) = if m < f64::MIN_POSITIVE {
        (m * 2f64.powi(64), -64)
    } else {
        (m, 0)
    };
    let bits = m.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let q = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (q, exp - 1022 + bias)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `a·b / 2^31` rounded to nearest with ties
/// toward +∞ (the nudge is `2^30` for a non-negative product and `1 − 2^30` otherwise, then the
/// quotient truncates toward zero), saturating the one overflow (`a = b = i32::MIN`).
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as in C++.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from
/// zero, for `exponent` in `[0, 31]`.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let mask = ((1u64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// The requantized int8 output of one accumulator: `clamp(zero + acc·M, qmin, qmax)` (the
/// zero point added with int32 wrap-around, as TFLite's kernels do in int32).
#[inline]
pub fn requantize(acc: i32, m: QuantizedMultiplier, zero: i32, qmin: i32, qmax: i32) -> i32 {
    m.apply(acc).wrapping_add(zero).clamp(qmin, qmax)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact quotient n / 2^s rounded to nearest, ties toward +∞, in i128.
    fn round_half_up(n: i128, s: u32) -> i128 {
        (n + (1i128 << (s - 1))).div_euclid(1i128 << s)
    }

    /// The exact quotient n / 2^s rounded to nearest, ties away from zero, in i128.
    fn round_away(n: i128, s: u32) -> i128 {
        let d = 1i128 << s;
        let q = n.abs() / d;
        let r = n.abs() % d;
        let q = if 2 * r >= d { q + 1 } else { q };
        if n < 0 { -q } else { q }
    }

    const EDGES: [i32; 17] = [
        i32::MIN,
        i32::MIN + 1,
        -(1 << 30) - 1,
        -(1 << 30),
        -65537,
        -32768,
        -3,
        -2,
        -1,
        0,
        1,
        2,
        3,
        32768,
        1 << 30,
        i32::MAX - 1,
        i32::MAX,
    ];

    #[test]
    fn high_mul_is_exact_rounding_of_the_product() {
        // Ties: ±0.5 and ±1.5 in units of 2^31 round up.
        let h = 1i32 << 15;
        assert_eq!(saturating_rounding_doubling_high_mul(h, h), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(-h, h), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(-3 * h, h), -1);
        for &a in &EDGES {
            for &b in &EDGES {
                let got = saturating_rounding_doubling_high_mul(a, b);
                let want = round_half_up(i128::from(a) * i128::from(b), 31);
                let want = want.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32;
                assert_eq!(got, want, "SRDHM({a}, {b})");
            }
        }
    }

    #[test]
    fn divide_by_pot_rounds_ties_away_from_zero() {
        for e in 0..=31u32 {
            for &x in &EDGES {
                let want = round_away(i128::from(x), e) as i32;
                assert_eq!(rounding_divide_by_pot(x, e), want, "RDBPOT({x}, {e})");
            }
            // Exact ties on both sides of zero.
            if e > 0 && e < 31 {
                let half = 1i32 << (e - 1);
                assert_eq!(rounding_divide_by_pot(half, e), 1);
                assert_eq!(rounding_divide_by_pot(-half, e), -1);
                assert_eq!(rounding_divide_by_pot(3 * half, e), 2);
                assert_eq!(rounding_divide_by_pot(-3 * half, e), -2);
            }
        }
    }

    #[test]
    fn multipliers_round_trip_and_normalise() {
        for m in [
            1e-9,
            2.4e-10,
            0.0001234,
            0.25,
            0.5,
            0.75,
            0.999_999_999_9,
            1.0,
            3.7,
            1e9,
        ] {
            let q = QuantizedMultiplier::from_real(m).unwrap();
            q.validate("test").unwrap();
            let rel = (q.to_real() - m).abs() / m;
            assert!(rel <= 2f64.powi(-31), "{m}: {q:?} relative error {rel:e}");
        }
        // Rounds up to 2^31 and renormalises.
        let q = QuantizedMultiplier::from_real(1.0 - 2f64.powi(-40)).unwrap();
        assert_eq!(
            q,
            QuantizedMultiplier {
                m0: 1 << 30,
                exponent: 1
            }
        );
        assert_eq!(QuantizedMultiplier::from_real(0.0).unwrap().m0, 0);
        assert_eq!(QuantizedMultiplier::from_real(1e-30).unwrap().m0, 0);
        assert!(QuantizedMultiplier::from_real(-1.0).is_err());
        assert!(QuantizedMultiplier::from_real(f64::NAN).is_err());
        assert!(QuantizedMultiplier::from_real(1e12).is_err());
    }

    #[test]
    fn apply_matches_real_multiplication() {
        let m = QuantizedMultiplier::from_real(0.003_141_592_6).unwrap();
        for x in [-1_000_000, -12_345, -1, 0, 1, 999, 1_000_000] {
            let want = (f64::from(x) * m.to_real()).round();
            assert!((f64::from(m.apply(x)) - want).abs() <= 1.0, "{x}");
        }
    }
}
