//! Calibration on the GPU against its CPU twins (ALGORITHMS.md §1): per-group ranges with
//! non-finite counts (`minmax`) and their running average (`ema`), (scale, zero point) from a
//! range (`affine_params`), percentile clipping from histograms (`histogram`), the MSE-optimal
//! clip search (`clip_search`), and the uniform method chaining them (`quant::uniform`), on
//! fresh seeded data of awkward sizes and group lengths, with poisoned outputs guarded by
//! sentinels, a named bound with its reason beside every tolerance and `OP(params, seed)` in
//! every failure (harness: tests/common/mod.rs). The percentile is also checked against an
//! exact sort, the clip search against the unclipped range, and every GPU result against
//! itself across runs and across work limits.

mod common;

use std::time::Instant;

use common::*;
use rand::RngExt;
use wgquant::Error;
use wgquant::affine::{AffineMode, AffineScheme, GroupRange, dequantize_code, quantize_code};
use wgquant::cpu;
use wgquant::format::{Encoding, Granularity, QuantizedTensor};
use wgquant::gpu::{self, Context, ElemType, GpuTensor, WorkLimits};
use wgquant::quant::Backend;
use wgquant::quant::uniform::{self, Calibration, RunningRange, UniformConfig};

// ---------------------------------------------------------------------------------------------
// Bounds, each with its reason
// ---------------------------------------------------------------------------------------------

/// f32 machine epsilon (2⁻²³) in f64, the unit of the relative bounds below.
const EPS: f64 = f32::EPSILON as f64;

/// WGSL's `x / y` is accurate to 2.5 ULP for |y| in [2⁻¹²⁶, 2¹²⁶] (WGSL spec, §"Floating
/// Point Accuracy", the `x / y` row); a GPU scale is one such division of the same f32
/// operands the CPU divides correctly rounded (and the divisor, a level count, is in range).
const DIV_ULPS: f64 = 2.5;

/// GPU and CPU scales of the same range, compared as f32 values: the GPU's lies within
/// [`DIV_ULPS`] of the exact quotient and the CPU's within ½ ULP, so they are at most 3
/// representable steps apart.
const SCALE_STEPS: u32 = 3;

/// Running averages: per update the GPU may contract `s + m·(b − s)` into one fma (WGSL lets
/// an implementation fuse a·b + c), which skips the rounding of the product (≤ ½ ULP of
/// |m·(b − s)| ≤ 2M, i.e. ≤ ε·M) and moves the final rounding (≤ ε·M), M being the largest
/// magnitude the group's ranges reach; earlier differences are damped by (1 − m). So after
/// B updates the two may differ by 2·B·ε·M.
const EMA_EPS_PER_UPDATE: f64 = 2.0;

/// Histogram bin edges: the kernels bin with `floor((v − lo)·(bins/(hi − lo)))` but place edges
/// at `lo + k·((hi − lo)/bins)`; the two disagree by a few roundings of (hi − lo) and one of
/// the addition (≤ ε·(|lo| + |hi|) each), and the GPU's divisions add 2.5 ULP each. 8 ε of
/// |lo| + |hi| covers all of them with margin and is far below any bin width tested.
const EDGE_SLACK_EPS: f64 = 8.0;

/// Percentile ranks: both backends form P/100 (and 1 − P/100) and its product with the count n
/// in f32, so the rank ceil(p·n) may be off the exact one where p·n is within a few roundings
/// of an integer: P/100 is rounded once (≤ ε/2 absolute), 1 − P/100 once more, and the product
/// once (≤ ε/2 of n). 4·ε·n covers them; the exact check accepts every rank in that window.
const RANK_SLACK_EPS: f64 = 4.0;

/// Clip search: the GPU sums squared errors in f32 (a lane adds up to 32 terms, a 256-lane tree
/// and a per-tile sum follow: relative error ≲ 300 ε ≈ 4·10⁻⁵ in the worst case, far less
/// typically) and forms its candidate ratios with a 2.5-ULP division, so where two candidates'
/// errors are that close it may pick the other one. The error of its choice (recomputed in f64)
/// must be within this relative distance of the CPU's choice, which minimises the f64 error.
const CLIP_ERR_REL_TOL: f64 = 1e-4;

/// Absolute floor of squared-error comparisons, per element, in units of (ε·max|x|)²: a
/// perfectly representable value still carries the rounding of x̂ = (q − z)·s (½ ULP), so
/// errors this small are noise on either backend.
const ERR_FLOOR_EPS: f64 = 1.0;

/// A GPU clip search result is the candidate r·(K − k)/K: the ratio is a 2.5-ULP division and
/// the product one more rounding, so it lies within 4 ε (relative) of the exact candidate.
const CANDIDATE_EPS: f64 = 4.0;

/// The uniform method with percentile calibration, groups whose GPU range differs from the
/// CPU's (a value within a few ULP of a bin edge, binned by the GPU's 2.5-ULP division, moves
/// a clip end by one bin; that much is checked exactly on the scale): their achieved squared
/// error may differ, since error power grows with s² and the clipped tails shift by one bin.
/// A sanity bound, not a derived one: a one-bin move in the ≥ 128-bin histograms of the groups
/// where such a move is likely changes s by a few percent, so the error power by well under
/// 25 %; a wrong bin, rank or range costs far more.
const PERCENTILE_MSE_REL_TOL: f64 = 0.25;

/// Minimum finite elements in a group for the "clipping helps at 2 bits on Laplace data" sanity
/// check: the optimal 2-bit clip of a Laplace(b) variable is ≈ 2.8 b (Banner et al. 2019)
/// while the maximum of 64 draws is ≈ b·ln 64 ≈ 4.2 b, so the best ratio is well below 1.
const CLIP_HELPS_MIN_GROUP: usize = 64;

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// What a case's tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// Finite values of a harness distribution.
    Plain(Dist),
    /// A distribution with a few NaN, +Inf and −Inf sprinkled in and, with three or more
    /// groups, one group holding no finite value at all.
    NonFinite(Dist),
    /// Only +0.0 and −0.0.
    SignedZeros,
}

impl Fill {
    fn name(self) -> String {
        match self {
            Fill::Plain(d) => d.name().to_string(),
            Fill::NonFinite(d) => format!("{}+nonfinite", d.name()),
            Fill::SignedZeros => "signed_zeros".to_string(),
        }
    }

    /// Every fill, in the order cases rotate through them.
    const ALL: [Fill; 7] = [
        Fill::Plain(Dist::Normal),
        Fill::NonFinite(Dist::Laplace),
        Fill::Plain(Dist::Outliers),
        Fill::Plain(Dist::Constant),
        Fill::Plain(Dist::Laplace),
        Fill::NonFinite(Dist::Normal),
        Fill::SignedZeros,
    ];

    /// Fills with finite values only (for the uniform method, which rejects the others).
    const FINITE: [Fill; 4] = [
        Fill::Plain(Dist::Normal),
        Fill::Plain(Dist::Laplace),
        Fill::Plain(Dist::Outliers),
        Fill::Plain(Dist::Constant),
    ];
}

