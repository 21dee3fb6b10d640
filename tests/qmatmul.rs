//! The dequantizing matmul y = x·Wᵀ (+ bias) on GPU and CPU against dequantize-then-matmul in
//! f64: affine 2/3/4/8-bit weights per channel and per group (zero points or not), codebooks
//! per tensor and per channel, dense f32; odd N and K, rows starting mid-word, groups that are
//! and are not multiples of 32 codes, M = 1, 3, 17, 64; GEMV and GEMM, f32 and f16; weights
//! larger than a binding and folded grids; outputs poisoned first.

mod common;

use common::{Dist, Guarded, as_f32, check_nmse, finish, generate, gpu, say, seed_for};
use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::cpu::qmatmul::{self as cq, QWeight as CpuWeight};
use wgquant::format::{Granularity, QuantizedTensor};
use wgquant::gpu::qmatmul::{self as gq, GpuQWeight, Kernel, Options, Precision, QWeight};
use wgquant::gpu::{Context, ElemType, GpuTensor, WorkLimits};
use wgquant::quant::uniform::{Calibration, UniformConfig};
use wgquant::quant::{Backend, codebook, uniform};

/// Serialises this binary's GPU tests: parallel test threads submitting to one device make each
/// `wait` drain the others' work too (measured here: 125 s in parallel against 18 s in turn).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The shared device, held exclusively for the caller's test (a panicking test leaves the lock
/// usable).
fn device() -> Option<(&'static Context, std::sync::MutexGuard<'static, ()>)> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    gpu().map(|ctx| (ctx, guard))
}

/// f32 paths against the f64 reference. Each output sums ≤ 1000 products in f32 (as blocks of
/// 32 scaled once on the GPU): worst-case rounding is K·2⁻²⁴·Σ|w·x| per output, but signs are
/// random, so NMSE lands near 1e-13; 1e-9 keeps four orders of margin and still catches one
/// wrong code or group (≳ 1e-6 at these sizes).
const NMSE_F32: f64 = 1e-9;

/// f16 paths (products and 32-term block sums in f16, across blocks f32): each product is
/// rounded to 11 bits (relative 2⁻¹² ≈ 2.4e-4, NMSE ≈ 2e-8) and each block sum a few times
/// more; the bound for f32 accumulation, 5e-4, is the ceiling.
const NMSE_F16: f64 = 5e-4;

/// The weight under test.
#[derive(Clone, Debug)]
enum Weight {
    Quantized(QuantizedTensor),
    Dense(Vec<f32>),
}

/// Weight configurations: a label and a builder from (data, [n, k]).
fn quantize(kind: &str, data: &[f32], n: usize, k: usize) -> Weight {
    let shape = [n, k];
    let affine = |bits, mode, granularity| {
        let cfg = UniformConfig {
            scheme: AffineScheme::new(bits, mode).unwrap(),
            granularity,
            calibration: Calibration::MinMax,
        };
        Weight::Quantized(uniform::quantize(&Backend::Cpu, "w", data, &shape, &cfg).unwrap())
    };
    let group = |prefer: &[usize]| {
        let g = prefer
            .iter()
            .copied()
            .find(|g| k.is_multiple_of(*g))
            .unwrap_or(k);
        Granularity::Group(g)
    };
    match kind {
        "int4-sym-group" => affine(4, AffineMode::Symmetric, group(&[128, 64, 32, 12, 8, 5, 3])),
        "int4-asym-group-small" => affine(4, AffineMode::Asymmetric, group(&[12, 8, 5, 4, 3, 2])),
        "int8-restricted-channel" => {
            affine(8, AffineMode::SymmetricRestricted, Granularity::Channel)
        }
        "int8-asym-group" => affine(8, AffineMode::Asymmetric, group(&[64, 32, 16, 3])),
        "int2-asym-channel" => affine(2, AffineMode::Asymmetric, Granularity::Channel),
        "int3-sym-group" => affine(3, AffineMode::Symmetric, group(&[32, 8, 3])),
        "int3-asym-tensor" => affine(3, AffineMode::Asymmetric, Granularity::Tensor),
        "codebook4-tensor" | "codebook3-channel" | "codebook2-group" => {
            let (bits, granularity) = match kind {
                "codebook4-tensor" => (4, Granularity::Tensor),
                "codebook3-channel" => (3, Granularity::Channel),
                _ => (2, group(&[32, 16, 7])),
            };
            let groups = n * k / granularity.group_len(&shape).unwrap();
            // Sorted, unevenly spaced levels per group, as a trained codebook has.
            let levels: Vec<f32> = (0..groups)
                .flat_map(|g| {
                    let spread = 1.0 + (g % 5) as f32 * 0.3;
                    (0..1u32 << bits).map(move |j| {
                        let t = j as f32 / ((1u32 << bits) - 1) as f32 * 2.0 - 1.0;
                        spread * t * t.abs().sqrt() * 2.5
                    })
                })
                .collect();
            Weight::Quantized(
                codebook::quantize_nearest(
                    &Backend::Cpu,
                    "w",
                    data,
                    &shape,
                    granularity,
                    bits,
                    levels,
                )
                .unwrap(),
            )
        }
        "dense" => Weight::Dense(data.to_vec()),
        _ => unreachable!("unknown weight kind {kind}"),
    }
}

