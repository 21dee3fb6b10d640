//! Weighted-entropy log quantization of activations: the exact tables and integer log index,
//! the histogram bit for bit between GPU and CPU and across runs, the chosen (h, o) and its
//! score identical on both backends and within a named bound of the best exact S, the forward
//! bit for bit (no ties: every step is integer arithmetic), S by hand, ReLU merged, batches
//! larger than one binding, the device-resident calibrate-then-forward path, and errors.

mod common;

use common::{Check, Guarded, as_f32, check_bits_equal, finish, gpu, rng, seed_for};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use wgquant::affine::GroupRange;
use wgquant::cpu::weq_act_histogram::{
    self as hist_cpu, BINS, TABLE_LOG, TABLE_POW, TABLE_THRESH, TABLE_WEIGHT, k_lo, k_top, klog,
    lg, pow16, tables,
};
use wgquant::cpu::weq_act_sweep::{self as sweep_cpu, OFFSET_MARGIN, OFFSETS, PAIRS, WeqActResult};
use wgquant::gpu::{
    Context, ElemType, GpuTensor, WorkLimits, minmax, weq_act_forward, weq_act_histogram,
    weq_act_sweep,
};
use wgquant::quant::Backend;
use wgquant::quant::weq::activation::{
    WeqActBuffers, WeqActivation, calibrate, encode_calibrate, encode_forward_calibrated,
};

/// The chosen pair's exact S (f64, from the histogram) may fall short of the best pair's exact
/// S by at most this fraction: the sweep ranks pairs by a fixed-point score whose log2 is
/// accurate to 2·10⁻⁵ (Q16 with a 256-entry table) and whose terms are truncated to
/// integers; 10⁻⁴ is that with margin and still far below what a wrong level grid costs.
const S_CHOICE_REL_TOL: f64 = 1e-4;

/// The score's S (the record's `entropy()`) against the exact S of the same pair: the same
/// fixed-point error as above.
const S_SCORE_REL_TOL: f64 = 1e-4;

/// Test batches of activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// ReLU of a normal: half zeros, a half-normal above.
    ReluNormal,
    /// ReLU of a Laplace with a few large outliers.
    ReluLaplace,
    /// Log-normal spanning far more than the histogram's 64 octaves (bin 0 collects the rest).
    WideLogNormal,
    /// Negatives, ±0, subnormals, tiny and huge positives.
    Mixed,
    /// One positive value everywhere (S = 0 for every pair).
    Constant,
    /// Nothing positive.
    NonPositive,
}

const ACTS: [Act; 6] = [
    Act::ReluNormal,
    Act::ReluLaplace,
    Act::WideLogNormal,
    Act::Mixed,
    Act::Constant,
    Act::NonPositive,
];

fn batch(act: Act, n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let scale = 0.1 + 3.0 * r.random::<f32>();
    (0..n)
        .map(|i| {
            let z: f32 = StandardNormal.sample(&mut r);
            match act {
                Act::ReluNormal => (scale * z).max(0.0),
                Act::ReluLaplace => {
                    let u = r.random::<f32>() - 0.5;
                    let v = -scale * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln();
                    let big = if i % 997 == 3 { 40.0 } else { 1.0 };
                    (v * big).max(0.0)
                }
                Act::WideLogNormal => (12.0 * z).exp().min(1e37),
                Act::Mixed => match i % 8 {
                    0 => -scale * z.abs(),
                    1 => 0.0,
                    2 => -0.0,
                    3 => f32::from_bits(1 + (r.random::<u32>() & 0x7f_ffff)),
                    4 => 1e-30 * z.abs(),
                    5 => 1e30 * z.abs(),
                    _ => (scale * z).max(0.0),
                },
                Act::Constant => 0.75 * scale,
                Act::NonPositive => -(scale * z).abs(),
            }
        })
        .collect()
}

/// The range minmax computes: finite values only.
fn range_of(x: &[f32]) -> GroupRange {
    let finite = || x.iter().copied().filter(|v| v.is_finite());
    GroupRange {
        lo: finite().fold(f32::INFINITY, f32::min),
        hi: finite().fold(f32::NEG_INFINITY, f32::max),
        nonfinite: x.iter().filter(|v| !v.is_finite()).count() as u32,
        _pad: 0,
    }
}