/// `n` values of `fill` in groups of `group_len`, from `seed`.
fn make(fill: Fill, n: usize, group_len: usize, seed: u64) -> Vec<f32> {
    match fill {
        Fill::Plain(d) => generate(d, n, seed),
        Fill::SignedZeros => {
            let mut r = rng(seed);
            (0..n)
                .map(|_| if r.random::<bool>() { 0.0 } else { -0.0 })
                .collect()
        }
        Fill::NonFinite(d) => {
            let mut x = generate(d, n, seed);
            let mut r = rng(seed ^ 0xBAD);
            let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            for k in 0..(n / 500).max(3) {
                let i = r.random_range(0..n);
                x[i] = bad[k % 3];
            }
            let groups = n / group_len;
            if groups >= 3 {
                let g = groups / 2;
                for (k, v) in x[g * group_len..(g + 1) * group_len].iter_mut().enumerate() {
                    *v = bad[k % 3];
                }
            }
            x
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel cases
// ---------------------------------------------------------------------------------------------

/// Group length past one 8192-element tile, so ranges and clip errors take a second pass.
const MULTI: usize = 3 * 8192 + 5;

/// 2^20 + 3.
const LARGE: usize = (1 << 20) + 3;

/// A kernel-level case: `n` elements in groups of `group_len` filled with `fill`.
#[derive(Clone, Copy, Debug)]
struct KCase {
    n: usize,
    group_len: usize,
    fill: Fill,
}

impl KCase {
    fn groups(&self) -> usize {
        self.n / self.group_len
    }

    fn key(&self) -> String {
        let group = if self.group_len == self.n {
            "tensor".to_string()
        } else {
            self.group_len.to_string()
        };
        format!("n={}, group={group}, data={}", self.n, self.fill.name())
    }

    fn seed(&self) -> u64 {
        seed_for(&self.key())
    }

    /// `OP(params, extra, seed=…)`.
    fn label(&self, op: &str, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { ", " };
        format!("{op}({}{sep}{extra}, seed={:#x})", self.key(), self.seed())
    }

    fn data(&self) -> Vec<f32> {
        make(self.fill, self.n, self.group_len, self.seed())
    }

    /// Poisoned words before a guarded input: 0, 3 or 7, so the values start on and off
    /// every alignment.
    fn in_lead(&self) -> usize {
        [0, 3, 7][(self.seed() % 3) as usize]
    }

    /// Poisoned words before a guarded 16-byte range array: 0, 4 or 20 (ranges must start on
    /// a 16-byte boundary; 16 and 80 bytes are off the devices' 32- or 256-byte alignment).
    fn range_lead(&self) -> usize {
        [0, 4, 20][((self.seed() >> 8) % 3) as usize]
    }
}

/// (n, group length): per tensor, per channel with odd rows, groups of 32/64/128, one full
/// tile, a tile and one element, groups past one tile (multi-pass), and many tiny groups.
fn kernel_shapes() -> Vec<(usize, usize)> {
    vec![
        (1, 1),
        (3, 3),
        (3, 1),
        (255, 255),
        (255, 17),
        (257, 257),
        (257, 1),
        (1757, 1757),
        (1757, 251),
        (1757, 7),
        (61 * 32, 32),
        (27 * 64, 64),
        (13 * 128, 128),
        (8192, 8192),
        (2 * 8193, 8193),
        (3 * MULTI, MULTI),
        (20_011 * 3, 3),
    ]
}

/// `per_shape` cases for every kernel shape, the fill rotating through `fills`.
fn kernel_cases(per_shape: usize, fills: &[Fill]) -> Vec<KCase> {
    let mut out = Vec::new();
    let mut k = 0;
    for (n, group_len) in kernel_shapes() {
        for _ in 0..per_shape {
            out.push(KCase {
                n,
                group_len,
                fill: fills[k % fills.len()],
            });
            k += 1;
        }
    }
    out
}

/// Chunks of ~4 KiB (a few tiles or groups each) with grids folded at 7 workgroups per
/// dimension. A whole tile must fit a binding, so only groups of up to ~1000 elements run here.
const TINY_WINDOWS: WorkLimits = WorkLimits {
    max_binding_bytes: 4096 + 52,
    max_workgroups_per_dim: 7,
};

/// Chunks of 64 KiB + 36 B (two 8192-element tiles) with grids folded at 7 per dimension.
const FOLDED_GRID: WorkLimits = WorkLimits {
    max_binding_bytes: 65536 + 36,
    max_workgroups_per_dim: 7,
};

/// The GPU context, warmed up, or the end of the test (skipped without an adapter, unless
/// `CI`).
macro_rules! gpu_or_skip {
    () => {
        match common::gpu() {
            Some(ctx) => {
                warm_up(ctx);
                ctx
            }
            None => return,
        }
    };
}

/// Runs every calibration kernel once on a small input (one group of a tile and one element,
/// so the second reduction pass and clip_select run too) before any test uses the device, one
/// thread at a time: wgpu's GL backend serialises all GL calls behind one context lock that
/// panics after 6 s, and a cold Mesa shader cache compiles each kernel under that lock, which
/// on a loaded two-core machine can take seconds per kernel if the tests race to it.
fn warm_up(ctx: &Context) {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let run = || -> wgquant::Result<()> {
            let data = generate(Dist::Normal, 8193, 1);
            let x = GpuTensor::from_f32(ctx, &data, &[1, 8193])?;
            let scheme = AffineScheme::new(4, AffineMode::Asymmetric)?;
            for calibration in [
                Calibration::MinMax,
                Calibration::Percentile(99.0),
                Calibration::Mse,
            ] {
                let cfg = UniformConfig {
                    scheme,
                    granularity: Granularity::Channel,
                    calibration,
                };
                let y = GpuTensor::zeros(ctx, &[1, 8193], ElemType::F32)?;
                let state = gpu::minmax::ranges_tensor(ctx, 1)?;
                ctx.run("warm-up", |enc| {
                    uniform::encode_quantize(ctx, enc, &x, &cfg)?;
                    let p = uniform::encode_fake_quantize(ctx, enc, &x, &y, &cfg)?;
                    gpu::minmax::encode_ema(ctx, enc, &p.ranges, &state, true, 0.5)
                })?;
            }
            Ok(())
        };
        if let Err(e) = run() {
            say(&format!("calibration warm-up failed: {e}"));
        }
    });
}

/// `finish` with the test's wall time in its name line.
fn finish_timed(test: &str, start: Instant, cases: usize, failures: Vec<String>) {
    let name = format!("{test} [{:.2} s]", start.elapsed().as_secs_f64());
    finish(&name, cases, failures);
}

// ---------------------------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------------------------

/// `ranges` uploaded `lead` words into a poisoned buffer with sentinels after them.
fn upload_ranges(ctx: &Context, lead: usize, ranges: &[GroupRange]) -> wgquant::Result<Guarded> {
    let g = Guarded::new(ctx, lead, ranges.len() * 4, ElemType::U32)?;
    g.view
        .write(ctx, bytemuck::cast_slice::<GroupRange, u32>(ranges))?;
    Ok(g)
}

/// A poisoned output of `groups` ranges, `lead` words into its buffer.
fn ranges_output(ctx: &Context, lead: usize, groups: usize) -> wgquant::Result<Guarded> {
    Guarded::new(ctx, lead, groups * 4, ElemType::U32)
}

/// Checks the poison around (and inside) a range output and returns its ranges.
fn read_ranges(ctx: &Context, label: &str, out: &Guarded) -> Result<Vec<GroupRange>, String> {
    let words = out.check(ctx, label, &[0..out.len], None)?;
    Ok(bytemuck::pod_collect_to_vec(&words))
}

/// Equal f32 values, NaN equal to NaN (-0.0 equals 0.0).
fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Ranges equal by value (min and max are exact; the sign of a zero is not part of the
/// contract), counts equal, padding zero.
fn check_ranges_equal(
    label: &str,
    what: &str,
    expected: &[GroupRange],
    got: &[GroupRange],
) -> Check {
    if expected.len() != got.len() {
        return Err(format!(
            "{label}: {what}: {} ranges, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (g, (e, r)) in expected.iter().zip(got).enumerate() {
        if !(r.lo == e.lo && r.hi == e.hi && r.nonfinite == e.nonfinite && r._pad == 0) {
            return Err(format!(
                "{label}: {what} group {g}: got [{:e}, {:e}] nonfinite {} pad {:#x}, expected \
                 [{:e}, {:e}] nonfinite {}",
                r.lo, r.hi, r.nonfinite, r._pad, e.lo, e.hi, e.nonfinite
            ));
        }
    }
    Ok(())
}

/// Distance in representable f32 steps between two finite values (+0 and −0 are one value).
fn steps(a: f32, b: f32) -> u32 {
    let key = |v: f32| {
        let b = v.to_bits() as i64;
        if b < 0x8000_0000 { b } else { 0x8000_0000 - b }
    };
    (key(a) - key(b)).unsigned_abs().min(u64::from(u32::MAX)) as u32
}

/// The spacing of f32 values at the magnitude of `q` (a normal, finite value).
fn ulp_at(q: f64) -> f64 {
    let e = q.abs().log2().floor();
    2f64.powf(e - 23.0)
}

// ---------------------------------------------------------------------------------------------
// 1. minmax: per-group ranges
// ---------------------------------------------------------------------------------------------

/// Runs minmax on one case on `ctx` (guarded input and output) and compares with the CPU twin;
/// with `convenience`, also the submit-and-wait form `group_ranges`.
fn minmax_case(ctx: &Context, case: &KCase, tag: &str, convenience: bool) -> Check {
    let label = case.label("minmax", tag);
    let x = case.data();
    let expected =
        cpu::minmax::group_ranges(&x, case.group_len).map_err(|e| format!("{label}: CPU: {e}"))?;
    let err = |e: wgquant::Error| format!("{label}: {e}");
    let input = Guarded::with_data(ctx, case.in_lead(), &x).map_err(err)?;
    let out = ranges_output(ctx, case.range_lead(), case.groups()).map_err(err)?;
    ctx.run("minmax", |enc| {
        gpu::minmax::encode(ctx, enc, &input.view, case.group_len, &out.view)
    })
    .map_err(err)?;
    let got = read_ranges(ctx, &label, &out)?;
    check_ranges_equal(&label, "encode", &expected, &got)?;
    // The input is read-only: still intact, poison around it untouched.
    let after = input.check(ctx, &format!("{label} input"), &[0..x.len()], None)?;
    if after.iter().zip(&x).any(|(a, v)| *a != v.to_bits()) {
        return Err(format!("{label}: the input was modified"));
    }
    if convenience {
        let got = gpu::minmax::group_ranges(ctx, &input.view, case.group_len).map_err(err)?;
        check_ranges_equal(&label, "group_ranges", &expected, &got)?;
    }
    Ok(())
}

#[test]
fn minmax_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut cases = kernel_cases(3, &Fill::ALL);
    cases.push(KCase {
        n: LARGE,
        group_len: LARGE,
        fill: Fill::NonFinite(Dist::Outliers),
    });
    let mut failures = Vec::new();
    for c in &cases {
        failures.extend(minmax_case(ctx, c, "", true).err());
    }
    finish_timed("minmax_matches_cpu", start, cases.len(), failures);
}

/// Lowered work limits: tiles chunked across many ~4 KiB binding windows and 64 KiB ones,
/// grids folded at 7 workgroups per dimension, the multi-pass reduction chunked too.
#[test]
fn minmax_matches_cpu_under_lowered_limits() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut count = 0;
    for limits in [TINY_WINDOWS, FOLDED_GRID] {
        let small = ctx.with_work_limits(limits);
        let tag = format!(
            "limits={}B/{}wg",
            limits.max_binding_bytes, limits.max_workgroups_per_dim
        );
        let mut cases: Vec<KCase> = kernel_cases(1, &Fill::ALL)
            .into_iter()
            .filter(|c| limits.max_binding_bytes > 4096 + 52 || c.group_len <= 257)
            .collect();
        if limits == FOLDED_GRID {
            cases.push(KCase {
                n: LARGE,
                group_len: LARGE,
                fill: Fill::Plain(Dist::Laplace),
            });
        }
        for c in &cases {
            count += 1;
            failures.extend(minmax_case(&small, c, &tag, false).err());
        }
    }
    finish_timed(
        "minmax_matches_cpu_under_lowered_limits",
        start,
        count,
        failures,
    );
}

/// Groups of one tile and one element (8193) under a binding just large enough for one tile.
/// The first pass leaves two partial ranges per group; the second pass reads them, 16 bytes
/// each, and must bind them in windows that fit the binding. 1100 groups (9.0 M elements):
/// their 2200 partials take 35,200 bytes, more than one binding.
#[test]
fn minmax_second_pass_windows_fit_the_binding() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
    let limits = WorkLimits {
        max_binding_bytes: 32768 + align + 52,
        max_workgroups_per_dim: 65535,
    };
    let small = ctx.with_work_limits(limits);
    let case = KCase {
        n: 1100 * 8193,
        group_len: 8193,
        fill: Fill::Plain(Dist::Normal),
    };
    let tag = format!("limits={}B", limits.max_binding_bytes);
    let failures: Vec<String> = minmax_case(&small, &case, &tag, false)
        .err()
        .into_iter()
        .collect();
    finish_timed(
        "minmax_second_pass_windows_fit_the_binding",
        start,
        1,
        failures,
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Running average of ranges
// ---------------------------------------------------------------------------------------------

/// Random finite ranges of `groups` groups at magnitudes spread over 10^±6, with counts.
fn random_ranges(groups: usize, seed: u64) -> Vec<GroupRange> {
    let mut r = rng(seed);
    (0..groups)
        .map(|_| {
            let mag = 10f32.powi(r.random_range(-6..=6));
            let a = (r.random::<f32>() - 0.7) * mag;
            let b = a + r.random::<f32>() * mag;
            GroupRange {
                lo: a,
                hi: b,
                nonfinite: r.random_range(0..3),
                _pad: 0,
            }
        })
        .collect()
}

/// Bound of the running average after `updates` updates for a group whose values reach `m`.
fn ema_bound(m: f32, updates: usize) -> f64 {
    EMA_EPS_PER_UPDATE * updates as f64 * EPS * f64::from(m)
}

/// GPU and CPU running ranges within [`ema_bound`]; counts equal.
fn check_ema(
    label: &str,
    expected: &[GroupRange],
    got: &[GroupRange],
    magnitude: &[f32],
    updates: usize,
) -> Check {
    if expected.len() != got.len() {
        return Err(format!(
            "{label}: {} ranges, expected {}",
            got.len(),
            expected.len()
        ));
    }
    for (g, (e, r)) in expected.iter().zip(got).enumerate() {
        let bound = ema_bound(magnitude[g], updates);
        let close = |a: f32, b: f32| (f64::from(a) - f64::from(b)).abs() <= bound;
        if !(close(r.lo, e.lo) && close(r.hi, e.hi) && r.nonfinite == e.nonfinite) {
            return Err(format!(
                "{label}: group {g}: got [{:e}, {:e}] nonfinite {}, expected [{:e}, {:e}] \
                 nonfinite {}; bound EMA_EPS_PER_UPDATE·{updates}·ε·{:e} = {bound:e}",
                r.lo, r.hi, r.nonfinite, e.lo, e.hi, e.nonfinite, magnitude[g]
            ));
        }
    }
    Ok(())
}

#[test]
fn ema_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let align = ctx.limits().min_storage_buffer_offset_alignment as usize / 4;
    // (groups, momenta of the updates after the first, work limits)
    let cases: [(usize, &[f32], Option<WorkLimits>); 5] = [
        (1, &[0.5, 0.01, 1.0, 0.3], None),
        (3, &[0.1; 5], None),
        (257, &[0.01, 0.9, 0.25], None),
        (1757, &[0.3, 0.3, 0.3, 0.3, 0.3, 0.3], None),
        // 4000 groups: 16 workgroups folded into a 7×3 grid whose last row is partly idle.
        (4000, &[0.05, 0.7, 0.2], Some(FOLDED_GRID)),
    ];
    let mut failures = Vec::new();
    for (groups, momenta, limits) in cases {
        let ctx = match limits {
            Some(l) => ctx.with_work_limits(l),
            None => ctx.clone(),
        };
        let key = format!("groups={groups}, momenta={momenta:?}, limits={limits:?}");
        let seed = seed_for(&key);
        let label = format!("ema({key}, seed={seed:#x})");
        let run = || -> Check {
            let err = |e: wgquant::Error| format!("{label}: {e}");
            // The state must start on a binding boundary; poison before and after it, and in it:
            // the first update must write every group.
            let state = ranges_output(&ctx, align, groups).map_err(err)?;
            let mut cpu_state = vec![GroupRange::EMPTY; groups];
            let mut magnitude = vec![0f32; groups];
            for (u, m) in std::iter::once(1.0)
                .chain(momenta.iter().copied())
                .enumerate()
            {
                let batch = random_ranges(groups, seed.wrapping_add(u as u64));
                for (g, b) in batch.iter().enumerate() {
                    magnitude[g] = magnitude[g].max(b.lo.abs()).max(b.hi.abs());
                }
                let first = u == 0;
                let t = GpuTensor::from_u32(&ctx, bytemuck::cast_slice(&batch), &[groups * 4])
                    .map_err(err)?;
                ctx.run("ema", |enc| {
                    gpu::minmax::encode_ema(&ctx, enc, &t, &state.view, first, m)
                })
                .map_err(err)?;
                cpu::minmax::ema_update(&batch, &mut cpu_state, first, m)
                    .map_err(|e| format!("{label}: CPU: {e}"))?;
                let got = read_ranges(&ctx, &format!("{label} after update {u}"), &state)?;
                check_ema(
                    &format!("{label} after update {u} (first={first}, m={m})"),
                    &cpu_state,
                    &got,
                    &magnitude,
                    u,
                )?;
            }
            Ok(())
        };
        failures.extend(run().err());
    }
    finish_timed("ema_matches_cpu", start, cases.len(), failures);
}

// ---------------------------------------------------------------------------------------------
// 3. affine_params: (scale, zero point) from ranges
// ---------------------------------------------------------------------------------------------

/// Ranges for a scheme: random ones at magnitudes 10^±30 (both signs, one-sided), the empty
/// range, zero ranges, constants, and ranges putting the quotient at the edges of the normal
/// f32 range (near f32::MIN_POSITIVE and near f32::MAX) and beyond them.
fn param_ranges(scheme: &AffineScheme, seed: u64) -> Vec<GroupRange> {
    let mut r = rng(seed);
    let range = |lo: f32, hi: f32| GroupRange {
        lo,
        hi,
        nonfinite: 0,
        _pad: 0,
    };
    let mut out = vec![
        GroupRange::EMPTY,
        range(0.0, 0.0),
        range(-0.0, 0.0),
        range(-0.0, -0.0),
        range(1.5, 1.5),
        range(-2.75, -2.75),
        range(0.25, 7.0),
        range(-7.0, -0.25),
        range(-f32::MIN_POSITIVE, f32::MIN_POSITIVE),
        range(0.0, 1e-40),
        range(-1e-40, 3e-41),
        range(-3e-38, 2e-38),
        range(-3e38, 3e38),
        range(-f32::MAX, 0.0),
        range(0.0, f32::MAX),
        range(-f32::MAX, f32::MAX),
        range(f32::MIN_POSITIVE, f32::MAX),
    ];
    // Quotients at the edges: dividend = levels·edge·(1 + jε) (halved levels when symmetric).
    let levels = (scheme.qmax() - scheme.qmin()) as f32;
    let divisor = if scheme.is_symmetric() {
        levels * 0.5
    } else {
        levels
    };
    for edge in [f32::MIN_POSITIVE, f32::MAX] {
        let a = divisor as f64 * edge as f64;
        for j in -3i32..=3 {
            let v = (a * (1.0 + f64::from(j) * EPS)) as f32;
            if v.is_finite() {
                out.push(range(-v, 0.0));
                out.push(range(0.0, v));
                out.push(if scheme.is_symmetric() {
                    range(-v * 0.5, v)
                } else {
                    range(-v * 0.25, v * 0.75)
                });
            }
        }
    }
    for _ in 0..300 {
        let mag = 10f32.powi(r.random_range(-30..=30));
        let a = (r.random::<f32>() - 0.6) * mag;
        let b = a + r.random::<f32>() * mag;
        out.push(GroupRange {
            lo: a,
            hi: b,
            nonfinite: r.random_range(0..5),
            _pad: 0,
        });
    }
    out
}

/// The exact quotient each backend rounds into a scale (the f32 dividend as the kernels form
/// it, over the level count), in f64.
fn exact_scale(scheme: &AffineScheme, r: &GroupRange) -> f64 {
    let levels = (scheme.qmax() - scheme.qmin()) as f32;
    if scheme.is_symmetric() {
        let a = r.lo.abs().max(r.hi.abs());
        f64::from(a) / f64::from(levels * 0.5)
    } else {
        let (lo, hi) = (r.lo.min(0.0), r.hi.max(0.0));
        if hi > f32::MAX / 2.0 || lo < -f32::MAX / 2.0 {
            // A span wider than f32 holds: in f64, as the backends divide before subtracting.
            (f64::from(hi) - f64::from(lo)) / f64::from(levels)
        } else {
            // The f32 span, as both backends compute it.
            f64::from(hi - lo) / f64::from(levels)
        }
    }
}

/// z = clamp(round(qmin − l/s)) in f64 with l the range's lower end widened to 0.
fn exact_zero(scheme: &AffineScheme, r: &GroupRange, s: f32) -> (f64, i32) {
    let t = f64::from(scheme.qmin()) - f64::from(r.lo.min(0.0)) / f64::from(s);
    let z = t
        .round_ties_even()
        .clamp(f64::from(scheme.qmin()), f64::from(scheme.qmax()));
    (t, z as i32)
}

/// One group's GPU and CPU parameters against the exact quotient and each other.
fn check_group_params(
    label: &str,
    scheme: &AffineScheme,
    g: usize,
    r: &GroupRange,
    (sg, zg): (f32, i32),
    (sc, zc): (f32, i32),
) -> Check {
    let q = exact_scale(scheme, r);
    let min = f64::from(f32::MIN_POSITIVE);
    let max = f64::from(f32::MAX);
    let what = || {
        format!(
            "{label}: group {g} [{:e}, {:e}] (exact quotient {q:e}): GPU (s={sg:e}, z={zg}), \
             CPU (s={sc:e}, z={zc})",
            r.lo, r.hi
        )
    };
    // Scales are capped at f32::MAX / 2^⌈log2 reach⌉ (reach: the largest |q − z|), so that
    // every decoded code is finite; where the quotient is clearly past the cap, both backends
    // give the cap exactly.
    let reach = if scheme.is_symmetric() {
        -scheme.qmin()
    } else {
        scheme.qmax() - scheme.qmin()
    };
    let cap = f32::MAX / (reach as u32).next_power_of_two() as f32;
    let capped = q > f64::from(cap) * (1.0 + 4.0 * EPS) && q < max * (1.0 - 4.0 * EPS);
    if capped {
        if sc != cap || sg != cap {
            return Err(format!("{}: a scale is not the cap {cap:e}", what()));
        }
    } else if !scheme.is_symmetric() && (r.hi > f32::MAX / 2.0 || r.lo < -f32::MAX / 2.0) && q < max
    {
        // A range wider than half of f32 is divided before subtracting: two roundings.
        if (f64::from(sc) - q).abs() > DIV_ULPS * ulp_at(q.clamp(min, max)) {
            return Err(format!(
                "{}: CPU scale not within DIV_ULPS of the quotient",
                what()
            ));
        }
    } else {
        // CPU: the correctly rounded quotient (f64 then f32 rounds correctly: 53 ≥ 2·24 + 2),
        // or 1.
        let rounded = q as f32;
        let cpu_expected = if rounded >= f32::MIN_POSITIVE && rounded.is_finite() {
            rounded.min(cap)
        } else {
            1.0
        };
        if sc.to_bits() != cpu_expected.to_bits() {
            return Err(format!("{}: CPU scale is not {cpu_expected:e}", what()));
        }
    }
    // GPU: within DIV_ULPS of the exact quotient where that is safely normal, 1 where it is
    // safely not, either within DIV_ULPS (+1 step of margin) of the edges.
    let inside = q.is_finite() && q >= min * (1.0 + 4.0 * EPS) && q <= max * (1.0 - 4.0 * EPS);
    let outside = !q.is_finite() || q < min * (1.0 - 4.0 * EPS) || q > max * (1.0 + 4.0 * EPS);
    let close = q.is_finite()
        && q > 0.0
        && (f64::from(sg) - q).abs() <= DIV_ULPS * ulp_at(q.clamp(min, max));
    let ok = if q > f64::from(cap) * (1.0 - 4.0 * EPS) && q < max * (1.0 - 4.0 * EPS) {
        // At or near the cap: the cap, or the quotient just below it.
        sg == cap || close
    } else if inside {
        close
    } else if outside {
        sg == 1.0
    } else {
        close || sg == 1.0
    };
    if !ok {
        return Err(format!(
            "{}: GPU scale not within DIV_ULPS = {DIV_ULPS} of the exact quotient (or 1 \
             outside the normal range)",
            what()
        ));
    }
    // Zero points: each backend's equals the f64 formula with its own scale, or is one off
    // where that value is within TIE_REL_TOL of a .5 tie; with one scale agreeing, with each
    // other likewise.
    if scheme.is_symmetric() {
        if zg != 0 || zc != 0 {
            return Err(format!("{}: symmetric zero point is not 0", what()));
        }
        return Ok(());
    }
    for (who, s, z) in [("GPU", sg, zg), ("CPU", sc, zc)] {
        let (t, z_ref) = exact_zero(scheme, r, s);
        if !(scheme.qmin()..=scheme.qmax()).contains(&z)
            || !(z == z_ref || ((z - z_ref).abs() == 1 && near_half(t)))
        {
            return Err(format!(
                "{}: {who} zero point {z}, f64 formula gives {z_ref} (qmin − l/s = {t:.9})",
                what()
            ));
        }
    }
    if steps(sg, sc) <= SCALE_STEPS && zg != zc {
        let (t, _) = exact_zero(scheme, r, sg);
        if (zg - zc).abs() != 1 || !near_half(t) {
            return Err(format!(
                "{}: zero points differ away from a tie (qmin − l/s_gpu = {t:.9}; TIE_REL_TOL \
                 = {TIE_REL_TOL:e})",
                what()
            ));
        }
        note_ties(1);
    }
    Ok(())
}

#[test]
fn affine_params_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut count = 0;
    for mode in MODES {
        for bits in 1..=16u32 {
            let Ok(scheme) = AffineScheme::new(bits, mode) else {
                if !(mode == AffineMode::SymmetricRestricted && bits == 1) {
                    failures.push(format!("AffineScheme::new({bits}, {mode:?}) refused"));
                }
                continue;
            };
            count += 1;
            let key = format!("bits={bits}, mode={}", mode_name(mode));
            let seed = seed_for(&key);
            let label = format!("affine_params({key}, seed={seed:#x})");
            let ranges = param_ranges(&scheme, seed);
            let groups = ranges.len();
            let run = || -> Check {
                let err = |e: wgquant::Error| format!("{label}: {e}");
                let input = upload_ranges(ctx, 4 * (bits as usize % 3), &ranges).map_err(err)?;
                let scale = Guarded::new(ctx, 5, groups, ElemType::F32).map_err(err)?;
                let zero =
                    Guarded::new(ctx, 3 + bits as usize, groups, ElemType::I32).map_err(err)?;
                ctx.run("affine_params", |enc| {
                    gpu::affine_params::encode(
                        ctx,
                        enc,
                        &scheme,
                        &input.view,
                        &scale.view,
                        &zero.view,
                    )
                })
                .map_err(err)?;
                let sg = as_f32(&scale.check(ctx, &label, &[0..groups], None)?);
                let zg: Vec<i32> =
                    bytemuck::pod_collect_to_vec(&zero.check(ctx, &label, &[0..groups], None)?);
                let (sc, zc) = cpu::affine_params::affine_params(&scheme, &ranges);
                for (g, r) in ranges.iter().enumerate() {
                    check_group_params(&label, &scheme, g, r, (sg[g], zg[g]), (sc[g], zc[g]))?;
                }
                Ok(())
            };
            failures.extend(run().err());
        }
    }
    // Restricted needs two bits; 0 and 17 bits are no scheme at all.
    for (bits, mode) in [
        (1, AffineMode::SymmetricRestricted),
        (0, AffineMode::Symmetric),
        (17, AffineMode::Asymmetric),
    ] {
        count += 1;
        if AffineScheme::new(bits, mode).is_ok() {
            failures.push(format!("AffineScheme::new({bits}, {mode:?}) was accepted"));
        }
    }
    // Many groups under lowered limits: the launcher chunks groups across binding windows.
    count += 1;
    let small = ctx.with_work_limits(TINY_WINDOWS);
    let scheme = AffineScheme::new(4, AffineMode::Asymmetric).unwrap();
    let ranges = random_ranges(3001, seed_for("affine_params chunked"));
    let label = "affine_params(groups=3001, bits=4, mode=asym, limits=4148B/7wg)";
    let run = || -> Check {
        let err = |e: wgquant::Error| format!("{label}: {e}");
        let input = upload_ranges(&small, 4, &ranges).map_err(err)?;
        let scale = Guarded::new(&small, 7, ranges.len(), ElemType::F32).map_err(err)?;
        let zero = Guarded::new(&small, 1, ranges.len(), ElemType::I32).map_err(err)?;
        small
            .run("affine_params", |enc| {
                gpu::affine_params::encode(
                    &small,
                    enc,
                    &scheme,
                    &input.view,
                    &scale.view,
                    &zero.view,
                )
            })
            .map_err(err)?;
        let sg = as_f32(&scale.check(&small, label, &[0..ranges.len()], None)?);
        let zg: Vec<i32> =
            bytemuck::pod_collect_to_vec(&zero.check(&small, label, &[0..ranges.len()], None)?);
        let (sc, zc) = cpu::affine_params::affine_params(&scheme, &ranges);
        for (g, r) in ranges.iter().enumerate() {
            check_group_params(label, &scheme, g, r, (sg[g], zg[g]), (sc[g], zc[g]))?;
        }
        Ok(())
    };
    failures.extend(run().err());
    finish_timed("affine_params_matches_cpu", start, count, failures);
}

// ---------------------------------------------------------------------------------------------
// 4. Percentile clipping from histograms
// ---------------------------------------------------------------------------------------------

/// Percentiles of every histogram case.
const PERCENTILES: [f32; 4] = [99.0, 99.9, 99.99, 100.0];

/// The histogram's span of a group (mirrors the kernels' definition).
fn span_of(r: &GroupRange, symmetric: bool) -> (f32, f32) {
    if symmetric {
        (0.0, r.lo.abs().max(r.hi.abs()))
    } else {
        (r.lo, r.hi)
    }
}

/// Bin width and edge slack of a group.
fn bin_width(r: &GroupRange, symmetric: bool, bins: u32) -> (f64, f64) {
    let (a, b) = span_of(r, symmetric);
    let w = f64::from((b - a) / bins as f32);
    let slack = EDGE_SLACK_EPS * EPS * (f64::from(a.abs()) + f64::from(b.abs()));
    (w, slack)
}

/// The 1-based ranks the kernels may use for quantile `p` of `n` values (see
/// [`RANK_SLACK_EPS`]), clamped to [1, n].
fn rank_window(p: f64, n: usize) -> (usize, usize) {
    let x = p * n as f64;
    let d = RANK_SLACK_EPS * EPS * n as f64;
    let k = |v: f64| (v.ceil().max(1.0) as usize).min(n);
    (k(x - d), k(x + d))
}

/// A clipped range against the exact, sort-based percentile of the group's finite values
/// (|x| when symmetric): the upper end is the upper edge of the bin holding rank ceil(P·n), so
/// it lies at or above that value and within one bin width of it; the lower end, likewise,
/// at or below the (100 − P)-th and within one bin width.
#[allow(clippy::too_many_arguments)]
fn check_against_sort(
    label: &str,
    g: usize,
    who: &str,
    sorted: &[f32],
    r: &GroupRange,
    symmetric: bool,
    bins: u32,
    p: f32,
    out: &GroupRange,
) -> Check {
    let n = sorted.len();
    if n == 0 {
        return if out.lo == r.lo && out.hi == r.hi {
            Ok(())
        } else {
            Err(format!(
                "{label}: {who} group {g} has no finite value but its range changed"
            ))
        };
    }
    let (w, slack) = bin_width(r, symmetric, bins);
    let ph = f64::from(p) / 100.0;
    let (k0, k1) = rank_window(ph, n);
    let (v0, v1) = (f64::from(sorted[k0 - 1]), f64::from(sorted[k1 - 1]));
    let t = f64::from(out.hi);
    if !(t >= v0 - slack && t <= v1 + w + slack) {
        return Err(format!(
            "{label}: {who} group {g}: upper end {t:e} is not within [v, v + w] of the exact \
             percentile v = {v0:e}..{v1:e} (ranks {k0}..{k1} of {n}), w = {w:e}, slack \
             EDGE_SLACK_EPS = {slack:e}"
        ));
    }
    if symmetric {
        if out.lo != -out.hi {
            return Err(format!(
                "{label}: {who} group {g}: symmetric range [{:e}, {:e}] is not ±T",
                out.lo, out.hi
            ));
        }
        return Ok(());
    }
    let (k0, k1) = rank_window(1.0 - ph, n);
    let (v0, v1) = (f64::from(sorted[k0 - 1]), f64::from(sorted[k1 - 1]));
    let t = f64::from(out.lo);
    if !(t >= v0 - w - slack && t <= v1 + slack) {
        return Err(format!(
            "{label}: {who} group {g}: lower end {t:e} is not within [v − w, v] of the exact \
             percentile v = {v0:e}..{v1:e} (ranks {k0}..{k1} of {n}), w = {w:e}, slack {slack:e}"
        ));
    }
    Ok(())
}

/// The GPU's clipped ranges against the CPU twin's: ends equal or within one bin width (bin
/// edges may differ by ULPs, so a count may sit one bin over), counts equal.
fn check_clipped_close(
    label: &str,
    ranges: &[GroupRange],
    symmetric: bool,
    bins: u32,
    expected: &[GroupRange],
    got: &[GroupRange],
) -> Check {
    for (g, ((r, e), o)) in ranges.iter().zip(expected).zip(got).enumerate() {
        let (w, slack) = bin_width(r, symmetric, bins);
        let near = |a: f32, b: f32| same(a, b) || (f64::from(a) - f64::from(b)).abs() <= w + slack;
        if !(near(o.lo, e.lo) && near(o.hi, e.hi) && o.nonfinite == e.nonfinite && o._pad == 0) {
            return Err(format!(
                "{label}: group {g}: GPU [{:e}, {:e}] nonfinite {} pad {:#x}, CPU [{:e}, {:e}] \
                 nonfinite {}: ends more than one bin ({w:e}) apart",
                o.lo, o.hi, o.nonfinite, o._pad, e.lo, e.hi, e.nonfinite
            ));
        }
    }
    Ok(())
}

/// Runs percentile clipping of one case for every (symmetric, P) on the GPU (from the CPU's
/// ranges, so only the histogram kernels are under test) and on the CPU twin, and compares
/// them with each other and with the exact percentile. Returns the number of runs.
fn histogram_case(ctx: &Context, case: &KCase, percentiles: &[f32]) -> Result<usize, String> {
    let x = case.data();
    let gl = case.group_len;
    let label = case.label("histogram", "");
    let err = |e: wgquant::Error| format!("{label}: {e}");
    let ranges = cpu::minmax::group_ranges(&x, gl).map_err(err)?;
    let bins = gpu::histogram::bins_for(gl);
    let input = Guarded::with_data(ctx, case.in_lead(), &x).map_err(err)?;
    let rin = upload_ranges(ctx, case.range_lead(), &ranges).map_err(err)?;
    let mut runs = 0;
    for symmetric in [true, false] {
        let sorted: Vec<Vec<f32>> = x
            .chunks(gl)
            .map(|g| {
                let mut v: Vec<f32> = g
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|&v| if symmetric { v.abs() } else { v })
                    .collect();
                v.sort_by(f32::total_cmp);
                v
            })
            .collect();
        let hist =
            cpu::histogram::group_histograms(&x, gl, &ranges, bins, symmetric).map_err(err)?;
        for &p in percentiles {
            runs += 1;
            let label = case.label("histogram", &format!("sym={symmetric}, P={p}, bins={bins}"));
            let err = |e: wgquant::Error| format!("{label}: {e}");
            let out = ranges_output(ctx, 4 + case.range_lead(), case.groups()).map_err(err)?;
            ctx.run("histogram", |enc| {
                gpu::histogram::encode(
                    ctx,
                    enc,
                    &input.view,
                    gl,
                    &rin.view,
                    p,
                    symmetric,
                    &out.view,
                )
            })
            .map_err(err)?;
            let got = read_ranges(ctx, &label, &out)?;
            let expected = cpu::histogram::percentile_select(
                &hist,
                &ranges,
                bins,
                symmetric,
                gpu::histogram::quantiles(p),
            );
            check_clipped_close(&label, &ranges, symmetric, bins, &expected, &got)?;
            for (g, r) in ranges.iter().enumerate() {
                for (who, o) in [("GPU", &got[g]), ("CPU", &expected[g])] {
                    check_against_sort(&label, g, who, &sorted[g], r, symmetric, bins, p, o)?;
                }
            }
        }
    }
    Ok(runs)
}

