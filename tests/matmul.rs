//! The f32 matmul kernel on GPU against its CPU twin: every transpose combination, odd
//! shapes, bias, accumulation, row-chunked weights, outputs poisoned first.

mod common;

use common::{Dist, Guarded, as_f32, finish, generate, gpu, seed_for};
use wgquant::cpu::matmul::{Mat, matmul as cpu_matmul};
use wgquant::gpu::matmul::{Operand, matmul as gpu_matmul};
use wgquant::gpu::{Context, ElemType, GpuTensor, WorkLimits};

/// Per-element bound relative to Σ_k |a_ik·b_kj|: both sides sum the same products in the
/// same order, but the GPU may fuse multiply-adds, so each of the k roundings may differ by
/// an ULP: k·2⁻²³ covers it; 4·k·2⁻²⁴ with a floor of 1e-6 keeps a margin.
fn dot_bound(k: usize) -> f64 {
    (4.0 * k as f64 * f64::from(f32::EPSILON) / 2.0).max(1e-6)
}

#[allow(clippy::too_many_arguments)]
fn case(
    ctx: &Context,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    bias: bool,
    acc: bool,
) -> Result<(), String> {
    let label = format!("matmul(m={m}, k={k}, n={n}, ta={ta}, tb={tb}, bias={bias}, acc={acc})");
    let seed = seed_for(&label);
    let label = format!("{label} seed={seed:#x}");
    let a = generate(Dist::Normal, m * k, seed);
    let b = generate(Dist::Laplace, k * n, seed ^ 1);
    let bv = generate(Dist::Normal, n, seed ^ 2);
    let c0 = generate(Dist::Normal, m * n, seed ^ 3);
    let (ar, ac) = if ta { (k, m) } else { (m, k) };
    let (br, bc) = if tb { (n, k) } else { (k, n) };
    let mut want = c0.clone();
    cpu_matmul(
        Mat {
            data: &a,
            rows: ar,
            cols: ac,
            transposed: ta,
        },
        Mat {
            data: &b,
            rows: br,
            cols: bc,
            transposed: tb,
        },
        bias.then_some(bv.as_slice()),
        &mut want,
        acc,
    )
    .map_err(|e| format!("{label}: cpu: {e}"))?;
    let g = |e: wgquant::Error| format!("{label}: gpu: {e}");
    let ga = GpuTensor::from_f32(ctx, &a, &[ar, ac]).map_err(g)?;
    let gb = GpuTensor::from_f32(ctx, &b, &[br, bc]).map_err(g)?;
    let gbias = GpuTensor::from_f32(ctx, &bv, &[n]).map_err(g)?;
    let out = if acc {
        Guarded::with_data(ctx, 9, &c0).map_err(g)?
    } else {
        Guarded::new(ctx, 9, m * n, ElemType::F32).map_err(g)?
    };
    let c = out.view.reshape(&[m, n]).map_err(g)?;
    let oa = Operand {
        tensor: &ga,
        transposed: ta,
    };
    let ob = Operand {
        tensor: &gb,
        transposed: tb,
    };
    gpu_matmul(ctx, oa, ob, bias.then_some(&gbias), &c, acc).map_err(g)?;
    let got = as_f32(&out.check(ctx, &label, &[0..m * n], None)?);
    let bound = dot_bound(k);
    for i in 0..m {
        for j in 0..n {
            let at = |x: &[f32], r: usize, cc: usize, cols: usize| x[r * cols + cc];
            let scale: f64 = (0..k)
                .map(|kk| {
                    let av = if ta {
                        at(&a, kk, i, m)
                    } else {
                        at(&a, i, kk, k)
                    };
                    let bw = if tb {
                        at(&b, j, kk, k)
                    } else {
                        at(&b, kk, j, n)
                    };
                    f64::from(av.abs()) * f64::from(bw.abs())
                })
                .sum::<f64>()
                + if bias { f64::from(bv[j].abs()) } else { 0.0 }
                + if acc {
                    f64::from(c0[i * n + j].abs())
                } else {
                    0.0
                };
            let (x, y) = (f64::from(got[i * n + j]), f64::from(want[i * n + j]));
            if !x.is_finite() || (x - y).abs() > bound * scale.max(f64::MIN_POSITIVE) {
                return Err(format!(
                    "{label}: C[{i},{j}] gpu {x} cpu {y} (bound {} × {scale})",
                    bound
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn matmul_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let mut failures = Vec::new();
    let mut cases = 0;
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 64, 10),
        (3, 7, 5),
        (63, 65, 130),
        (64, 16, 64),
        (130, 33, 1),
        (200, 300, 70),
    ] {
        for ta in [false, true] {
            for tb in [false, true] {
                for (bias, acc) in [(false, false), (true, false), (true, true)] {
                    cases += 1;
                    if let Err(e) = case(ctx, m, k, n, ta, tb, bias, acc) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    finish("matmul_matches_cpu", cases, failures);
}

#[test]
fn transposed_weights_larger_than_a_binding_are_chunked() {
    let Some(base) = gpu() else { return };
    // 4 KiB windows hold 15 rows of 67 floats: 129 rows of B take 9 chunks; 7 workgroups per
    // dimension fold the grid.
    let ctx = base.with_work_limits(WorkLimits {
        max_binding_bytes: 4096 + 256,
        max_workgroups_per_dim: 7,
    });
    let mut failures = Vec::new();
    for &(m, k, n) in &[(1, 67, 129), (5, 67, 129)] {
        if let Err(e) = case(&ctx, m, k, n, false, true, true, false) {
            failures.push(e);
        }
    }
    finish(
        "transposed_weights_larger_than_a_binding_are_chunked",
        2,
        failures,
    );
}

#[test]
fn shape_errors_are_reported() {
    let Some(ctx) = gpu() else { return };
    let a = GpuTensor::zeros(ctx, &[3, 4], ElemType::F32).unwrap();
    let b = GpuTensor::zeros(ctx, &[5, 6], ElemType::F32).unwrap();
    let c = GpuTensor::zeros(ctx, &[3, 6], ElemType::F32).unwrap();
    assert!(gpu_matmul(ctx, Operand::plain(&a), Operand::plain(&b), None, &c, false).is_err());
    let mut out = vec![0f32; 18];
    let (x, y) = ([0.0f32; 12], [0.0f32; 30]);
    let a = Mat {
        data: &x,
        rows: 3,
        cols: 4,
        transposed: false,
    };
    let b = Mat {
        data: &y,
        rows: 5,
        cols: 6,
        transposed: false,
    };
    assert!(cpu_matmul(a, b, None, &mut out, false).is_err());
}