/// Exact S (f64, real levels 2^(m/16)) of pair (h, t) from histogram counts: the reference
/// the fixed-point score is held to.
fn exact_pair_entropy(hist: &[u32], bits: u32, h: u32, t: u32, k_top: i32) -> f64 {
    let p = sweep_cpu::prefix(hist);
    let total = p[BINS];
    if total == 0 {
        return 0.0;
    }
    let levels = (1u32 << bits) - 1;
    let step = 2 * h;
    let o = k_lo(k_top) + OFFSET_MARGIN + t as i32;
    let base = (OFFSET_MARGIN + t as i32 - h as i32) as u32;
    let mut s = 0.0;
    for q in 0..levels {
        let a = base + q * step;
        if a >= BINS as u32 {
            break;
        }
        let b = if q == levels - 1 {
            BINS as u32
        } else {
            (a + step).min(BINS as u32)
        };
        let n = p[b as usize] - p[a as usize];
        if n > 0 {
            let pr = f64::from(n) / f64::from(total);
            s -= (f64::from(o + (q * step) as i32) / 16.0).exp2() * pr * pr.ln();
        }
    }
    s
}

/// The record's pair scored exactly, the best exact S over all pairs, and checks that the
/// choice and its reported S are within their bounds.
fn check_choice(label: &str, hist: &[u32], bits: u32, rec: &WeqActResult) -> Check {
    let h = rec.step / 2;
    let t = (rec.offset - k_lo(rec.k_top) - OFFSET_MARGIN) as u32;
    if !(1..=16).contains(&h) || t >= OFFSETS {
        return Err(format!("{label}: record out of range: {rec:?}"));
    }
    let chosen = exact_pair_entropy(hist, bits, h, t, rec.k_top);
    let best = (0..PAIRS)
        .map(|p| exact_pair_entropy(hist, bits, p / OFFSETS + 1, p % OFFSETS, rec.k_top))
        .fold(0.0, f64::max);
    if chosen < best * (1.0 - S_CHOICE_REL_TOL) {
        return Err(format!(
            "{label}: chosen pair's exact S {chosen} below the best {best} by more than \
             S_CHOICE_REL_TOL = {S_CHOICE_REL_TOL} ({rec:?})"
        ));
    }
    let reported = rec.entropy();
    if (reported - chosen).abs() > S_SCORE_REL_TOL * chosen.max(1e-300) {
        return Err(format!(
            "{label}: reported S {reported} vs exact {chosen} beyond S_SCORE_REL_TOL = \
             {S_SCORE_REL_TOL}"
        ));
    }
    Ok(())
}

#[test]
fn tables_are_exact_and_far_from_rounding() {
    let w = &tables().words;
    // Every table entry is a rounded (or ceiled) real at least this far from the rounding
    // boundary, in its own units, so a libm that differs in the last bits of f64 gives the
    // same table.
    const MARGIN: f64 = 1e-6;
    for i in 1..16 {
        let v = ((i as f64) / 16.0).exp2();
        let t = (v - 1.0) * 8_388_608.0;
        assert!((t - t.round()).abs() > MARGIN, "threshold {i}: {t}");
        assert_eq!(w[TABLE_THRESH + i], t.ceil() as u32);
        let g = (-(i as f64) / 16.0).exp2() * 1_073_741_824.0;
        assert!(((g - g.floor()) - 0.5).abs() > MARGIN, "weight {i}: {g}");
        // f32(2^(i/16)) rounds correctly: the real value is not near a midpoint of f32s.
        let f = f32::from_bits(w[TABLE_POW + i]);
        let ulp = f64::from(f32::EPSILON);
        assert!(((v - f64::from(f)) / ulp).abs() < 0.5 - MARGIN, "pow {i}");
    }
    for i in 0..=256 {
        let l = (1.0 + i as f64 / 256.0).log2() * 65_536.0;
        assert!(((l - l.floor()) - 0.5).abs() > MARGIN, "log {i}: {l}");
        assert_eq!(w[TABLE_LOG + i], l.round() as u32);
    }
    assert_eq!(w[TABLE_WEIGHT], 1 << 30);
}