#[test]
fn histogram_percentile_matches_cpu_and_sort() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut cases = kernel_cases(2, &Fill::ALL);
    cases.push(KCase {
        n: LARGE,
        group_len: LARGE,
        fill: Fill::NonFinite(Dist::Outliers),
    });
    let mut failures = Vec::new();
    let mut count = 0;
    for c in &cases {
        let ps: &[f32] = if c.n == LARGE { &[99.99] } else { &PERCENTILES };
        match histogram_case(ctx, c, ps) {
            Ok(runs) => count += runs,
            Err(e) => {
                count += 2 * ps.len();
                failures.push(e);
            }
        }
    }
    finish_timed(
        "histogram_percentile_matches_cpu_and_sort",
        start,
        count,
        failures,
    );
}

/// Groups of 2 and 3 under ~4 KiB bindings: a chunk of ~780 values spans ~260–390 groups,
/// whose 16-byte ranges (and clipped outputs) must fit a binding as well as the values and
/// histograms do. With the device's own 128 MiB bindings the same arithmetic binds more than
/// 8,388,608 ranges at once (an error) for per-channel percentile calibration of any tensor
/// with rows of 1–3 values and more rows than that (checked once by hand: 9·10⁶ groups of 1).
#[test]
fn histogram_range_windows_fit_the_binding() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let small = ctx.with_work_limits(TINY_WINDOWS);
    let mut failures = Vec::new();
    let mut count = 0;
    for (n, group_len) in [(3 * 1999, 3), (2 * 1999, 2), (50 * 128, 128)] {
        let case = KCase {
            n,
            group_len,
            fill: Fill::Plain(Dist::Laplace),
        };
        match histogram_case(&small, &case, &[99.9]) {
            Ok(runs) => count += runs,
            Err(e) => {
                count += 2;
                failures.push(format!("[limits=4148B/7wg] {e}"));
            }
        }
    }
    finish_timed(
        "histogram_range_windows_fit_the_binding",
        start,
        count,
        failures,
    );
}

