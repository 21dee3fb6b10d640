//! Shared harness of the GPU-vs-CPU kernel tests, in the manner of ggml's
//! tests/test-backend-ops.cpp: one shared device, seeded data generators, poisoned outputs
//! guarded by sentinel words, and comparisons with named bounds that print `OP(params)` and
//! the first mismatching index on failure.
//!
//! Every check returns `Result<(), String>` so a test can run many cases, collect every
//! failure and report them together with [`finish`].

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use std::cell::Cell;
use std::io::Write;
use std::ops::Range;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp1, StandardNormal};
use wgquant::affine::{AffineMode, AffineScheme, AffineSegment};
use wgquant::gpu::{Context, ElemType, GpuTensor};

/// Outcome of one check: `Err` holds the full failure message.
pub type Check = Result<(), String>;

// ---------------------------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------------------------

/// Writes a line to the process's real stderr, bypassing libtest's output capture, so the
/// adapter line and SKIPPED lines are visible in a normal `cargo test` run.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether a missing adapter must fail the run (`CI` is set) instead of skipping.
pub fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The shared device of this test binary, created once.
///
/// Without an adapter: panics with the error when `CI` is set (a CI run must never turn into
/// a silent skip), otherwise prints a `SKIPPED: no GPU adapter` line and returns `None`.
pub fn gpu() -> Option<&'static Context> {
    static GPU: OnceLock<Option<Context>> = OnceLock::new();
    let ctx = GPU.get_or_init(|| match Context::new() {
        Ok(ctx) => {
            let l = ctx.limits();
            say(&format!(
                "wgquant tests: using adapter {} (max storage binding {} B, max buffer {} B, \
                 storage offset alignment {} B)",
                ctx.adapter_summary(),
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.min_storage_buffer_offset_alignment
            ));
            Some(ctx)
        }
        Err(e) => {
            if ci() {
                panic!("CI is set and no GPU adapter could be created: {e}");
            }
            None
        }
    });
    if ctx.is_none() {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        say(&format!(
            "SKIPPED: no GPU adapter ({test}); set CI=1 to make this a failure"
        ));
    }
    ctx.as_ref()
}

/// The binary's `--device` values a test should run: the CPU, and the GPU when this machine
/// has an adapter (always under `CI`). `auto` would pick the CPU over a software adapter.
pub fn cli_devices() -> Vec<&'static str> {
    let mut d = vec!["cpu"];
    if gpu().is_some() {
        d.push("gpu");
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Seeds and data
// ---------------------------------------------------------------------------------------------

/// Base of every seed; `WGQUANT_TEST_SEED` (decimal or 0x-hex) replaces it to explore.
pub const SEED_BASE: u64 = 0x5EED_2026_1122_0001;

/// The seed of a case: the base mixed with a hash of the case's description, so every case
/// has its own data and a failure reproduces from its printed parameters.
pub fn seed_for(case: &str) -> u64 {
    let base = std::env::var("WGQUANT_TEST_SEED")
        .ok()
        .and_then(|s| match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        })
        .unwrap_or(SEED_BASE);
    // FNV-1a, then a splitmix64 finaliser so nearby descriptions give unrelated seeds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in case.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ base;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded generator.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Distributions of test tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dist {
    /// Normal with a random mean in [−0.5, 0.5) and deviation in [0.5, 2).
    Normal,
    /// Laplace (heavy tails, like trained weights) with a random scale in [0.5, 2).
    Laplace,
    /// Standard normal with 0.1% of the values (at least one when n ≥ 64) multiplied by 50.
    Outliers,
    /// One random non-zero value everywhere.
    Constant,
}

impl Dist {
    /// Every distribution, in the order cases rotate through them.
    pub const ALL: [Dist; 4] = [Dist::Normal, Dist::Laplace, Dist::Outliers, Dist::Constant];

    /// Short name used in case labels.
    pub fn name(self) -> &'static str {
        match self {
            Dist::Normal => "normal",
            Dist::Laplace => "laplace",
            Dist::Outliers => "outliers",
            Dist::Constant => "constant",
        }
    }

    /// Whether the values are random (the rounding-noise model of level 3 applies).
    pub fn is_random(self) -> bool {
        self != Dist::Constant
    }
}