const KINDS: [&str; 11] = [
    "int4-sym-group",
    "int4-asym-group-small",
    "int8-restricted-channel",
    "int8-asym-group",
    "int2-asym-channel",
    "int3-sym-group",
    "int3-asym-tensor",
    "codebook4-tensor",
    "codebook3-channel",
    "codebook2-group",
    "dense",
];

/// W decoded to f32 (what both backends must multiply by).
fn decoded(w: &Weight) -> Vec<f32> {
    match w {
        Weight::Quantized(qt) => wgquant::quant::dequantize(&Backend::Cpu, qt).unwrap(),
        Weight::Dense(d) => d.clone(),
    }
}

/// y = x·Wᵀ + bias in f64, rounded to f32 at the end.
fn reference(
    x: &[f32],
    m: usize,
    wf: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for r in 0..n {
            let mut s: f64 = bias.map_or(0.0, |b| f64::from(b[r]));
            for kk in 0..k {
                s += f64::from(x[i * k + kk]) * f64::from(wf[r * k + kk]);
            }
            y[i * n + r] = s as f32;
        }
    }
    y
}

/// One case: shape, weight kind, options; GPU (poisoned output) and both CPU paths against
/// the f64 reference.
#[allow(clippy::too_many_arguments)]
fn case(
    ctx: &Context,
    m: usize,
    n: usize,
    k: usize,
    kind: &str,
    with_bias: bool,
    opts: Options,
    check_cpu: bool,
) -> Result<(), String> {
    let label = format!("qmatmul(m={m}, n={n}, k={k}, {kind}, bias={with_bias}, {opts:?})");
    let seed = seed_for(&format!("{m} {n} {k} {kind}"));
    let label = format!("{label} seed={seed:#x}");
    let x = generate(Dist::Normal, m * k, seed);
    let data = generate(Dist::Laplace, n * k, seed ^ 1);
    let bias = generate(Dist::Normal, n, seed ^ 2);
    let bias = with_bias.then_some(bias.as_slice());
    let w = quantize(kind, &data, n, k);
    let want = reference(&x, m, &decoded(&w), n, k, bias);
    let cpu_w = match &w {
        Weight::Quantized(qt) => {
            CpuWeight::from_quantized(qt).map_err(|e| format!("{label}: {e}"))?
        }
        Weight::Dense(d) => CpuWeight::dense(d, n, k),
    };
    if check_cpu {
        let mut got = vec![f32::NAN; m * n];
        cq::qmatmul(&x, m, &cpu_w, bias, &mut got).map_err(|e| format!("{label}: cpu: {e}"))?;
        check_nmse(&label, "cpu", &want, &got, NMSE_F32, "NMSE_F32")?;
        cq::qmatmul_reference(&x, m, &cpu_w, bias, &mut got)
            .map_err(|e| format!("{label}: cpu reference: {e}"))?;
        check_nmse(&label, "cpu reference", &want, &got, NMSE_F32, "NMSE_F32")?;
    }
    let g = |e: wgquant::Error| format!("{label}: gpu: {e}");
    let gx = GpuTensor::from_f32(ctx, &x, &[m, k]).map_err(g)?;
    let gbias = bias
        .map(|b| GpuTensor::from_f32(ctx, b, &[n]))
        .transpose()
        .map_err(g)?;
    let out = Guarded::new(ctx, 5, m * n, ElemType::F32).map_err(g)?;
    let y = out.view.reshape(&[m, n]).map_err(g)?;
    match &w {
        Weight::Quantized(qt) => {
            let gw = GpuQWeight::upload(ctx, qt).map_err(g)?;
            gq::qmatmul(ctx, &gx, &gw.weight(), gbias.as_ref(), &y, &opts).map_err(g)?;
        }
        Weight::Dense(d) => {
            let gw = GpuTensor::from_f32(ctx, d, &[n, k]).map_err(g)?;
            let qw = QWeight::dense(&gw).map_err(g)?;
            gq::qmatmul(ctx, &gx, &qw, gbias.as_ref(), &y, &opts).map_err(g)?;
        }
    }
    let got = as_f32(&out.check(ctx, &label, &[0..m * n], None)?);
    let (bound, name) = if opts.precision == Precision::F16 {
        (NMSE_F16, "NMSE_F16")
    } else {
        (NMSE_F32, "NMSE_F32")
    };
    check_nmse(&label, "gpu", &want, &got, bound, name)
}