#[test]
fn integer_log_and_levels_are_exact() {
    let mut r = rng(seed_for("klog"));
    let mut xs: Vec<f32> = (0..200_000)
        .map(|_| f32::from_bits(r.random_range(0x0080_0000u32..0x7f80_0000)))
        .collect();
    // Powers of two, the thresholds and one ULP either side of them.
    for e in -126..128 {
        let p = 2f32.powi(e);
        xs.push(p);
        for i in 1..16 {
            let t = f32::from_bits(p.to_bits() + tables().words[TABLE_THRESH + i]);
            xs.extend([t, f32::from_bits(t.to_bits() - 1)]);
        }
    }
    xs.extend([f32::MIN_POSITIVE, f32::MAX, 1.0]);
    for x in xs {
        let want = (16.0 * f64::from(x).log2()).floor() as i32;
        assert_eq!(klog(x.to_bits()), want, "klog({x:e})");
    }
    assert_eq!(klog(1), hist_cpu::K_SUBNORMAL);
    for m in -2016..2048 {
        let want = (f64::from(m) / 16.0).exp2() as f32;
        assert_eq!(pow16(m), want, "pow16({m})");
    }
    assert_eq!(pow16(-2017), f32::MIN_POSITIVE);
    assert_eq!(pow16(2048), f32::MAX);
    let mut prev;
    for n in (1u32..70_000).chain((0..100_000).map(|_| r.random_range(1u32..=u32::MAX))) {
        let got = f64::from(lg(n)) / 65_536.0;
        assert!((got - f64::from(n).log2()).abs() < 2e-5, "lg({n}) = {got}");
    }
    // Monotone, so lg(N) − lg(n) ≥ 0: across all 2^16 interpolation steps of one octave and
    // the octave boundaries of 16-bit and 32-bit counts.
    for run in [
        1u32..=70_000,
        (1 << 31) - 70_000..=(1 << 31) + 70_000,
        u32::MAX - 70_000..=u32::MAX,
    ] {
        prev = 0;
        for n in run {
            assert!(lg(n) >= prev, "lg not monotone at {n}");
            prev = lg(n);
        }
    }
}

/// Runs the GPU histogram and sweep (twice, for determinism) on `x` and compares them with the
/// CPU twins bit for bit; returns the CPU histogram and record.
fn gpu_vs_cpu(ctx: &Context, label: &str, x: &[f32], bits: u32) -> Result<WeqActResult, String> {
    let e = |e: wgquant::Error| format!("{label}: {e}");
    let range = range_of(x);
    let cpu_hist = hist_cpu::weq_act_histogram(x, &range).map_err(e)?;
    let cpu_rec = sweep_cpu::weq_act_sweep(&cpu_hist, k_top(&range), bits).map_err(e)?;
    let input = GpuTensor::from_f32(ctx, x, &[x.len()]).map_err(e)?;
    let r = minmax::ranges_tensor(ctx, 1).map_err(e)?;
    ctx.run("minmax", |enc| {
        minmax::encode(ctx, enc, &input, x.len(), &r)
    })
    .map_err(e)?;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let h = weq_act_histogram::weq_act_histogram(ctx, &input, &r).map_err(e)?;
        let ht = GpuTensor::from_u32(ctx, &h, &[h.len()]).map_err(e)?;
        let rec = weq_act_sweep::weq_act_sweep(ctx, &ht, &r, bits).map_err(e)?;
        runs.push((h, rec));
    }
    if runs[0] != runs[1] {
        return Err(format!("{label}: two GPU runs differ"));
    }
    let (h, rec) = &runs[0];
    if *h != cpu_hist {
        let i = h
            .iter()
            .zip(&cpu_hist)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "{label}: histogram word {i}: GPU {} CPU {}",
            h[i], cpu_hist[i]
        ));
    }
    if *rec != cpu_rec {
        return Err(format!("{label}: GPU record {rec:?}, CPU {cpu_rec:?}"));
    }
    check_choice(label, &cpu_hist, bits, &cpu_rec)?;
    Ok(cpu_rec)
}