/// `n` values of `dist` from `seed`.
pub fn generate(dist: Dist, n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    match dist {
        Dist::Normal => {
            let mean = r.random::<f32>() - 0.5;
            let std = 0.5 + 1.5 * r.random::<f32>();
            (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut r);
                    mean + std * z
                })
                .collect()
        }
        Dist::Laplace => {
            let b = 0.5 + 1.5 * r.random::<f32>();
            (0..n)
                .map(|_| {
                    // The difference of two unit exponentials is a unit Laplace variable.
                    let e1: f32 = Exp1.sample(&mut r);
                    let e2: f32 = Exp1.sample(&mut r);
                    b * (e1 - e2)
                })
                .collect()
        }
        Dist::Outliers => {
            let mut v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut r)).collect();
            let count = if n >= 64 { (n / 1000).max(1) } else { 0 };
            for _ in 0..count {
                let i = r.random_range(0..n);
                v[i] *= 50.0;
            }
            v
        }
        Dist::Constant => {
            let c = loop {
                let c = 6.0 * r.random::<f32>() - 3.0;
                if c.abs() > 0.01 {
                    break c;
                }
            };
            vec![c; n]
        }
    }
}

/// Per-group (scale, zero point) from each group's min/max over `x` (the last group may be
/// shorter), as calibration would set them.
pub fn group_params(x: &[f32], group_len: usize, scheme: AffineScheme) -> (Vec<f32>, Vec<i32>) {
    x.chunks(group_len.max(1))
        .map(|g| {
            let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            scheme.params_from_range(lo, hi)
        })
        .unzip()
}

/// Short name of a mode in case labels.
pub fn mode_name(mode: AffineMode) -> &'static str {
    match mode {
        AffineMode::Symmetric => "sym",
        AffineMode::SymmetricRestricted => "sym_restricted",
        AffineMode::Asymmetric => "asym",
    }
}

/// Every mode.
pub const MODES: [AffineMode; 3] = [
    AffineMode::Symmetric,
    AffineMode::SymmetricRestricted,
    AffineMode::Asymmetric,
];

/// One whole-tensor segment at offset 0.
pub fn whole_segment(n: usize, group_len: usize, scheme: AffineScheme) -> AffineSegment {
    AffineSegment {
        src: 0,
        dst: 0,
        len: n as u32,
        group_len: group_len as u32,
        group_phase: 0,
        param: 0,
        qmin: scheme.qmin(),
        qmax: scheme.qmax(),
        bits: scheme.bits,
    }
}

/// Element `i` of a hashed sequence in [−1, 1) keyed by `salt`: cheap seeded checkpoint data.
pub fn hashed_value(i: usize, salt: u64) -> f32 {
    let x = ((i as u64) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    x as f32 / (1u64 << 23) as f32 - 1.0
}

/// Runs the `wgquant` binary built with these tests.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_wgquant"))
        .args(args)
        .output()
        .expect("the wgquant binary runs")
}

/// A finished command's stderr as text.
pub fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A checkpoint tensor of [`hashed_value`]s plus `shift`, stored as `dtype` (F32, F16, BF16).
pub fn hashed_tensor(
    dtype: safetensors::Dtype,
    shape: &[usize],
    salt: u64,
    shift: f32,
) -> wgquant::checkpoint::file::OutTensor<'static> {
    use safetensors::Dtype;
    let n: usize = shape.iter().product();
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            let v = hashed_value(i, salt) + shift;
            match dtype {
                Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                _ => v.to_le_bytes().to_vec(),
            }
        })
        .collect();
    wgquant::checkpoint::file::OutTensor {
        dtype,
        shape: shape.to_vec(),
        data: std::borrow::Cow::Owned(data),
    }
}

// ---------------------------------------------------------------------------------------------
// Poisoned outputs and sentinels
// ---------------------------------------------------------------------------------------------

/// Poison written over outputs before a dispatch: a quiet NaN with a recognisable payload, so
/// an unwritten f32 element cannot pass a comparison and an unwritten word stands out.
pub const POISON: u32 = 0x7FC0_DEAD;

/// A new device tensor of `shape` filled with [`POISON`]: an output every element of which the
/// op must write.
pub fn poisoned(ctx: &Context, shape: &[usize], dtype: ElemType) -> GpuTensor {
    let t = GpuTensor::zeros(ctx, shape, dtype).expect("allocate an output");
    t.fill_bits(ctx, POISON).expect("poison an output");
    t
}

