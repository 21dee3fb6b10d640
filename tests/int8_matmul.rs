//! The full-integer path: requantization on GPU bit-identical to the CPU over edge values
//! (i32::MIN, ties of both roundings, negative values, every exponent), and the int8 × int8 →
//! int32 matmul with bias, accumulators and requantized outputs, bit-exact on GPU (both the
//! dot4I8Packed and the scalar path) against the CPU and its i64 reference, including odd K,
//! rows starting mid-word, weights larger than a binding and a float end-to-end check.

mod common;

use common::{Guarded, finish, gpu, rng, seed_for};
use rand::RngExt;
use wgquant::cpu::int8_matmul::{self as ci, Int8Layer, Int8Out, int8_accumulators_reference};
use wgquant::format::pack;
use wgquant::gpu::int8_matmul::{self as gi, DotPath, GpuInt8Out};
use wgquant::gpu::{Context, ElemType, GpuTensor, WorkLimits};
use wgquant::requant::{OutputQuant, QuantizedMultiplier};

/// Serialises this binary's GPU tests (see tests/qmatmul.rs).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device() -> Option<(&'static Context, std::sync::MutexGuard<'static, ()>)> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    gpu().map(|ctx| (ctx, guard))
}

/// Accumulators that meet every rounding edge: the extremes, small values of both signs, and
/// exact ties of both steps for M0 = 2^30 (SRDHM halves x, so odd x ties) and for each right
/// shift e (x = ±(2j+1)·2^e gives an SRDHM result ±(2j+1)·2^(e−1), a tie of RDBPOT).
fn edge_accumulators() -> Vec<i32> {
    let mut v = vec![
        i32::MIN,
        i32::MIN + 1,
        i32::MIN + 2,
        i32::MAX,
        i32::MAX - 1,
        -(1 << 30),
        1 << 30,
        0,
    ];
    v.extend(-9..=9);
    for e in 1..31 {
        for j in [0i64, 1, 5] {
            let t = (2 * j + 1) << e;
            if t <= i64::from(i32::MAX) {
                v.push(t as i32);
                v.push(-(t as i32));
                v.push(t as i32 - 1);
                v.push(-(t as i32) + 1);
            }
        }
    }
    let mut r = rng(seed_for("requantize edges"));
    v.extend((0..200).map(|_| r.random::<i32>()));
    v
}

/// Multipliers at the edges of M0 and across every exponent.
fn edge_multipliers() -> Vec<QuantizedMultiplier> {
    let m0s = [
        0,
        1 << 30,
        (1 << 30) + 1,
        1_518_500_250,
        i32::MAX - 1,
        i32::MAX,
    ];
    let mut out = Vec::new();
    for &m0 in &m0s {
        for exponent in QuantizedMultiplier::MIN_EXPONENT..=QuantizedMultiplier::MAX_EXPONENT {
            out.push(QuantizedMultiplier { m0, exponent });
        }
    }
    out
}

fn words(m: &[QuantizedMultiplier]) -> Vec<i32> {
    m.iter().flat_map(|q| [q.m0, q.exponent]).collect()
}