// ---------------------------------------------------------------------------------------------
// 5. MSE-optimal clip search
// ---------------------------------------------------------------------------------------------

/// Squared fake-quantization error of the finite values of `x` under the range `r`, the
/// difference taken in f64.
fn fq_error(x: &[f32], r: &GroupRange, scheme: &AffineScheme) -> f64 {
    let (s, z) = scheme.params_from_range(r.lo, r.hi);
    let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
    x.iter()
        .filter(|v| v.is_finite())
        .map(|&v| {
            let d =
                f64::from(v) - f64::from(dequantize_code(quantize_code(v, s, z, qmin, qmax), s, z));
            d * d
        })
        .sum()
}

/// The floor of squared-error comparisons of a group ([`ERR_FLOOR_EPS`]).
fn err_floor(x: &[f32]) -> f64 {
    let m = x
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |a, v| a.max(v.abs()));
    let e = ERR_FLOOR_EPS * EPS * f64::from(m);
    x.len() as f64 * e * e
}

/// Which candidate k (ratio (K − k)/K) a clip result is, within [`CANDIDATE_EPS`].
fn candidate_of(r: &GroupRange, out: &GroupRange, k_total: u32) -> Option<u32> {
    if !(r.lo <= r.hi) {
        // No finite value: the range passes through.
        return (out.lo == r.lo && out.hi == r.hi).then_some(0);
    }
    let end = |v: &GroupRange| if r.hi.abs() >= r.lo.abs() { v.hi } else { v.lo };
    let (full, got) = (f64::from(end(r)), f64::from(end(out)));
    if full == 0.0 {
        return (got == 0.0 && out.lo == 0.0 && out.hi == 0.0).then_some(0);
    }
    let k = (f64::from(k_total) * (1.0 - got / full)).round();
    if !(0.0..f64::from(k_total)).contains(&k) {
        return None;
    }
    let ratio = (f64::from(k_total) - k) / f64::from(k_total);
    let close = |a: f32, b: f32| {
        let e = f64::from(b) * ratio;
        (f64::from(a) - e).abs() <= CANDIDATE_EPS * EPS * e.abs()
    };
    (close(out.lo, r.lo) && close(out.hi, r.hi)).then_some(k as u32)
}