/// Fails naming the first word of each `(name, tensor)` output still holding [`POISON`].
pub fn check_written(ctx: &Context, outputs: &[(&str, &GpuTensor)]) -> Result<(), String> {
    for (name, t) in outputs {
        let words: Vec<u32> = t.download(ctx).map_err(|e| e.to_string())?;
        if let Some(i) = words.iter().position(|w| *w == POISON) {
            return Err(format!("{name} word {i} of {} left unwritten", words.len()));
        }
    }
    Ok(())
}

/// Sentinel words after every guarded output: odd, and more than one 16-byte vector, so a
/// kernel or window writing a little past its end is caught.
pub const TRAIL_SENTINELS: usize = 67;

/// An output tensor `view` of `len` elements inside a larger buffer `full` that holds `lead`
/// poisoned words before it and [`TRAIL_SENTINELS`] after it. With `lead` not a multiple of
/// 64 the view starts at an offset that is not 256-byte aligned.
pub struct Guarded {
    /// The whole allocation: lead words, the view, the sentinels.
    pub full: GpuTensor,
    /// The op's output.
    pub view: GpuTensor,
    /// Poisoned words before the view.
    pub lead: usize,
    /// Elements of the view.
    pub len: usize,
}

impl Guarded {
    /// Allocates and poisons the whole buffer.
    pub fn new(ctx: &Context, lead: usize, len: usize, dtype: ElemType) -> wgquant::Result<Self> {
        let full = GpuTensor::zeros(ctx, &[lead + len + TRAIL_SENTINELS], dtype)?;
        full.fill_bits(ctx, POISON)?;
        let view = full.slice(lead, &[len])?;
        Ok(Self {
            full,
            view,
            lead,
            len,
        })
    }

    /// A guarded f32 tensor holding `data` (for in-place ops): poison around it.
    pub fn with_data(ctx: &Context, lead: usize, data: &[f32]) -> wgquant::Result<Self> {
        let g = Self::new(ctx, lead, data.len(), ElemType::F32)?;
        g.view.write(ctx, data)?;
        Ok(g)
    }

    /// Downloads the whole buffer and checks the poison: inside `written` (element ranges of
    /// the view) no element may still be poison (unless `expected` says poison is the right
    /// value there); everywhere else, lead, gaps and sentinels, every word must still be
    /// poison. Returns the view's words.
    pub fn check(
        &self,
        ctx: &Context,
        label: &str,
        written: &[Range<usize>],
        expected: Option<&[u32]>,
    ) -> Result<Vec<u32>, String> {
        let all: Vec<u32> = self
            .full
            .download(ctx)
            .map_err(|e| format!("{label}: download failed: {e}"))?;
        let mut inside = vec![false; self.len];
        for r in written {
            inside[r.clone()].iter_mut().for_each(|b| *b = true);
        }
        for (k, &w) in all.iter().enumerate() {
            let region = if k < self.lead {
                "lead guard"
            } else if k >= self.lead + self.len {
                "trailing sentinel"
            } else {
                let i = k - self.lead;
                if inside[i] {
                    if w == POISON && expected.is_none_or(|e| e[i] != POISON) {
                        return Err(format!(
                            "{label}: output element {i} was never written (still poison {w:#010x})"
                        ));
                    }
                    continue;
                }
                "gap between segments"
            };
            if w != POISON {
                return Err(format!(
                    "{label}: {region} word {k} (view element {}) was overwritten: {w:#010x}, \
                     poison is {POISON:#010x}",
                    k as i64 - self.lead as i64
                ));
            }
        }
        Ok(all[self.lead..self.lead + self.len].to_vec())
    }
}

/// The f32 values of words.
pub fn as_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

// ---------------------------------------------------------------------------------------------
// Comparisons, each bound named and explained
// ---------------------------------------------------------------------------------------------

/// A code may differ between backends only where x/s lies within this distance of a rounding
/// boundary k + ½, in units of the quantization step, relative to max(|x/s|, 1): the CPU
/// divides correctly rounded (½ ULP) while Vulkan and GL allow 2.5 ULP (≈ 3·10⁻⁷ relative,
/// an f32 ULP being 2⁻²³ ≈ 1.2·10⁻⁷ relative); 10⁻⁶ ≈ 8 ULP covers both with 3× margin and
/// stays tiny at every width (at 16 bits, |x/s| < 2¹⁶: under 0.07 of a step).
pub const TIE_REL_TOL: f64 = 1e-6;

/// Slack of the "within step/2" check beyond s·TIE_REL_TOL·|x/s|, in units of f32 epsilon of
/// the larger of |x| and |x̂|: x̂ = (q − z)·s is rounded once (½ ULP) and the input itself
/// is compared in f32.
pub const HALF_STEP_SLACK_EPS: f64 = 4.0;