/// Shapes (m, n, k): odd N and K, K not a multiple of 8 or 32 codes (rows start mid-word),
/// M = 1, 3, 17 (GEMV passes with a tail), 64 (GEMM by default above 16).
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (1, 5, 67),
    (3, 33, 96),
    (1, 257, 128),
    (3, 31, 40),
    (17, 9, 200),
    (64, 70, 129),
    (64, 65, 36),
];

#[test]
fn every_weight_kind_matches_the_f64_reference() {
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(m, n, k) in &SHAPES {
        for (i, kind) in KINDS.iter().enumerate() {
            cases += 1;
            let bias = (i + m) % 2 == 0;
            if let Err(e) = case(ctx, m, n, k, kind, bias, Options::default(), true) {
                failures.push(e);
            }
        }
    }
    finish(
        "every_weight_kind_matches_the_f64_reference",
        cases,
        failures,
    );
}

#[test]
fn forced_kernels_lanes_and_precisions_agree() {
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut variants = vec![
        Options {
            kernel: Kernel::Gemm,
            ..Options::default()
        },
        Options {
            kernel: Kernel::Gemv,
            lanes: Some(1),
            ..Options::default()
        },
        Options {
            kernel: Kernel::Gemv,
            lanes: Some(32),
            ..Options::default()
        },
        Options {
            precision: Precision::F32,
            ..Options::default()
        },
    ];
    if ctx.has_f16() {
        variants.push(Options {
            precision: Precision::F16,
            kernel: Kernel::Gemv,
            lanes: Some(1),
        });
        variants.push(Options {
            precision: Precision::F16,
            kernel: Kernel::Gemm,
            lanes: None,
        });
    } else {
        say(
            "forced_kernels_lanes_and_precisions_agree: no shader-f16 on this device, f16 cases skipped",
        );
    }
    for &(m, n, k) in &[(1, 33, 67), (3, 31, 40), (17, 9, 200)] {
        for kind in [
            "int4-sym-group",
            "int4-asym-group-small",
            "int3-sym-group",
            "codebook3-channel",
            "dense",
        ] {
            for opts in &variants {
                cases += 1;
                if let Err(e) = case(ctx, m, n, k, kind, true, *opts, false) {
                    failures.push(e);
                }
            }
        }
    }
    finish("forced_kernels_lanes_and_precisions_agree", cases, failures);
}