/// Runs the clip search of one case on the GPU (from the CPU's ranges) and the CPU twin for
/// one scheme and compares the errors of their choices.
fn clip_case(ctx: &Context, case: &KCase, scheme: &AffineScheme) -> Check {
    let k_total = gpu::clip_search::DEFAULT_CANDIDATES;
    let label = case.label(
        "clip_search",
        &format!(
            "bits={}, mode={}, K={k_total}",
            scheme.bits,
            mode_name(scheme.mode)
        ),
    );
    let x = case.data();
    let gl = case.group_len;
    let err = |e: wgquant::Error| format!("{label}: {e}");
    let ranges = cpu::minmax::group_ranges(&x, gl).map_err(err)?;
    let expected = cpu::clip_search::clip_search(&x, gl, &ranges, scheme, k_total).map_err(err)?;
    let input = Guarded::with_data(ctx, case.in_lead(), &x).map_err(err)?;
    // Input and output ranges must share their offset alignment.
    let lead = case.range_lead();
    let rin = upload_ranges(ctx, lead, &ranges).map_err(err)?;
    let out = ranges_output(ctx, lead, case.groups()).map_err(err)?;
    ctx.run("clip_search", |enc| {
        gpu::clip_search::encode(
            ctx,
            enc,
            &input.view,
            gl,
            &rin.view,
            scheme,
            k_total,
            &out.view,
        )
    })
    .map_err(err)?;
    let got = read_ranges(ctx, &label, &out)?;
    for (g, (r, (e, o))) in ranges.iter().zip(expected.iter().zip(&got)).enumerate() {
        let xs = &x[g * gl..(g + 1) * gl];
        let Some(k) = candidate_of(r, o, k_total) else {
            return Err(format!(
                "{label}: group {g}: GPU range [{:e}, {:e}] is no candidate of [{:e}, {:e}] \
                 (CANDIDATE_EPS = {CANDIDATE_EPS})",
                o.lo, o.hi, r.lo, r.hi
            ));
        };
        if o.nonfinite != r.nonfinite || o._pad != 0 {
            return Err(format!(
                "{label}: group {g}: count or padding not carried over"
            ));
        }
        let (eg, ec, e1) = (
            fq_error(xs, o, scheme),
            fq_error(xs, e, scheme),
            fq_error(xs, r, scheme),
        );
        let floor = err_floor(xs);
        let within = |a: f64, b: f64| a <= b * (1.0 + CLIP_ERR_REL_TOL) + floor;
        if !within(eg, ec) || !within(ec, eg) {
            return Err(format!(
                "{label}: group {g}: error of the GPU's choice (k={k}, [{:e}, {:e}]) {eg:e} vs \
                 the CPU's ([{:e}, {:e}]) {ec:e}: beyond CLIP_ERR_REL_TOL = {CLIP_ERR_REL_TOL:e} \
                 (floor {floor:e})",
                o.lo, o.hi, e.lo, e.hi
            ));
        }
        if !within(eg, e1) || !within(ec, e1) {
            return Err(format!(
                "{label}: group {g}: a chosen range errs more than the unclipped one: GPU \
                 {eg:e}, CPU {ec:e}, unclipped {e1:e}"
            ));
        }
        let finite = xs.iter().filter(|v| v.is_finite()).count();
        if scheme.bits == 2
            && case.fill == Fill::Plain(Dist::Laplace)
            && finite >= CLIP_HELPS_MIN_GROUP
        {
            let ratio = |v: &GroupRange| f64::from(v.hi) / f64::from(r.hi);
            if !(k > 0 && ratio(e) < 1.0) {
                return Err(format!(
                    "{label}: group {g}: no clipping chosen at 2 bits on Laplace data (GPU k = \
                     {k}, CPU ratio {}): the search looks like a no-op",
                    ratio(e)
                ));
            }
        }
    }
    Ok(())
}

/// Shapes of the clip search: every kernel shape but the biggest tiny-group one, each with
/// two fills (one of them Laplace, for the 2-bit sanity check).
fn clip_cases() -> Vec<KCase> {
    let mut out = Vec::new();
    let fills = [
        Fill::Plain(Dist::Laplace),
        Fill::NonFinite(Dist::Normal),
        Fill::Plain(Dist::Outliers),
        Fill::Plain(Dist::Constant),
        Fill::SignedZeros,
    ];
    for (k, (n, group_len)) in kernel_shapes().into_iter().enumerate() {
        let n = if group_len == 3 { 3 * 1999 } else { n };
        out.push(KCase {
            n,
            group_len,
            fill: Fill::Plain(Dist::Laplace),
        });
        out.push(KCase {
            n,
            group_len,
            fill: fills[1 + k % (fills.len() - 1)],
        });
    }
    out
}