/// Level 3: error power may be at most this many times the uniform rounding-noise model
/// Σ s²/12. Min/max calibration never clips by more than s/2, but the clipped edge of the
/// symmetric grid and the z-rounded asymmetric grid add a few elements' worth, and a
/// 255-element estimate of the noise power has ≈ 6% standard deviation; 2× covers both and
/// still catches a wrong scale or group (which costs orders of magnitude).
pub const QUANT_NOISE_RATIO_MAX: f64 = 2.0;

/// Level 3 applies from this many elements on (fewer give too noisy an estimate).
pub const LEVEL3_MIN_LEN: usize = 255;

/// Level 3 applies to groups of at least this many elements: min/max calibration puts each
/// group's extremes on the grid's edge, where the error is deterministic (up to s/2, power
/// s²/4, not s²/12), and in tiny groups those extremes are most of the data.
pub const LEVEL3_MIN_GROUP: usize = 16;

/// NaN/Inf check, first of every comparison.
pub fn check_finite(label: &str, what: &str, v: &[f32]) -> Check {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!(
            "{label}: {what}[{i}] is not finite: {} (bits {:#010x})",
            v[i],
            v[i].to_bits()
        )),
        None => Ok(()),
    }
}

/// NMSE = mse(a, b) / mse(a, 0), in f64; 0 when both are all zero, ∞ when only `a` is.
pub fn nmse(a: &[f32], b: &[f32]) -> f64 {
    let (mut err, mut sig) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        err += d * d;
        sig += f64::from(x) * f64::from(x);
    }
    if err == 0.0 {
        0.0
    } else if sig == 0.0 {
        f64::INFINITY
    } else {
        err / sig
    }
}

/// NaN/Inf first, then NMSE(reference, got) ≤ `bound` (named by the caller as `bound_name`).
pub fn check_nmse(
    label: &str,
    what: &str,
    reference: &[f32],
    got: &[f32],
    bound: f64,
    bound_name: &str,
) -> Check {
    check_finite(label, what, got)?;
    let e = nmse(reference, got);
    if e <= bound {
        Ok(())
    } else {
        Err(format!(
            "{label}: {what}: NMSE {e:.3e} exceeds {bound_name} = {bound:.3e}"
        ))
    }
}

/// Bit-for-bit equality of two f32 slices (NaN/Inf in `got` first).
pub fn check_bits_equal(label: &str, what: &str, expected: &[f32], got: &[f32]) -> Check {
    check_finite(label, what, got)?;
    if expected.len() != got.len() {
        return Err(format!(
            "{label}: {what}: length {} != expected {}",
            got.len(),
            expected.len()
        ));
    }
    match expected
        .iter()
        .zip(got)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        Some(i) => Err(format!(
            "{label}: {what}[{i}] = {:e} ({:#010x}), expected {:e} ({:#010x}) bit-exact",
            got[i],
            got[i].to_bits(),
            expected[i],
            expected[i].to_bits()
        )),
        None => Ok(()),
    }
}

/// Equality of two word slices.
pub fn check_words_equal(label: &str, what: &str, expected: &[u32], got: &[u32]) -> Check {
    if expected.len() != got.len() {
        return Err(format!(
            "{label}: {what}: length {} != expected {}",
            got.len(),
            expected.len()
        ));
    }
    match expected.iter().zip(got).position(|(a, b)| a != b) {
        Some(i) => Err(format!(
            "{label}: {what}[{i}] = {:#010x}, expected {:#010x}",
            got[i], expected[i]
        )),
        None => Ok(()),
    }
}

/// One segment's quantizer as the tests see it: the record and the full scale and
/// zero-point arrays it indexes.
#[derive(Clone, Copy)]
pub struct Quantizer<'a> {
    pub seg: AffineSegment,
    pub scale: &'a [f32],
    pub zero: &'a [i32],
}

impl Quantizer<'_> {
    /// (scale, zero point) of element `i` of the segment.
    pub fn params(&self, i: usize) -> (f32, i32) {
        let g = self.seg.group_of(i);
        (self.scale[g], self.zero[g])
    }
}

thread_local! {
    /// Codes this test (thread) allowed to differ at near-ties, reported by [`finish`].
    static TIES_ALLOWED: Cell<usize> = const { Cell::new(0) };
}