#[test]
fn histogram_and_choice_match_cpu() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for act in ACTS {
        for (n, bits) in [(1usize, 2u32), (257, 3), (100_003, 4)] {
            let label = format!("weq_act(act={act:?}, n={n}, bits={bits})");
            let x = batch(act, n, seed_for(&label));
            cases += 1;
            if let Err(e) = gpu_vs_cpu(ctx, &label, &x, bits) {
                failures.push(e);
            }
        }
    }
    // Every width on one batch.
    for bits in [1u32, 2, 5, 6, 7, 8] {
        let label = format!("weq_act(act=ReluNormal, n=20000, bits={bits})");
        let x = batch(Act::ReluNormal, 20_000, seed_for(&label));
        cases += 1;
        if let Err(e) = gpu_vs_cpu(ctx, &label, &x, bits) {
            failures.push(e);
        }
    }
    // Non-finite values are counted apart, never binned.
    let label = "weq_act(nonfinite)";
    let mut x = batch(Act::ReluNormal, 5000, seed_for(label));
    x[7] = f32::NAN;
    x[8] = f32::INFINITY;
    x[9] = f32::NEG_INFINITY;
    cases += 1;
    match gpu_vs_cpu(ctx, label, &x, 3) {
        Ok(rec) if rec.nonfinite != 3 => failures.push(format!("{label}: {rec:?}")),
        Err(e) => failures.push(e),
        _ => {}
    }
    finish("histogram_and_choice_match_cpu", cases, failures);
}

#[test]
fn entropy_by_hand() {
    // bits 2, step 16 (one octave), offset 0: levels 1, 2, 4. Positives 0.5 (underflows: k =
    // −16 < o − h = −8), 1, 1, 2, 4, 4, 4: N = 7, n = (2, 1, 3).
    let x = [0.0f32, -1.0, 0.5, 1.0, 1.0, 2.0, 4.0, 4.0, 4.0];
    let q = WeqActivation::new(2, 16, 0).unwrap();
    let p = |n: f64| n / 7.0;
    let s = -(p(2.0) * p(2.0).ln() + 2.0 * p(1.0) * p(1.0).ln() + 4.0 * p(3.0) * p(3.0).ln());
    assert!(
        (q.entropy(&x) - s).abs() < 1e-12 * s,
        "{} != {s}",
        q.entropy(&x)
    );
    assert_eq!(q.levels(), vec![0.0, 1.0, 2.0, 4.0]);
    let want = vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 2.0, 4.0, 4.0, 4.0];
    let mut backends = vec![Backend::Cpu];
    if let Some(ctx) = gpu() {
        backends.push(Backend::Gpu(ctx));
    }
    for b in &backends {
        assert_eq!(q.forward(b, "x", &x).unwrap(), want, "{}", b.name());
        // The search covers (h = 8, o = 0), so it does at least as well, and its score is S.
        let c = calibrate(b, "x", &x, 2).unwrap();
        let exact = c.quantizer.entropy(&x);
        assert!(exact >= s * (1.0 - S_CHOICE_REL_TOL), "{}: {c:?}", b.name());
        assert!(
            (c.entropy - exact).abs() <= S_SCORE_REL_TOL * exact,
            "{}: {c:?} vs {exact}",
            b.name()
        );
    }
}