#[test]
fn clip_search_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut count = 0;
    for c in clip_cases() {
        for mode in [AffineMode::Symmetric, AffineMode::Asymmetric] {
            for bits in [2u32, 3, 4, 8] {
                count += 1;
                let scheme = AffineScheme::new(bits, mode).unwrap();
                failures.extend(clip_case(ctx, &c, &scheme).err());
            }
        }
    }
    // One large per-tensor case: 129 tiles per group summed by clip_select.
    count += 1;
    let big = KCase {
        n: LARGE,
        group_len: LARGE,
        fill: Fill::Plain(Dist::Laplace),
    };
    let scheme = AffineScheme::new(2, AffineMode::Asymmetric).unwrap();
    failures.extend(clip_case(ctx, &big, &scheme).err());
    finish_timed("clip_search_matches_cpu", start, count, failures);
}

// ---------------------------------------------------------------------------------------------
// 6. The uniform method on both backends
// ---------------------------------------------------------------------------------------------

/// A case of the uniform method.
#[derive(Clone, Debug)]
struct UCase {
    shape: Vec<usize>,
    granularity: Granularity,
    calibration: Calibration,
    scheme: AffineScheme,
    fill: Fill,
}

impl UCase {
    fn n(&self) -> usize {
        self.shape.iter().product()
    }

    fn cfg(&self) -> UniformConfig {
        UniformConfig {
            scheme: self.scheme,
            granularity: self.granularity,
            calibration: self.calibration,
        }
    }

    fn key(&self) -> String {
        format!(
            "shape={:?}, gran={}, calib={}, bits={}, mode={}, data={}",
            self.shape,
            self.granularity.label(),
            self.calibration.label(),
            self.scheme.bits,
            mode_name(self.scheme.mode),
            self.fill.name()
        )
    }

    fn seed(&self) -> u64 {
        seed_for(&self.key())
    }

    fn label(&self, op: &str) -> String {
        format!("{op}({}, seed={:#x})", self.key(), self.seed())
    }
}

/// Shapes and granularities: per tensor, per channel with odd rows and rows of one, groups of
/// 32/64/128 (one 3-D), and rows past one tile (multi-pass ranges and clip errors).
fn uniform_shapes() -> Vec<(Vec<usize>, Granularity)> {
    use Granularity::*;
    vec![
        (vec![1], Tensor),
        (vec![3, 1], Channel),
        (vec![257], Tensor),
        (vec![7, 251], Channel),
        (vec![1757, 1], Channel),
        (vec![9, 96], Group(32)),
        (vec![5, 192], Group(64)),
        (vec![3, 5, 128], Group(64)),
        (vec![3, 384], Group(128)),
        (vec![1, 1757], Tensor),
        (vec![2, MULTI], Channel),
    ]
}

fn uniform_cases() -> Vec<UCase> {
    let calibrations = [
        Calibration::MinMax,
        Calibration::AbsMax,
        Calibration::Percentile(99.9),
        Calibration::Mse,
    ];
    let bits = [4u32, 2, 8, 3, 5, 1, 16, 6];
    let mut out = Vec::new();
    let mut k = 0;
    for (shape, granularity) in uniform_shapes() {
        for calibration in calibrations {
            for mode in MODES {
                if calibration == Calibration::AbsMax && mode == AffineMode::Asymmetric {
                    continue;
                }
                let b = bits[k % bits.len()];
                k += 1;
                let Ok(scheme) = AffineScheme::new(b, mode) else {
                    continue;
                };
                let calibration = match (calibration, &shape[..]) {
                    (Calibration::Percentile(_), [2, MULTI]) => Calibration::Percentile(99.99),
                    _ => calibration,
                };
                out.push(UCase {
                    shape: shape.clone(),
                    granularity,
                    calibration,
                    scheme,
                    fill: Fill::FINITE[k % Fill::FINITE.len()],
                });
            }
        }
    }
    out
}

/// (scale, zero point) arrays of an affine tensor.
fn affine_of(qt: &QuantizedTensor) -> (&[f32], &[i32]) {
    match &qt.encoding {
        Encoding::Affine {
            scale, zero_point, ..
        } => (scale, zero_point),
        Encoding::Codebook { .. } => (&[], &[]),
    }
}

/// Signed codes q = stored + qmin.
fn signed_codes(qt: &QuantizedTensor, scheme: &AffineScheme) -> Vec<i64> {
    uniform::unpack_codes(qt)
        .into_iter()
        .map(|u| i64::from(u) + i64::from(scheme.qmin()))
        .collect()
}

/// Compares GPU and CPU results of the uniform method group by group. A group whose
/// parameters agree (scales within SCALE_STEPS, zero points equal or one apart at a tie) must
/// have equal codes except near ties (relative to the GPU's scale; with shifted zero points,
/// codes compared after removing them, clamped ones exempt). Groups whose parameters differ
/// are allowed only where the chosen range may legitimately differ (percentile, MSE); their
/// achieved error is compared instead.
fn compare_uniform(
    label: &str,
    case: &UCase,
    x: &[f32],
    (qt_g, fake_g): (&QuantizedTensor, &[f32]),
    (qt_c, fake_c): (&QuantizedTensor, &[f32]),
) -> Check {
    let cfg = case.cfg();
    let scheme = &case.scheme;
    let gl = cfg
        .group_len(&case.shape)
        .map_err(|e| format!("{label}: {e}"))?;
    let clipped = uniform::calibrate_cpu(x, gl, &cfg).map_err(|e| format!("{label}: {e}"))?;
    let raw = cpu::minmax::group_ranges(x, gl).map_err(|e| format!("{label}: {e}"))?;
    let (sg, zg) = affine_of(qt_g);
    let (sc, zc) = affine_of(qt_c);
    let groups = x.len() / gl;
    if qt_g.shape != qt_c.shape
        || qt_g.bits != qt_c.bits
        || sg.len() != groups
        || sc.len() != groups
    {
        return Err(format!(
            "{label}: GPU tensor {:?}/{} bits/{} scales vs CPU {:?}/{} bits/{} scales, {groups} groups",
            qt_g.shape,
            qt_g.bits,
            sg.len(),
            qt_c.shape,
            qt_c.bits,
            sc.len()
        ));
    }
    let may_differ = matches!(
        case.calibration,
        Calibration::Percentile(_) | Calibration::Mse
    );
    let (qg, qc) = (signed_codes(qt_g, scheme), signed_codes(qt_c, scheme));
    let (qmin, qmax) = (i64::from(scheme.qmin()), i64::from(scheme.qmax()));
    let mut ties = 0;
    let (mut err_g, mut err_c, mut floor, mut differing) = (0f64, 0f64, 0f64, 0usize);
    for g in 0..groups {
        let r = &clipped[g];
        let (t, _) = exact_zero(scheme, r, sg[g]);
        let z_tie = zg[g] != zc[g];
        let agree = steps(sg[g], sc[g]) <= SCALE_STEPS
            && (!z_tie || ((zg[g] - zc[g]).abs() == 1 && near_half(t)));
        let range = g * gl..(g + 1) * gl;
        if !agree {
            if !may_differ {
                return Err(format!(
                    "{label}: group {g}: GPU (s={:e}, z={}) vs CPU (s={:e}, z={}): scales more \
                     than SCALE_STEPS = {SCALE_STEPS} apart or zero points apart away from a tie",
                    sg[g], zg[g], sc[g], zc[g]
                ));
            }
            differing += 1;
            if let Calibration::Percentile(_) = case.calibration {
                check_percentile_scale(label, case, g, gl, &raw[g], r, sg[g])?;
            }
            for i in range {
                let dg = f64::from(x[i]) - f64::from(fake_g[i]);
                let dc = f64::from(x[i]) - f64::from(fake_c[i]);
                err_g += dg * dg;
                err_c += dc * dc;
            }
            floor += err_floor(&x[g * gl..(g + 1) * gl]);
            continue;
        }
        let (dzg, dzc) = (i64::from(zg[g]), i64::from(zc[g]));
        for i in range {
            let (a, b) = (qg[i], qc[i]);
            if a == b && !z_tie {
                continue;
            }
            let clamped = [a, b].iter().any(|&q| q == qmin || q == qmax);
            let (ka, kb) = (a - dzg, b - dzc);
            if z_tie && (ka == kb || clamped) {
                continue;
            }
            if (ka - kb).abs() == 1 && near_tie(x[i], sg[g]) {
                ties += 1;
                continue;
            }
            return Err(format!(
                "{label}: element {i} (group {g}): x = {:e}, x/s = {:.9}: GPU code {a} (s={:e}, \
                 z={}), CPU code {b} (s={:e}, z={}); codes may differ by one only within \
                 TIE_REL_TOL = {TIE_REL_TOL:e} of a rounding boundary",
                x[i],
                f64::from(x[i]) / f64::from(sg[g]),
                sg[g],
                zg[g],
                sc[g],
                zc[g]
            ));
        }
    }
    note_ties(ties);
    if differing > 0 {
        let tol = match case.calibration {
            Calibration::Mse => CLIP_ERR_REL_TOL,
            _ => PERCENTILE_MSE_REL_TOL,
        };
        if err_g > err_c * (1.0 + tol) + floor {
            return Err(format!(
                "{label}: {differing} of {groups} groups chose other ranges; their squared \
                 error on the GPU {err_g:e} exceeds the CPU's {err_c:e} by more than {tol:e} \
                 (relative)"
            ));
        }
        say(&format!(
            "{label}: note: {differing} of {groups} groups chose other ranges (errors GPU {err_g:e}, CPU {err_c:e})"
        ));
    }
    Ok(())
}

/// A percentile-calibrated group whose GPU scale differs from the CPU's: the range the GPU's
/// scale encodes (±s·(qmax − qmin)/2, or a span of s·(qmax − qmin)) must be within one bin
/// width of the CPU's clipped range per clipped end, as the kernel test guarantees.
fn check_percentile_scale(
    label: &str,
    case: &UCase,
    g: usize,
    gl: usize,
    raw: &GroupRange,
    clipped: &GroupRange,
    sg: f32,
) -> Check {
    let scheme = &case.scheme;
    let symmetric = scheme.is_symmetric();
    let bins = gpu::histogram::bins_for(gl);
    let (w, slack) = bin_width(raw, symmetric, bins);
    let levels = f64::from(scheme.qmax() - scheme.qmin());
    let (got, want, ends) = if symmetric {
        let t = f64::from(clipped.lo.abs().max(clipped.hi.abs()));
        (f64::from(sg) * levels / 2.0, t, 1.0)
    } else {
        let span = f64::from(clipped.hi.max(0.0)) - f64::from(clipped.lo.min(0.0));
        (f64::from(sg) * levels, span, 2.0)
    };
    let bound = ends * (w + slack) + (DIV_ULPS + 1.0) * EPS * want;
    if (got - want).abs() <= bound {
        Ok(())
    } else {
        Err(format!(
            "{label}: group {g}: the GPU's scale {sg:e} encodes a clip range of {got:e}, the \
             CPU's clipped range is {want:e}: more than {ends} bin width(s) ({w:e}) apart"
        ))
    }
}

