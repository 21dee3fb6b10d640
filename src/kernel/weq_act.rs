//! What both twins of the WEQ activation kernels (`shaders/weq_act*.wgsl`) share: the
//! histogram's word layout, the lookup tables (uploaded whole to the device), the sweep's
//! pair count and its result record.

use std::sync::OnceLock;

/// Bins of the histogram of k = floor(16·log2 x): unit bins (1/16 octave) over 64 octaves.
pub const BINS: usize = 1024;
/// Histogram words: the bins, then the count of finite x ≤ 0, then of NaN and ±Inf, then padding.
pub const HIST_WORDS: usize = BINS + 4;
/// Word of the count of x ≤ 0 (zero level).
pub const ZERO_WORD: usize = BINS;
/// Word of the count of NaN and ±Inf.
pub const NONFINITE_WORD: usize = BINS + 1;
/// k of every positive subnormal: they sit below all normal floats (k(2^-126) = −2016) and
/// below every level (levels are clamped to at least 2^-126).
pub const K_SUBNORMAL: i32 = -2032;
/// Fractional bits of the fixed-point log2 of the sweep.
pub const LG_FRAC_BITS: u32 = 16;
/// Fractional bits of the weights 2^(−i/16) of the sweep.
pub const WEIGHT_FRAC_BITS: u32 = 30;

/// Offsets of each table in [`WeqActTables::words`] (mirrored in weq_act.wgsl).
pub const TABLE_THRESH: usize = 0;
/// Start of the level mantissas.
pub const TABLE_POW: usize = 16;
/// Start of the Q30 weights.
pub const TABLE_WEIGHT: usize = 32;
/// Start of the Q16 log2 table (257 entries).
pub const TABLE_LOG: usize = 48;
/// Words of the tables.
pub const TABLE_WORDS: usize = TABLE_LOG + 257;

/// The lookup tables both backends read (the GPU from one storage buffer of these words).
#[derive(Clone, Debug)]
pub struct WeqActTables {
    /// `[0, 16)`: mantissa thresholds T_i = ceil(2^23·(2^(i/16) − 1)) (T_0 = 0): the mantissa
    /// M of x satisfies 1 + M/2^23 ≥ 2^(i/16) exactly when M ≥ T_i (2^(i/16) is irrational).
    /// `[16, 32)`: bits of f32(2^(i/16)), correctly rounded (exponent field 127).
    /// `[32, 48)`: round(2^30 · 2^(−i/16)).
    /// `[48, 305)`: round(2^16 · log2(1 + i/256)), i = 0..=256.
    pub words: Vec<u32>,
}

/// The tables, computed once in f64 (`tests/weq_activation.rs` checks every entry lies far
/// from a rounding boundary, so no libm difference can change one).
pub fn tables() -> &'static WeqActTables {
    static TABLES: OnceLock<WeqActTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut words = vec![0u32; TABLE_WORDS];
        for i in 0..16 {
            let p = (i as f64 / 16.0).exp2();
            words[TABLE_THRESH + i] = if i == 0 {
                0
            } else {
                ((p - 1.0) * 8_388_608.0).ceil() as u32
            };
            words[TABLE_POW + i] = (p as f32).to_bits();
            words[TABLE_WEIGHT + i] =
                ((-(i as f64) / 16.0).exp2() * 1_073_741_824.0).round() as u32;
        }
        for i in 0..=256 {
            words[TABLE_LOG + i] = ((1.0 + i as f64 / 256.0).log2() * 65_536.0).round() as u32;
        }
        WeqActTables { words }
    })
}

/// Offsets tried per half step: o = k_lo + 17 + t, t in 0..1024. The lowest keeps every level
/// above the window's bin 0 (o − h > k_lo for h ≤ 16), so the values below the window, all
/// counted in bin 0, go to the zero level under every pair, as the forward sends them; the
/// highest, k_top + 17, sends everything to zero. So the range covers every offset at which
/// some value of the batch lands on a non-zero level, except levels more than 63 octaves
/// below the batch's maximum.
pub const OFFSETS: u32 = 1024;
/// Half steps h = 1..=16 (step 2h, log base 2^(2h/16)).
pub const MAX_HALF_STEP: u32 = 16;
/// (h, o) pairs; pair p has h = p / OFFSETS + 1 and t = p % OFFSETS.
pub const PAIRS: u32 = MAX_HALF_STEP * OFFSETS;
/// Lowest offset above the window bottom k_lo.
pub const OFFSET_MARGIN: i32 = 17;

/// The chosen quantizer and its score; mirrors `WeqActResult` in weq_act.wgsl. The forward
/// kernel reads `step` and `offset` from it on the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeqActResult {
    /// Step 2h of the log domain, in sixteenths of an octave.
    pub step: u32,
    /// Offset o: level 1 is 2^(o/16).
    pub offset: i32,
    /// Low word of the fixed-point score Σ_j w_j·n_j·D_j.
    pub score_lo: u32,
    /// High word.
    pub score_hi: u32,
    /// Positive finite elements N.
    pub positive: u32,
    /// Finite elements ≤ 0.
    pub zero: u32,
    /// NaN and ±Inf elements.
    pub nonfinite: u32,
    /// k = floor(16·log2 max x) of the batch (0 when nothing is positive).
    pub k_top: i32,
}
const _: () = assert!(std::mem::size_of::<WeqActResult>() == 32);

impl WeqActResult {
    /// The fixed-point score.
    pub fn score(&self) -> u64 {
        u64::from(self.score_lo) | (u64::from(self.score_hi) << 32)
    }

    /// S = −Σ_j r_j·P_j·ln P_j of the chosen pair (units of x), from the score.
    pub fn entropy(&self) -> f64 {
        if self.positive == 0 {
            return 0.0;
        }
        let scale = f64::from(self.k_top + 16) / 16.0;
        std::f64::consts::LN_2 * scale.exp2() * self.score() as f64
            / (f64::from(self.positive) * 65_536.0)
    }
}