/// Adds `n` to the count of codes this test allowed to differ at near-ties (reported by
/// [`finish`]), for comparisons written outside the harness.
pub fn note_ties(n: usize) {
    TIES_ALLOWED.with(|t| t.set(t.get() + n));
}

/// Whether `t` lies within [`TIE_REL_TOL`] (relative to max(|t|, 1)) of a rounding boundary
/// k + ½, computed in f64.
pub fn near_half(t: f64) -> bool {
    let frac = t - t.floor();
    (frac - 0.5).abs() <= TIE_REL_TOL * t.abs().max(1.0)
}

/// Whether x/s lies within [`TIE_REL_TOL`] of a rounding boundary, computed in f64.
pub fn near_tie(x: f32, s: f32) -> bool {
    let t = f64::from(x) / f64::from(s);
    let frac = t - t.floor();
    (frac - 0.5).abs() <= TIE_REL_TOL * t.abs().max(1.0)
}

/// Codes `got` and `expected` (integer codes q, per element of `x`) must be equal, except
/// where x/s is near a tie, where they may differ by exactly one.
fn codes_agree(x: f32, s: f32, expected: i64, got: i64) -> bool {
    expected == got || ((expected - got).abs() == 1 && near_tie(x, s))
}

/// Level 1 for fake-quantized values: `got` equals `expected` bit for bit, except near a tie
/// where its code (q − z = x̂/s) may differ by one and it must then be exactly that grid
/// point's value (q − z)·s.
pub fn check_fake_quant_codes(
    label: &str,
    q: &Quantizer<'_>,
    x: &[f32],
    expected: &[f32],
    got: &[f32],
) -> Check {
    check_finite(label, "output", got)?;
    let mut ties = 0usize;
    for i in 0..x.len() {
        if expected[i].to_bits() == got[i].to_bits() {
            continue;
        }
        let (s, z) = q.params(i);
        let ke = (f64::from(expected[i]) / f64::from(s)).round() as i64;
        let kg = (f64::from(got[i]) / f64::from(s)).round() as i64;
        let on_grid = (kg as f32 * s).to_bits() == got[i].to_bits();
        if !(on_grid && codes_agree(x[i], s, ke, kg)) {
            return Err(format!(
                "{label}: element {i}: x = {:e}, s = {:e}, z = {z}, x/s = {:.9}: got {:e} \
                 (code {}{}), expected {:e} (code {}); codes may differ by one only within \
                 TIE_REL_TOL = {TIE_REL_TOL:e} of a rounding boundary",
                x[i],
                s,
                f64::from(x[i]) / f64::from(s),
                got[i],
                kg + i64::from(z),
                if on_grid { "" } else { ", not a grid point" },
                expected[i],
                ke + i64::from(z)
            ));
        }
        ties += 1;
    }
    TIES_ALLOWED.with(|t| t.set(t.get() + ties));
    Ok(())
}

/// Level 1 for packed codes: unpacked codes equal except near ties (by one), and the unused
/// high bits of the last word zero.
pub fn check_packed_codes(
    label: &str,
    q: &Quantizer<'_>,
    x: &[f32],
    expected: &[u32],
    got: &[u32],
) -> Check {
    use wgquant::format::pack;
    let bits = q.seg.bits;
    let n = x.len();
    let words = pack::packed_words(n, bits);
    if got.len() != words || expected.len() != words {
        return Err(format!(
            "{label}: {} / {} words, expected {words}",
            got.len(),
            expected.len()
        ));
    }
    let ce = pack::unpack(expected, n, bits);
    let cg = pack::unpack(got, n, bits);
    let mut ties = 0usize;
    for i in 0..n {
        if ce[i] == cg[i] {
            continue;
        }
        let (s, z) = q.params(i);
        if !codes_agree(x[i], s, i64::from(ce[i]), i64::from(cg[i])) {
            return Err(format!(
                "{label}: code {i}: x = {:e}, s = {:e}, z = {z}, x/s = {:.9}: got stored code \
                 {} (word {} = {:#010x}), expected {} (word {:#010x}); codes may differ by \
                 one only within TIE_REL_TOL = {TIE_REL_TOL:e} of a rounding boundary",
                x[i],
                s,
                f64::from(x[i]) / f64::from(s),
                cg[i],
                i * bits as usize / 32,
                got[i * bits as usize / 32],
                ce[i],
                expected[i * bits as usize / 32]
            ));
        }
        ties += 1;
    }
    TIES_ALLOWED.with(|t| t.set(t.get() + ties));
    let used = (n * bits as usize) % 32;
    if words > 0 && used != 0 && got[words - 1] >> used != 0 {
        return Err(format!(
            "{label}: unused high bits of the last word are not zero: {:#010x} ({used} bits used)",
            got[words - 1]
        ));
    }
    Ok(())
}