/// Runs one uniform case on both backends: quantize, fake-quantize, dequantize, the
/// device-resident in-place form, and the cross checks between them.
fn uniform_case(ctx: &Context, case: &UCase) -> Check {
    let label = case.label("uniform");
    let cfg = case.cfg();
    let x = make(case.fill, case.n(), 1, case.seed());
    let gpu_b = Backend::Gpu(ctx);
    let cpu_b = Backend::Cpu;
    let e = |who: &'static str| {
        let l = &label;
        move |e: wgquant::Error| format!("{l}: {who}: {e}")
    };
    let qt_g = uniform::quantize(&gpu_b, "w", &x, &case.shape, &cfg).map_err(e("GPU quantize"))?;
    let qt_c = uniform::quantize(&cpu_b, "w", &x, &case.shape, &cfg).map_err(e("CPU quantize"))?;
    let fake_g =
        uniform::fake_quantize(&gpu_b, "w", &x, &case.shape, &cfg).map_err(e("GPU fake"))?;
    let fake_c =
        uniform::fake_quantize(&cpu_b, "w", &x, &case.shape, &cfg).map_err(e("CPU fake"))?;
    // dequantize(quantize(x)) is fake_quantize(x) bit for bit on each backend, and the CPU
    // decoding the GPU's codes gives the GPU's values (the GPU's arithmetic is the CPU's).
    let deq_g = uniform::dequantize(&gpu_b, &qt_g).map_err(e("GPU dequantize"))?;
    let deq_c = uniform::dequantize(&cpu_b, &qt_c).map_err(e("CPU dequantize"))?;
    let deq_gc = uniform::dequantize(&cpu_b, &qt_g).map_err(e("CPU dequantize of GPU codes"))?;
    check_bits_equal(
        &label,
        "GPU dequantize(quantize) vs fake_quantize",
        &fake_g,
        &deq_g,
    )?;
    check_bits_equal(
        &label,
        "CPU dequantize(quantize) vs fake_quantize",
        &fake_c,
        &deq_c,
    )?;
    check_bits_equal(
        &label,
        "CPU dequantize of the GPU's codes vs GPU",
        &deq_g,
        &deq_gc,
    )?;
    compare_uniform(&label, case, &x, (&qt_g, &fake_g), (&qt_c, &fake_c))?;
    // The device-resident path, in place on a guarded tensor off any alignment, with its
    // parameters left on the device.
    let err = e("GPU in place");
    let t = Guarded::with_data(ctx, (case.seed() % 5) as usize + 1, &x).map_err(&err)?;
    let view = t.view.reshape(&case.shape).map_err(&err)?;
    let params = ctx
        .run("fake_quantize in place", |enc| {
            uniform::encode_fake_quantize(ctx, enc, &view, &view, &cfg)
        })
        .map_err(&err)?;
    let inplace = as_f32(&t.check(ctx, &label, &[0..x.len()], None)?);
    check_bits_equal(
        &label,
        "encode_fake_quantize in place vs fake_quantize",
        &fake_g,
        &inplace,
    )?;
    let (sg, zg) = affine_of(&qt_g);
    let dev_scale = params.scale.to_f32(ctx).map_err(&err)?;
    let dev_zero = params.zero.to_i32(ctx).map_err(&err)?;
    check_bits_equal(&label, "device scales vs quantize's", sg, &dev_scale)?;
    if dev_zero != zg {
        return Err(format!(
            "{label}: device zero points differ from quantize's"
        ));
    }
    let gl = cfg.group_len(&case.shape).map_err(&err)?;
    let raw: Vec<GroupRange> = params.ranges.download(ctx).map_err(&err)?;
    let expected = cpu::minmax::group_ranges(&x, gl).map_err(&err)?;
    check_ranges_equal(&label, "device raw ranges", &expected, &raw)?;
    Ok(())
}

#[test]
fn uniform_gpu_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let cases = uniform_cases();
    let mut failures = Vec::new();
    for c in &cases {
        failures.extend(uniform_case(ctx, c).err());
    }
    finish_timed("uniform_gpu_matches_cpu", start, cases.len(), failures);
}

/// AbsMax with an asymmetric scheme and bad percentiles are errors; NaN and ±Inf give
/// `Error::NonFinite` naming the tensor and the first bad index, on both backends.
#[test]
fn uniform_bad_inputs_are_errors() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut count = 0;
    let gpu_b = Backend::Gpu(ctx);
    let shape = [4usize, 64];
    let good = generate(Dist::Normal, 256, seed_for("uniform bad inputs"));
    let cfg = |calibration, mode| UniformConfig {
        scheme: AffineScheme::new(4, mode).unwrap(),
        granularity: Granularity::Channel,
        calibration,
    };
    for backend in [gpu_b, Backend::Cpu] {
        let who = backend.name();
        // AbsMax needs a symmetric scheme; percentiles live in (0, 100].
        for (calibration, mode) in [
            (Calibration::AbsMax, AffineMode::Asymmetric),
            (Calibration::Percentile(0.0), AffineMode::Symmetric),
            (Calibration::Percentile(100.5), AffineMode::Asymmetric),
            (Calibration::Percentile(f32::NAN), AffineMode::Symmetric),
        ] {
            count += 2;
            let c = cfg(calibration, mode);
            let label = format!(
                "uniform({who}, calib={}, mode={})",
                calibration.label(),
                mode_name(mode)
            );
            match uniform::quantize(&backend, "w", &good, &shape, &c) {
                Err(Error::InvalidParam { .. }) => {}
                other => failures.push(format!(
                    "{label}: quantize gave {:?}, expected InvalidParam",
                    other.map(|_| ())
                )),
            }
            match uniform::fake_quantize(&backend, "w", &good, &shape, &c) {
                Err(Error::InvalidParam { .. }) => {}
                other => failures.push(format!(
                    "{label}: fake_quantize gave {:?}, expected InvalidParam",
                    other.map(|_| ())
                )),
            }
        }
        // Non-finite values: the tensor's name and the first bad index.
        for (bad, at, also) in [
            (f32::NAN, 77usize, None),
            (f32::INFINITY, 3, Some((200usize, f32::NAN))),
            (f32::NEG_INFINITY, 255, None),
            (f32::NAN, 0, Some((1, f32::INFINITY))),
        ] {
            for calibration in [Calibration::MinMax, Calibration::Mse] {
                count += 2;
                let mut x = good.clone();
                x[at] = bad;
                if let Some((i, v)) = also {
                    x[i] = v;
                }
                let c = cfg(calibration, AffineMode::Asymmetric);
                let label = format!(
                    "uniform({who}, calib={}, {bad} at {at})",
                    calibration.label()
                );
                let name = "layers.3.mlp.weight";
                let check = |what: &str, r: wgquant::Result<()>| match r {
                    Err(Error::NonFinite {
                        tensor,
                        index,
                        value,
                    }) if tensor == name && index == at && same(value, bad) => None,
                    other => Some(format!(
                        "{label}: {what} gave {other:?}, expected NonFinite naming '{name}' at {at}"
                    )),
                };
                failures.extend(check(
                    "quantize",
                    uniform::quantize(&backend, name, &x, &shape, &c).map(|_| ()),
                ));
                failures.extend(check(
                    "fake_quantize",
                    uniform::fake_quantize(&backend, name, &x, &shape, &c).map(|_| ()),
                ));
            }
        }
    }
    // The kernels' own argument checks.
    let x = GpuTensor::from_f32(ctx, &good, &[256]).unwrap();
    let r = gpu::minmax::ranges_tensor(ctx, 4).unwrap();
    let o = gpu::minmax::ranges_tensor(ctx, 4).unwrap();
    let scheme = AffineScheme::new(4, AffineMode::Symmetric).unwrap();
    let kernel_errors: [(&str, wgquant::Result<()>); 6] = [
        (
            "minmax(group 100 of 256)",
            ctx.run("t", |enc| gpu::minmax::encode(ctx, enc, &x, 100, &r)),
        ),
        (
            "minmax(5 ranges for 4 groups)",
            ctx.run("t", |enc| {
                gpu::minmax::encode(ctx, enc, &x, 64, &gpu::minmax::ranges_tensor(ctx, 5)?)
            }),
        ),
        (
            "histogram(P=0)",
            ctx.run("t", |enc| {
                gpu::histogram::encode(ctx, enc, &x, 64, &r, 0.0, true, &o)
            }),
        ),
        (
            "histogram(P=101)",
            ctx.run("t", |enc| {
                gpu::histogram::encode(ctx, enc, &x, 64, &r, 101.0, false, &o)
            }),
        ),
        (
            "clip_search(K=0)",
            ctx.run("t", |enc| {
                gpu::clip_search::encode(ctx, enc, &x, 64, &r, &scheme, 0, &o)
            }),
        ),
        (
            "ema(4 vs 5 ranges)",
            ctx.run("t", |enc| {
                gpu::minmax::encode_ema(
                    ctx,
                    enc,
                    &r,
                    &gpu::minmax::ranges_tensor(ctx, 5)?,
                    true,
                    0.5,
                )
            }),
        ),
    ];
    for (what, r) in kernel_errors {
        count += 1;
        if r.is_ok() {
            failures.push(format!("{what}: accepted"));
        }
    }
    finish_timed("uniform_bad_inputs_are_errors", start, count, failures);
}

// ---------------------------------------------------------------------------------------------
// 7. Running ranges over batches
// ---------------------------------------------------------------------------------------------

/// Records `encode_observe` of every batch into one encoder of the caller's, submits once and
/// waits.
fn observe_all(
    ctx: &Context,
    range: &mut RunningRange,
    batches: &[GpuTensor],
) -> wgquant::Result<()> {
    let device = ctx.device();
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("host engine"),
    });
    for b in batches {
        range.encode_observe(ctx, &mut encoder, b)?;
    }
    let index = ctx.queue().submit([encoder.finish()]);
    ctx.wait_for("running range", index)?;
    match pollster::block_on(scope.pop()) {
        None => Ok(()),
        Some(e) => Err(Error::Device {
            op: "running range".into(),
            msg: e.to_string(),
        }),
    }
}