/// GPU forward into a poisoned, guarded output (view at an unaligned offset) against the CPU
/// twin, bit for bit; plus the log-domain half-step bound and ReLU merged.
fn check_forward(ctx: &Context, label: &str, x: &[f32], q: &WeqActivation) -> Check {
    let e = |e: wgquant::Error| format!("{label}: {e}");
    let mut want = vec![0f32; x.len()];
    wgquant::cpu::weq_act_forward::weq_act_forward(x, &mut want, q.bits, q.step, q.offset)
        .map_err(e)?;
    let xt = GpuTensor::from_f32(ctx, x, &[x.len()]).map_err(e)?;
    let out = Guarded::new(ctx, 13, x.len(), ElemType::F32).map_err(e)?;
    ctx.run("weq_act_forward", |enc| {
        q.encode_forward(ctx, enc, &xt, &out.view)
    })
    .map_err(e)?;
    let got = as_f32(&out.check(ctx, label, &[0..x.len()], None)?);
    // NaN stays NaN with its payload; compare the rest by bits.
    check_bits_equal(
        label,
        "forward (NaN-free part)",
        &want
            .iter()
            .map(|v| if v.is_nan() { 0.0 } else { *v })
            .collect::<Vec<_>>(),
        &got.iter()
            .map(|v| if v.is_nan() { 0.0 } else { *v })
            .collect::<Vec<_>>(),
    )?;
    let levels = q.levels();
    let h = f64::from(q.step / 2);
    for (i, (&v, &y)) in x.iter().zip(&got).enumerate() {
        if v.is_nan() {
            if y.to_bits() != v.to_bits() {
                return Err(format!("{label}: NaN at {i} became {y}"));
            }
            continue;
        }
        if !(v > 0.0) {
            if y.to_bits() != 0 {
                return Err(format!("{label}: x[{i}] = {v} ≤ 0 gave {y}, not +0"));
            }
            continue;
        }
        if want[i] != levels[q.code(v) as usize] {
            return Err(format!("{label}: x[{i}] = {v:e}: not its code's level"));
        }
        // Inside the level grid, x̂ is within half a step of x in 16·log2 units.
        let u = 16.0 * f64::from(v).log2();
        let lo = f64::from(q.offset) - h;
        let hi = f64::from(q.offset) + f64::from(q.step) * (levels.len() as f64 - 2.0) + h;
        if u >= lo + 1e-9 && u < hi - 1e-9 && v.is_finite() && y >= f32::MIN_POSITIVE {
            let d = (16.0 * f64::from(y).log2() - u).abs();
            if d > h + 1e-6 {
                return Err(format!("{label}: x[{i}] = {v:e} → {y:e}: {d} > h = {h}"));
            }
        }
    }
    Ok(())
}

#[test]
fn forward_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for (act, n, bits) in [
        (Act::ReluNormal, 1usize, 2u32),
        (Act::Mixed, 3, 3),
        (Act::ReluLaplace, 1757, 4),
        (Act::WideLogNormal, 4099, 8),
        (Act::ReluNormal, (1 << 20) + 3, 3),
    ] {
        let label = format!("weq_act_forward(act={act:?}, n={n}, bits={bits})");
        let mut x = batch(act, n, seed_for(&label));
        let c = match calibrate(&Backend::Cpu, "x", &x, bits) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        // Kernel-level inputs may hold non-finite values: NaN passes, −Inf → 0, +Inf → top.
        if n > 3 {
            x[1] = f32::NAN;
            x[2] = f32::NEG_INFINITY;
            x[3] = f32::INFINITY;
        }
        cases += 1;
        if let Err(e) = check_forward(ctx, &label, &x, &c.quantizer) {
            failures.push(e);
        }
    }
    finish("forward_matches_cpu", cases, failures);
}

#[test]
fn larger_than_one_binding_and_device_resident() {
    let Some(base) = gpu() else { return };
    let small = base.with_work_limits(WorkLimits {
        max_binding_bytes: (1 << 20) + 4096,
        max_workgroups_per_dim: 37,
    });
    let ctx = &small;
    let label = "weq_act(n=2^19+5, small-windows)";
    let x = batch(Act::ReluLaplace, (1 << 19) + 5, seed_for(label));
    let mut failures = Vec::new();
    // Calibration then forward in one command stream, the record never leaving the device.
    let run = || -> Result<(WeqActResult, Vec<f32>), wgquant::Error> {
        let xt = GpuTensor::from_f32(ctx, &x, &[x.len()])?;
        let yt = common::poisoned(ctx, &[x.len()], ElemType::F32);
        let bufs = WeqActBuffers::new(ctx)?;
        ctx.run("calibrate+forward", |enc| {
            encode_calibrate(ctx, enc, &xt, 4, &bufs)?;
            encode_forward_calibrated(ctx, enc, 4, &bufs, &xt, &yt)
        })?;
        let rec: Vec<WeqActResult> = bufs.record.download(ctx)?;
        Ok((rec[0], yt.to_f32(ctx)?))
    };
    let (rec, y) = run().unwrap();
    let c = calibrate(&Backend::Cpu, "x", &x, 4).unwrap();
    if rec != c.record {
        failures.push(format!(
            "{label}: device record {rec:?}, CPU {:?}",
            c.record
        ));
    }
    let want = c.quantizer.forward(&Backend::Cpu, "x", &x).unwrap();
    if let Err(e) = check_bits_equal(label, "forward", &want, &y) {
        failures.push(e);
    }
    if let Err(e) = check_forward(ctx, label, &x, &c.quantizer) {
        failures.push(e);
    }
    // Runs repeat bit for bit.
    if run().unwrap() != (rec, y) {
        failures.push(format!("{label}: a second run differs"));
    }
    finish("larger_than_one_binding_and_device_resident", 1, failures);
}