#[test]
fn requantize_is_bit_identical_on_edge_values() {
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let accs = edge_accumulators();
    let mults = edge_multipliers();
    let n = mults.len();
    // Every accumulator meets every multiplier: row i of [rows, n] repeats accs[i].
    let acc: Vec<i32> = accs
        .iter()
        .flat_map(|&a| std::iter::repeat_n(a, n))
        .collect();
    let mut failures = Vec::new();
    let quants = [
        OutputQuant {
            zero: 0,
            qmin: i32::MIN,
            qmax: i32::MAX,
        },
        OutputQuant {
            zero: -3,
            qmin: -128,
            qmax: 127,
        },
        OutputQuant {
            zero: 200,
            qmin: 0,
            qmax: 255,
        },
    ];
    for quant in quants {
        let label = format!(
            "requantize({} accumulators × {n} multipliers, {quant:?})",
            accs.len()
        );
        let mut want = vec![0i32; acc.len()];
        wgquant::cpu::requantize::requantize(&acc, n, &mults, quant, &mut want).unwrap();
        let g = |e: wgquant::Error| format!("{label}: {e}");
        let run = || -> Result<Vec<u32>, String> {
            let gacc = GpuTensor::from_i32(ctx, &acc, &[acc.len()]).map_err(g)?;
            let gm = GpuTensor::from_i32(ctx, &words(&mults), &[2 * n]).map_err(g)?;
            let out = Guarded::new(ctx, 3, acc.len(), ElemType::I32).map_err(g)?;
            wgquant::gpu::requantize::requantize(ctx, &gacc, n, &gm, quant, &out.view)
                .map_err(g)?;
            out.check(
                ctx,
                &label,
                &[0..acc.len()],
                Some(bytemuck::cast_slice(&want)),
            )
        };
        match run() {
            Ok(got) => {
                if let Some(e) = (0..acc.len()).find(|&e| got[e] as i32 != want[e]) {
                    failures.push(format!(
                        "{label}: acc {} × {:?}: gpu {} cpu {}",
                        acc[e],
                        mults[e % n],
                        got[e] as i32,
                        want[e]
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    finish(
        "requantize_is_bit_identical_on_edge_values",
        quants.len(),
        failures,
    );
}

/// A random layer: codes, zero points, bias, multipliers.
struct Problem {
    layer: Int8Layer,
    x: Vec<u32>,
    w: Vec<u32>,
    w_zero: Option<Vec<i32>>,
    bias: Option<Vec<i32>>,
    mults: Vec<QuantizedMultiplier>,
    quant: OutputQuant,
}

fn problem(label: &str, m: usize, n: usize, k: usize, variant: usize) -> Problem {
    let mut r = rng(seed_for(label));
    // Activations: asymmetric uint8, signed int8 or restricted, with a zero point inside.
    let x_qmin = [0, -128, -127][variant % 3];
    let w_qmin = [-127, -128, 0][variant % 3];
    let codes = |r: &mut rand::rngs::StdRng, len: usize, qmin: i32| -> Vec<u32> {
        let span = if qmin == -127 { 255 } else { 256 };
        pack::pack(
            &(0..len)
                .map(|_| r.random_range(0..span))
                .collect::<Vec<u32>>(),
            8,
        )
    };
    let x = codes(&mut r, m * k, x_qmin);
    let w = codes(&mut r, n * k, w_qmin);
    let x_zero = x_qmin + r.random_range(0..255);
    let w_zero = (w_qmin == 0).then(|| (0..n).map(|_| r.random_range(0..256)).collect());
    let bias = variant.is_multiple_of(2).then(|| {
        (0..n)
            .map(|_| r.random_range(-(1 << 20)..(1 << 20)))
            .collect()
    });
    // Per-channel multipliers of a plausible size (s_in·s_w/s_out ~ 1e-4 .. 1e-2), or one.
    let count = if variant % 4 < 2 { n } else { 1 };
    let mults = (0..count)
        .map(|_| QuantizedMultiplier::from_real(10f64.powf(r.random_range(-4.0..-2.0))).unwrap())
        .collect();
    let quant = [
        OutputQuant {
            zero: 3,
            qmin: -128,
            qmax: 127,
        },
        OutputQuant {
            zero: 120,
            qmin: 0,
            qmax: 255,
        },
        OutputQuant {
            zero: 0,
            qmin: -127,
            qmax: 127,
        },
    ][variant % 3];
    Problem {
        layer: Int8Layer {
            m,
            n,
            k,
            x_qmin,
            x_zero,
            w_qmin,
        },
        x,
        w,
        w_zero,
        bias,
        mults,
        quant,
    }
}

/// GPU accumulators and requantized codes against the CPU (and the CPU against its i64
/// reference), all bit-exact.
fn case(
    ctx: &Context,
    m: usize,
    n: usize,
    k: usize,
    variant: usize,
    path: DotPath,
) -> Result<(), String> {
    let label = format!("int8_matmul(m={m}, n={n}, k={k}, variant={variant}, {path:?})");
    let p = problem(&format!("{m} {n} {k} {variant}"), m, n, k, variant);
    let label = format!("{label} {:?}", p.layer);
    let (wz, b) = (p.w_zero.as_deref(), p.bias.as_deref());
    let reference = int8_accumulators_reference(&p.layer, &p.x, &p.w, wz, b)
        .map_err(|e| format!("{label}: {e}"))?;
    let mut acc = vec![0i32; m * n];
    ci::int8_matmul(&p.layer, &p.x, &p.w, wz, b, Int8Out::Accumulators(&mut acc))
        .map_err(|e| format!("{label}: cpu: {e}"))?;
    if acc != reference {
        let e = (0..acc.len())
            .find(|&e| acc[e] != reference[e])
            .unwrap_or(0);
        return Err(format!(
            "{label}: cpu accumulator {e} = {}, reference {}",
            acc[e], reference[e]
        ));
    }
    let mut codes = vec![0u32; pack::packed_words(m * n, 8)];
    let out = Int8Out::Requantized {
        y: &mut codes,
        multipliers: &p.mults,
        quant: p.quant,
    };
    ci::int8_matmul(&p.layer, &p.x, &p.w, wz, b, out).map_err(|e| format!("{label}: cpu: {e}"))?;
    for e in 0..m * n {
        let mq = p.mults[if p.mults.len() == 1 { 0 } else { e % n }];
        let q = wgquant::requant::requantize(
            reference[e],
            mq,
            p.quant.zero,
            p.quant.qmin,
            p.quant.qmax,
        );
        if pack::get_code(&codes, e, 8) as i32 + p.quant.qmin != q {
            return Err(format!(
                "{label}: cpu output {e} differs from requantize(reference)"
            ));
        }
    }

    let g = |e: wgquant::Error| format!("{label}: gpu: {e}");
    let gx = GpuTensor::from_u32(ctx, &p.x, &[p.x.len()]).map_err(g)?;
    let gw = GpuTensor::from_u32(ctx, &p.w, &[p.w.len()]).map_err(g)?;
    let gz = wz
        .map(|z| GpuTensor::from_i32(ctx, z, &[n]))
        .transpose()
        .map_err(g)?;
    let gb = b
        .map(|v| GpuTensor::from_i32(ctx, v, &[n]))
        .transpose()
        .map_err(g)?;
    let gm = GpuTensor::from_i32(ctx, &words(&p.mults), &[2 * p.mults.len()]).map_err(g)?;
    let gacc = Guarded::new(ctx, 7, m * n, ElemType::I32).map_err(g)?;
    let accs = GpuInt8Out::Accumulators(&gacc.view);
    gi::int8_matmul(
        ctx,
        &p.layer,
        &gx,
        &gw,
        gz.as_ref(),
        gb.as_ref(),
        accs,
        path,
    )
    .map_err(g)?;
    let got = gacc.check(ctx, &label, &[0..m * n], Some(bytemuck::cast_slice(&acc)))?;
    if let Some(e) = (0..m * n).find(|&e| got[e] as i32 != acc[e]) {
        return Err(format!(
            "{label}: gpu accumulator {e} = {}, cpu {}",
            got[e] as i32, acc[e]
        ));
    }
    let gy = Guarded::new(ctx, 2, codes.len(), ElemType::U32).map_err(g)?;
    let req = GpuInt8Out::Requantized {
        y: &gy.view,
        multipliers: &gm,
        quant: p.quant,
    };
    gi::int8_matmul(ctx, &p.layer, &gx, &gw, gz.as_ref(), gb.as_ref(), req, path).map_err(g)?;
    let got = gy.check(ctx, &label, &[0..codes.len()], Some(&codes))?;
    common::check_words_equal(&label, "packed outputs", &codes, &got)
}

const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (1, 7, 67),
    (3, 33, 64),
    (1, 130, 257),
    (3, 31, 5),
    (17, 9, 200),
    (64, 70, 129),
    (5, 64, 4099),
];

#[test]
fn int8_matmul_is_bit_exact_on_both_dot_paths() {
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let mut failures = Vec::new();
    let mut cases = 0;
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        for path in [DotPath::Dot4, DotPath::Scalar] {
            for variant in [i, i + 1] {
                cases += 1;
                if let Err(e) = case(ctx, m, n, k, variant, path) {
                    failures.push(e);
                }
            }
        }
    }
    finish(
        "int8_matmul_is_bit_exact_on_both_dot_paths",
        cases,
        failures,
    );
}

#[test]
fn int8_weights_larger_than_a_binding_are_chunked() {
    let Some((base, _serial)) = device() else {
        return;
    };
    // 4 KiB windows: W [64, 300] (19 KB) takes 5 row chunks; 3 workgroups per dimension fold.
    let ctx = base.with_work_limits(WorkLimits {
        max_binding_bytes: 4096 + 256,
        max_workgroups_per_dim: 3,
    });
    let mut failures = Vec::new();
    let mut cases = 0;
    for (m, n, k, variant) in [(2, 64, 300, 0), (3, 64, 301, 1), (2, 60, 255, 2)] {
        cases += 1;
        if let Err(e) = case(&ctx, m, n, k, variant, DotPath::Auto) {
            failures.push(e);
        }
    }
    // Packed outputs of a chunked W with n not divisible by 4 would share words across chunks.
    let p = problem("chunk odd n", 2, 63, 300, 0);
    let gx = GpuTensor::from_u32(&ctx, &p.x, &[p.x.len()]).unwrap();
    let gw = GpuTensor::from_u32(&ctx, &p.w, &[p.w.len()]).unwrap();
    let gm = GpuTensor::from_i32(&ctx, &words(&p.mults), &[2 * p.mults.len()]).unwrap();
    let gy = GpuTensor::zeros(&ctx, &[pack::packed_words(2 * 63, 8)], ElemType::U32).unwrap();
    let out = GpuInt8Out::Requantized {
        y: &gy,
        multipliers: &gm,
        quant: p.quant,
    };
    if gi::int8_matmul(&ctx, &p.layer, &gx, &gw, None, None, out, DotPath::Auto).is_ok() {
        failures.push("chunked W with n = 63 and packed outputs was accepted".into());
    }
    finish(
        "int8_weights_larger_than_a_binding_are_chunked",
        cases + 1,
        failures,
    );
}

/// The integer layer built from float data approximates the float product: x asymmetric
/// uint8 per tensor, W int8 symmetric per channel, bias int32 at s_x·s_w, output int8 with a
/// calibrated scale. The bound is int8 quantization noise: three roundings of relative size
/// ~1/255 each give NMSE ≈ 3·(1/255)²/12 ≈ 4e-6 relative to the range; 1e-3 is generous and
/// still fails for a wrong zero point or multiplier (which cost ≳ 1e-2).
#[test]
fn full_integer_layer_approximates_the_float_layer() {
    use wgquant::affine::{AffineMode, AffineScheme};
    let Some((ctx, _serial)) = device() else {
        return;
    };
    let (m, n, k) = (4, 48, 96);
    let seed = seed_for("float end to end");
    let x = common::generate(common::Dist::Normal, m * k, seed);
    let w = common::generate(common::Dist::Laplace, n * k, seed ^ 1);
    let bias = common::generate(common::Dist::Normal, n, seed ^ 2);
    let sx = AffineScheme::new(8, AffineMode::Asymmetric).unwrap();
    let sw = AffineScheme::new(8, AffineMode::SymmetricRestricted).unwrap();
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (s_x, z_x) = sx.params_from_range(lo, hi);
    let xq: Vec<u32> = x
        .iter()
        .map(|&v| (wgquant::affine::quantize_code(v, s_x, z_x, 0, 255)) as u32)
        .collect();
    let mut s_w = Vec::new();
    let mut wq = Vec::new();
    for row in w.chunks(k) {
        let a = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (s, _) = sw.params_from_range(-a, a);
        s_w.push(s);
        wq.extend(
            row.iter()
                .map(|&v| (wgquant::affine::quantize_code(v, s, 0, -127, 127) + 127) as u32),
        );
    }
    let y: Vec<f32> = (0..m * n)
        .map(|e| {
            let (i, r) = (e / n, e % n);
            bias[r] + (0..k).map(|kk| x[i * k + kk] * w[r * k + kk]).sum::<f32>()
        })
        .collect();
    let ylo = y.iter().copied().fold(f32::INFINITY, f32::min);
    let yhi = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let so = AffineScheme::new(8, AffineMode::Asymmetric).unwrap();
    let (s_y, z_y) = so.params_from_range(ylo, yhi);
    let bias_q: Vec<i32> = (0..n)
        .map(|r| (f64::from(bias[r]) / (f64::from(s_x) * f64::from(s_w[r]))).round() as i32)
        .collect();
    let mults: Vec<QuantizedMultiplier> = s_w
        .iter()
        .map(|&s| QuantizedMultiplier::for_scales(s_x, s, s_y).unwrap())
        .collect();
    let layer = Int8Layer {
        m,
        n,
        k,
        x_qmin: 0,
        x_zero: z_x,
        w_qmin: -127,
    };
    let quant = OutputQuant {
        zero: z_y,
        qmin: 0,
        qmax: 255,
    };
    let gx =
        GpuTensor::from_u32(ctx, &pack::pack(&xq, 8), &[pack::packed_words(m * k, 8)]).unwrap();
    let gw =
        GpuTensor::from_u32(ctx, &pack::pack(&wq, 8), &[pack::packed_words(n * k, 8)]).unwrap();
    let gb = GpuTensor::from_i32(ctx, &bias_q, &[n]).unwrap();
    let gm = GpuTensor::from_i32(ctx, &words(&mults), &[2 * n]).unwrap();
    let gy = common::poisoned(ctx, &[pack::packed_words(m * n, 8)], ElemType::U32);
    let out = GpuInt8Out::Requantized {
        y: &gy,
        multipliers: &gm,
        quant,
    };
    gi::int8_matmul(ctx, &layer, &gx, &gw, None, Some(&gb), out, DotPath::Auto).unwrap();
    let codes = gy.to_u32(ctx).unwrap();
    let yhat: Vec<f32> = (0..m * n)
        .map(|e| (pack::get_code(&codes, e, 8) as i32 - z_y) as f32 * s_y)
        .collect();
    common::check_nmse(
        "full integer layer",
        "dequantized output",
        &y,
        &yhat,
        1e-3,
        "1e-3",
    )
    .unwrap();
}