#[test]
fn weights_larger_than_a_binding_and_folded_grids() {
    let Some((base, _serial)) = device() else {
        return;
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    // 16 KiB windows: a 4-bit W [80, 1000] (40 KB) takes 3 row chunks, dense W 20; x and y fit.
    let small = base.with_work_limits(WorkLimits {
        max_binding_bytes: 16384 + 256,
        max_workgroups_per_dim: 65535,
    });
    for kind in [
        "int4-sym-group",
        "int2-asym-channel",
        "codebook3-channel",
        "codebook2-group",
        "dense",
    ] {
        for kernel in [Kernel::Gemv, Kernel::Gemm] {
            cases += 1;
            let opts = Options {
                kernel,
                ..Options::default()
            };
            if let Err(e) = case(&small, 3, 80, 1000, kind, true, opts, false) {
                failures.push(e);
            }
        }
    }
    // Four workgroups per dimension: 9 GEMV passes and 10 GEMM tiles fold into 2-D grids.
    let narrow = base.with_work_limits(WorkLimits {
        max_binding_bytes: u64::MAX,
        max_workgroups_per_dim: 4,
    });
    for kernel in [Kernel::Gemv, Kernel::Gemm] {
        for kind in ["int4-sym-group", "dense"] {
            cases += 1;
            let opts = Options {
                kernel,
                ..Options::default()
            };
            if let Err(e) = case(&narrow, 70, 300, 67, kind, false, opts, false) {
                failures.push(e);
            }
        }
    }
    finish(
        "weights_larger_than_a_binding_and_folded_grids",
        cases,
        failures,
    );
}

#[test]
fn bad_inputs_are_errors() {
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let data = generate(Dist::Normal, 6 * 8, 1);
    let Weight::Quantized(qt) = quantize("int4-sym-group", &data, 6, 8) else {
        unreachable!()
    };
    let gw = GpuQWeight::upload(ctx, &qt).unwrap();
    let x = GpuTensor::zeros(ctx, &[2, 7], ElemType::F32).unwrap();
    let y = GpuTensor::zeros(ctx, &[2, 6], ElemType::F32).unwrap();
    let opts = Options::default();
    assert!(
        gq::qmatmul(ctx, &x, &gw.weight(), None, &y, &opts).is_err(),
        "K mismatch"
    );
    let x = GpuTensor::zeros(ctx, &[2, 8], ElemType::F32).unwrap();
    let y_bad = GpuTensor::zeros(ctx, &[2, 5], ElemType::F32).unwrap();
    assert!(
        gq::qmatmul(ctx, &x, &gw.weight(), None, &y_bad, &opts).is_err(),
        "N mismatch"
    );
    let lanes = Options {
        lanes: Some(3),
        kernel: Kernel::Gemv,
        ..opts
    };
    assert!(
        gq::qmatmul(ctx, &x, &gw.weight(), None, &y, &lanes).is_err(),
        "3 lanes"
    );
    if !ctx.has_f16() {
        let f16 = Options {
            precision: Precision::F16,
            ..opts
        };
        assert!(
            gq::qmatmul(ctx, &x, &gw.weight(), None, &y, &f16).is_err(),
            "f16 without f16"
        );
    }
    assert!(gq::qmatmul(ctx, &x, &gw.weight(), None, &y, &opts).is_ok());
    let mut masked = qt.clone();
    masked.mask = Some(vec![u32::MAX; 2]);
    assert!(GpuQWeight::upload(ctx, &masked).is_err(), "masked weights");
    assert!(
        CpuWeight::from_quantized(&masked).is_err(),
        "masked weights (cpu)"
    );
    let mut wide = qt.clone();
    wide.shape = vec![48];
    assert!(CpuWeight::from_quantized(&wide).is_err(), "1-D weight");
    let mut out = vec![0f32; 11];
    let cw = CpuWeight::from_quantized(&qt).unwrap();
    assert!(
        cq::qmatmul(&[0.0; 16], 2, &cw, None, &mut out).is_err(),
        "cpu y length"
    );
}

/// `wgquant bench matmul` runs a small plan end to end (checks before timing included) and
/// prints the table with every requested format.
#[test]
fn bench_matmul_cli_prints_the_table() {
    let Some((_ctx, _serial)) = device() else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgquant"))
        .args([
            "bench", "matmul", "--shapes", "40x128", "--m", "1,3", "--iters", "1",
        ])
        .args([
            "--formats",
            "int4-g128,int8-channel,codebook4",
            "--device",
            "gpu",
        ])
        .output()
        .expect("wgquant runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wgquant bench matmul failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("copy shader:"), "{stdout}");
    for format in ["f32", "int4-g128", "int8-channel", "codebook4"] {
        let rows = stdout
            .lines()
            .filter(|l| l.starts_with("40x128") && l.contains(&format!(" {format} ")))
            .count();
        assert_eq!(rows, 2, "{format}: one row per M expected in\n{stdout}");
    }
}