/// Level 2: every x̂ is within s/2 of its x wherever x lies inside the clip range
/// [(qmin − z − ½)·s, (qmax − z + ½)·s] (widened by the tie tolerance: min/max calibration
/// puts a symmetric group's largest element exactly on its edge); at least one element must be
/// inside.
pub fn check_within_half_step(label: &str, q: &Quantizer<'_>, x: &[f32], xhat: &[f32]) -> Check {
    check_finite(label, "dequantized", xhat)?;
    let mut inside = 0usize;
    for i in 0..x.len() {
        let (s, z) = q.params(i);
        let t = f64::from(x[i]) / f64::from(s);
        let tol = TIE_REL_TOL * t.abs().max(1.0);
        let lo = f64::from(q.seg.qmin) - f64::from(z) - 0.5 - tol;
        let hi = f64::from(q.seg.qmax) - f64::from(z) + 0.5 + tol;
        if t < lo || t > hi {
            continue;
        }
        inside += 1;
        let err = (f64::from(xhat[i]) - f64::from(x[i])).abs();
        let mag = f64::from(x[i].abs().max(xhat[i].abs()));
        let bound =
            f64::from(s) * (0.5 + tol) + HALF_STEP_SLACK_EPS * f64::from(f32::EPSILON) * mag;
        if err > bound {
            return Err(format!(
                "{label}: element {i}: |x̂ − x| = |{:e} − {:e}| = {err:e} exceeds s/2 = {:e} \
                 (+ slack, bound {bound:e}) inside the clip range (s = {s:e}, z = {z})",
                xhat[i],
                x[i],
                f64::from(s) / 2.0
            ));
        }
    }
    if !x.is_empty() && inside == 0 {
        return Err(format!(
            "{label}: no element lies inside the clip range; the check would be vacuous"
        ));
    }
    Ok(())
}

/// Level 3: whole-tensor NMSE(x, x̂) at most [`QUANT_NOISE_RATIO_MAX`] times the rounding-noise
/// model Σ s²/12 / Σ x² (meaningful for random data of at least [`LEVEL3_MIN_LEN`] elements
/// in groups of at least [`LEVEL3_MIN_GROUP`]; [`check_quantizer_levels`] decides).
pub fn check_quant_nmse(label: &str, q: &Quantizer<'_>, x: &[f32], xhat: &[f32]) -> Check {
    let (mut noise, mut sig) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let s = f64::from(q.params(i).0);
        noise += s * s / 12.0;
        sig += f64::from(v) * f64::from(v);
    }
    let model = noise / sig;
    check_nmse(
        label,
        "dequantized vs input",
        x,
        xhat,
        QUANT_NOISE_RATIO_MAX * model,
        &format!("QUANT_NOISE_RATIO_MAX ({QUANT_NOISE_RATIO_MAX}) × model {model:.3e}"),
    )
}

/// Levels 2 and 3 of a quantizer's output `xhat` for input `x`.
pub fn check_quantizer_levels(
    label: &str,
    q: &Quantizer<'_>,
    x: &[f32],
    xhat: &[f32],
    dist: Dist,
) -> Check {
    check_within_half_step(label, q, x, xhat)?;
    if dist.is_random() && x.len() >= LEVEL3_MIN_LEN && q.seg.group_len as usize >= LEVEL3_MIN_GROUP
    {
        check_quant_nmse(label, q, x, xhat)?;
    }
    Ok(())
}

/// Panics with every collected failure (the first 25 in full) if there are any.
pub fn finish(test: &str, cases: usize, failures: Vec<String>) {
    if failures.is_empty() {
        let ties = match TIES_ALLOWED.with(Cell::get) {
            0 => String::new(),
            t => format!(" ({t} codes differed by one at near-ties)"),
        };
        say(&format!("{test}: {cases} cases passed{ties}"));
        return;
    }
    let shown: Vec<&str> = failures.iter().take(25).map(String::as_str).collect();
    panic!(
        "{test}: {} of {cases} cases failed:\n  {}{}",
        failures.len(),
        shown.join("\n  "),
        if failures.len() > shown.len() {
            format!("\n  … and {} more", failures.len() - shown.len())
        } else {
            String::new()
        }
    );
}