#[test]
fn running_range_gpu_matches_cpu() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    // (groups, group length, momentum, batches)
    let cases = [
        (1usize, 1757usize, 0.01f32, 5usize),
        (7, 251, 0.3, 4),
        (64, 32, 1.0, 3),
        (3, MULTI, 0.1, 4),
        (2001, 3, 0.5, 6),
    ];
    let mut failures = Vec::new();
    for (groups, gl, momentum, batches) in cases {
        let key = format!("groups={groups}, group={gl}, momentum={momentum}, batches={batches}");
        let seed = seed_for(&key);
        let label = format!("running_range({key}, seed={seed:#x})");
        let run = || -> Check {
            let err = |e: wgquant::Error| format!("{label}: {e}");
            let mut on_gpu =
                RunningRange::new(&Backend::Gpu(ctx), groups, gl, momentum).map_err(err)?;
            let mut on_cpu = RunningRange::new(&Backend::Cpu, groups, gl, momentum).map_err(err)?;
            let mut magnitude = vec![0f32; groups];
            let data: Vec<Vec<f32>> = (0..batches)
                .map(|b| {
                    let dist = Dist::ALL[b % 3];
                    let scale = 10f32.powi(b as i32 - 2);
                    generate(dist, groups * gl, seed.wrapping_add(b as u64))
                        .into_iter()
                        .map(|v| v * scale)
                        .collect()
                })
                .collect();
            for batch in &data {
                for (g, chunk) in batch.chunks(gl).enumerate() {
                    for v in chunk {
                        magnitude[g] = magnitude[g].max(v.abs());
                    }
                }
            }
            // Every batch recorded into the test's own encoder, as a host engine would, one
            // submission, no read-back between.
            let tensors: Vec<GpuTensor> = data
                .iter()
                .map(|b| GpuTensor::from_f32(ctx, b, &[b.len()]))
                .collect::<wgquant::Result<_>>()
                .map_err(err)?;
            observe_all(ctx, &mut on_gpu, &tensors).map_err(err)?;
            for b in &data {
                on_cpu.observe(b).map_err(err)?;
            }
            if on_gpu.batches() != batches as u64 || on_cpu.batches() != batches as u64 {
                return Err(format!(
                    "{label}: batches seen GPU {} CPU {}, expected {batches}",
                    on_gpu.batches(),
                    on_cpu.batches()
                ));
            }
            let got = on_gpu.ranges(Some(ctx)).map_err(err)?;
            let expected = on_cpu.ranges(None).map_err(err)?;
            check_ema(&label, &expected, &got, &magnitude, batches - 1)?;
            // Parameters straight from the device state, against the CPU's from its state.
            let scheme = AffineScheme::new(8, AffineMode::Asymmetric).unwrap();
            let state = on_gpu
                .device_ranges()
                .ok_or(format!("{label}: no device state"))?;
            let scale = common::poisoned(ctx, &[groups], ElemType::F32);
            let zero = common::poisoned(ctx, &[groups], ElemType::I32);
            ctx.run("params", |enc| {
                gpu::affine_params::encode(ctx, enc, &scheme, state, &scale, &zero)
            })
            .map_err(err)?;
            let sg = scale.to_f32(ctx).map_err(err)?;
            let zg = zero.to_i32(ctx).map_err(err)?;
            let (sc, zc) = cpu::affine_params::affine_params(&scheme, &got);
            for g in 0..groups {
                check_group_params(&label, &scheme, g, &got[g], (sg[g], zg[g]), (sc[g], zc[g]))?;
            }
            // Each state lives on one side only.
            if on_gpu.observe(&data[0]).is_ok()
                || ctx
                    .run("t", |enc| on_cpu.encode_observe(ctx, enc, &tensors[0]))
                    .is_ok()
                || on_gpu.ranges(None).is_ok()
            {
                return Err(format!(
                    "{label}: a state accepted a batch from the other backend"
                ));
            }
            Ok(())
        };
        failures.extend(run().err());
    }
    let mut count = cases.len();
    for m in [0.0f32, -0.5, 1.5, f32::NAN] {
        count += 1;
        if RunningRange::new(&Backend::Cpu, 4, 8, m).is_ok() {
            failures.push(format!("RunningRange::new(momentum={m}) was accepted"));
        }
    }
    finish_timed("running_range_gpu_matches_cpu", start, count, failures);
}

// ---------------------------------------------------------------------------------------------
// 8. Determinism
// ---------------------------------------------------------------------------------------------

/// Every calibration result of `x` on `ctx` as raw words: ranges, two percentile clips and two
/// clip searches.
fn calibration_words(ctx: &Context, x: &[f32], gl: usize) -> wgquant::Result<Vec<Vec<u32>>> {
    let groups = x.len() / gl;
    let input = GpuTensor::from_f32(ctx, x, &[x.len()])?;
    let ranges = gpu::minmax::ranges_tensor(ctx, groups)?;
    ctx.run("minmax", |enc| {
        gpu::minmax::encode(ctx, enc, &input, gl, &ranges)
    })?;
    let mut out = vec![ranges.download(ctx)?];
    for (p, sym) in [(99.9f32, true), (99.99, false)] {
        let o = gpu::minmax::ranges_tensor(ctx, groups)?;
        ctx.run("histogram", |enc| {
            gpu::histogram::encode(ctx, enc, &input, gl, &ranges, p, sym, &o)
        })?;
        out.push(o.download(ctx)?);
    }
    for (bits, mode) in [(3, AffineMode::Symmetric), (4, AffineMode::Asymmetric)] {
        let scheme = AffineScheme::new(bits, mode)?;
        let o = gpu::minmax::ranges_tensor(ctx, groups)?;
        ctx.run("clip_search", |enc| {
            gpu::clip_search::encode(ctx, enc, &input, gl, &ranges, &scheme, 100, &o)
        })?;
        out.push(o.download(ctx)?);
    }
    Ok(out)
}

/// Two runs give the same bits, and so do runs under lowered work limits (chunking changes
/// which dispatch reduces a tile, never the order of a reduction).
#[test]
fn calibration_is_deterministic() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let names = [
        "minmax",
        "percentile(sym, 99.9)",
        "percentile(asym, 99.99)",
        "clip(3, sym)",
        "clip(4, asym)",
    ];
    let cases = [
        KCase {
            n: 3 * MULTI,
            group_len: MULTI,
            fill: Fill::NonFinite(Dist::Laplace),
        },
        KCase {
            n: 1757,
            group_len: 251,
            fill: Fill::Plain(Dist::Outliers),
        },
        KCase {
            n: 3 * 1999,
            group_len: 3,
            fill: Fill::Plain(Dist::Normal),
        },
        // 2048 bins per group: percentile selection runs in chunks of 5 groups under the
        // folded limits, histogram chunks start mid-group.
        KCase {
            n: 12 * 2048,
            group_len: 2048,
            fill: Fill::Plain(Dist::Laplace),
        },
        // Groups small enough for ~4 KiB windows too.
        KCase {
            n: 50 * 128,
            group_len: 128,
            fill: Fill::NonFinite(Dist::Normal),
        },
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for c in &cases {
        let x = c.data();
        let first = match calibration_words(ctx, &x, c.group_len) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!("{}: {e}", c.label("determinism", "")));
                continue;
            }
        };
        let folded = ctx.with_work_limits(FOLDED_GRID);
        let tiny = ctx.with_work_limits(TINY_WINDOWS);
        for (tag, run_ctx) in [
            ("second run", ctx),
            ("limits=65572B/7wg", &folded),
            ("limits=4148B/7wg", &tiny),
        ] {
            if tag == "limits=4148B/7wg" && c.group_len != 128 {
                continue;
            }
            count += 1;
            let label = c.label("determinism", tag);
            match calibration_words(run_ctx, &x, c.group_len) {
                Ok(again) => {
                    for ((name, a), b) in names.iter().zip(&first).zip(&again) {
                        failures.extend(check_words_equal(&label, name, a, b).err());
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    finish_timed("calibration_is_deterministic", start, count, failures);
}

/// A batch in which one group has no finite value (all NaN/±Inf: a fully masked channel, say)
/// has the empty range [+inf, −inf], which must not wreck the running average: after more
/// finite batches every group's range is finite again, inside the hull of the finite batches'
/// ranges, the non-finite values counted, and both backends agree.
#[test]
fn running_range_survives_a_batch_without_finite_values() {
    let ctx = gpu_or_skip!();
    let start = Instant::now();
    let (groups, gl, momentum) = (4usize, 64usize, 0.25f32);
    let key = format!("groups={groups}, group={gl}, momentum={momentum}, empty group 2 in batch 1");
    let seed = seed_for(&key);
    let label = format!("running_range({key}, seed={seed:#x})");
    let mut data: Vec<Vec<f32>> = (0..4)
        .map(|b| generate(Dist::Normal, groups * gl, seed.wrapping_add(b)))
        .collect();
    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    for (k, v) in data[1][2 * gl..3 * gl].iter_mut().enumerate() {
        *v = bad[k % 3];
    }
    let run = || -> Check {
        let err = |e: wgquant::Error| format!("{label}: {e}");
        let mut on_gpu =
            RunningRange::new(&Backend::Gpu(ctx), groups, gl, momentum).map_err(err)?;
        let mut on_cpu = RunningRange::new(&Backend::Cpu, groups, gl, momentum).map_err(err)?;
        let tensors: Vec<GpuTensor> = data
            .iter()
            .map(|b| GpuTensor::from_f32(ctx, b, &[b.len()]))
            .collect::<wgquant::Result<_>>()
            .map_err(err)?;
        observe_all(ctx, &mut on_gpu, &tensors).map_err(err)?;
        for b in &data {
            on_cpu.observe(b).map_err(err)?;
        }
        let got = on_gpu.ranges(Some(ctx)).map_err(err)?;
        let expected = on_cpu.ranges(None).map_err(err)?;
        let mut hull = vec![GroupRange::EMPTY; groups];
        for b in &data {
            let r = cpu::minmax::group_ranges(b, gl).map_err(err)?;
            for (h, r) in hull.iter_mut().zip(r) {
                *h = h.merge(GroupRange { nonfinite: 0, ..r });
            }
        }
        for (who, ranges) in [("GPU", &got), ("CPU", &expected)] {
            for (g, r) in ranges.iter().enumerate() {
                let count = if g == 2 { gl as u32 } else { 0 };
                if !(r.lo.is_finite()
                    && r.hi.is_finite()
                    && hull[g].lo <= r.lo
                    && r.hi <= hull[g].hi)
                    || r.nonfinite != count
                {
                    return Err(format!(
                        "{label}: {who} group {g}: running range [{:e}, {:e}] with {} non-finite \
                         values; expected a finite range inside [{:e}, {:e}] and {count}",
                        r.lo, r.hi, r.nonfinite, hull[g].lo, hull[g].hi
                    ));
                }
            }
        }
        let magnitude: Vec<f32> = hull.iter().map(|h| h.lo.abs().max(h.hi.abs())).collect();
        check_ema(&label, &expected, &got, &magnitude, data.len() - 1)
    };
    let failures: Vec<String> = run().err().into_iter().collect();
    finish_timed(
        "running_range_survives_a_batch_without_finite_values",
        start,
        1,
        failures,
    );
}