#[test]
fn errors_are_typed() {
    let x = [1.0f32, f32::NAN];
    assert!(matches!(
        calibrate(&Backend::Cpu, "act", &x, 4),
        Err(wgquant::Error::NonFinite { index: 1, .. })
    ));
    assert!(calibrate(&Backend::Cpu, "act", &[1.0], 0).is_err());
    assert!(calibrate(&Backend::Cpu, "act", &[1.0], 9).is_err());
    assert!(calibrate(&Backend::Cpu, "act", &[], 4).is_err());
    assert!(WeqActivation::new(4, 3, 0).is_err());
    assert!(WeqActivation::new(4, 34, 0).is_err());
    if let Some(ctx) = gpu() {
        let x = GpuTensor::from_f32(ctx, &[1.0, 2.0], &[2]).unwrap();
        let y = GpuTensor::zeros(ctx, &[3], ElemType::F32).unwrap();
        let q = WeqActivation::new(4, 2, 0).unwrap();
        assert!(
            ctx.run("e", |enc| q.encode_forward(ctx, enc, &x, &y))
                .is_err()
        );
        let rec = weq_act_sweep::record_tensor(ctx).unwrap();
        assert!(
            ctx.run("e", |enc| weq_act_forward::encode(
                ctx, enc, 0, &rec, &x, &x
            ))
            .is_err()
        );
    }
}

/// Prints what the quantizer picks on half-normal (ReLU) batches next to a uniform unsigned
/// quantizer (min/max range, so [0, max]): S and SQNR.
#[test]
fn report_half_normal() {
    let label = "report(half-normal)";
    let mut r = rng(seed_for(label));
    let x: Vec<f32> = (0..1 << 16)
        .map(|_| StandardNormal.sample(&mut r))
        .map(|z: f32| z.max(0.0))
        .collect();
    let sqnr = |y: &[f32]| {
        let (mut s, mut n) = (0.0f64, 0.0f64);
        for (&a, &b) in x.iter().zip(y) {
            s += f64::from(a) * f64::from(a);
            n += (f64::from(a) - f64::from(b)).powi(2);
        }
        10.0 * (s / n).log10()
    };
    for bits in [2u32, 3, 4] {
        let c = calibrate(&Backend::Cpu, "x", &x, bits).unwrap();
        let y = c.quantizer.forward(&Backend::Cpu, "x", &x).unwrap();
        let max = x.iter().copied().fold(0f32, f32::max);
        let s = max / ((1u32 << bits) - 1) as f32;
        let u: Vec<f32> = x
            .iter()
            .map(|v| {
                (v / s)
                    .round_ties_even()
                    .clamp(0.0, ((1u32 << bits) - 1) as f32)
                    * s
            })
            .collect();
        common::say(&format!(
            "half-normal b={bits}: weq step {} offset {} (r_1 = {:.4e}) S {:.5} SQNR {:.2} dB; \
             uniform [0, max] SQNR {:.2} dB",
            c.quantizer.step,
            c.quantizer.offset,
            c.quantizer.levels()[1],
            c.entropy,
            sqnr(&y),
            sqnr(&u)
        ));
    }
}
