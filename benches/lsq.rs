//! The fused LSQ backward (v̂, ∂L/∂v and the per-channel ∂L/∂s, ∂L/∂β reductions), GPU vs CPU,
//! at 1M and 16M elements, beside the copy rooflines. Throughput counts bytes read plus
//! written: v and ∂L/∂v̂ in, ∂L/∂v and v̂ out, 16 bytes per element (the per-channel step
//! sums are negligible). Each line checks its result once before it is timed.

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgquant::cpu;
use wgquant::gpu::lsq::{LsqConfig, LsqGrads};
use wgquant::gpu::{self, ElemType, GpuTensor};

mod common;
use common::bench_checked;

/// Elements per channel (one step per output row of a weight).
const COLS: usize = 4096;

fn benches(c: &mut Criterion) {
    let ctx = common::context();
    let cfg = LsqConfig::new(4, true).expect("4-bit signed");
    for n in [1usize << 20, 1 << 24] {
        let rows = n / COLS;
        let mut rng = StdRng::seed_from_u64(n as u64);
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        let dy: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
        let step: Vec<f32> = (0..rows).map(|r| 0.1 + 0.01 * (r % 7) as f32).collect();
        let beta = vec![0f32; rows];
        let (mut dv, mut vh) = (vec![0f32; n], vec![0f32; n]);
        let want =
            cpu::lsq::lsq_backward(&cfg, &v, &dy, COLS, &step, &beta, &mut dv, &mut vh).unwrap();
        let (want_dv, want_vh) = (dv.clone(), vh.clone());

        let mut group = c.benchmark_group(format!("lsq_backward/{}M", n >> 20));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if n > 1 << 20 { 6 } else { 3 }))
            .sampling_mode(if n > 1 << 20 {
                SamplingMode::Flat
            } else {
                SamplingMode::Auto
            })
            .throughput(Throughput::Bytes(16 * n as u64));
        if let Some(ctx) = &ctx {
            // The rooflines move the same bytes: 2n words read and 2n written.
            common::gpu_copy_rooflines(&mut group, ctx, 2 * n);
            let up = |x: &[f32]| GpuTensor::from_f32(ctx, x, &[x.len()]).expect("upload");
            let (gv, gdy, gs, gb) = (up(&v), up(&dy), up(&step), up(&beta));
            let z = |len| GpuTensor::zeros(ctx, &[len], ElemType::F32).expect("allocate");
            let (gdv, gvh, ggs, ggb) = (z(n), z(n), z(rows), z(rows));
            let grads = LsqGrads {
                grad_vhat: &gdy,
                grad_v: &gdv,
                vhat: &gvh,
                grad_step: &ggs,
                grad_beta: &ggb,
            };
            let run = || {
                ctx.run("lsq_backward", |enc| {
                    gpu::lsq::encode_backward(ctx, enc, &cfg, &gv, COLS, &gs, &gb, &grads)
                })
                .expect("gpu/lsq_backward")
            };
            bench_checked(
                &mut group,
                "gpu/lsq_backward",
                || {
                    gdv.fill_bits(ctx, 0xffff_ffff).unwrap();
                    run();
                    // Straight-through gradients and v̂ are exact on llvmpipe; the step sums
                    // agree to f32 summation error (tree vs f64).
                    let (got_dv, got_vh) = (gdv.to_f32(ctx).unwrap(), gvh.to_f32(ctx).unwrap());
                    let mismatches = got_dv
                        .iter()
                        .zip(&want_dv)
                        .chain(got_vh.iter().zip(&want_vh))
                        .filter(|(a, b)| a != b)
                        .count();
                    assert!(
                        mismatches <= n / 100_000 + 1,
                        "gpu/lsq_backward: {mismatches} element mismatches"
                    );
                    for (g, w) in ggs.to_f32(ctx).unwrap().iter().zip(&want.step) {
                        assert!(
                            (g - w).abs() <= 1e-3 * w.abs().max(1e-3),
                            "step gradient {g} vs {w}"
                        );
                    }
                },
                run,
            );
        }
        common::cpu_copy_rooflines(&mut group, 2 * n);
        let (mut dv2, mut vh2) = (vec![0f32; n], vec![0f32; n]);
        bench_checked(
            &mut group,
            "cpu/lsq_backward",
            || {
                let (mut a, mut b) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                let g = cpu::lsq::lsq_backward(&cfg, &v, &dy, COLS, &step, &beta, &mut a, &mut b)
                    .unwrap();
                assert!(
                    a == want_dv && b == want_vh && g == want,
                    "cpu/lsq_backward is deterministic"
                );
            },
            || {
                cpu::lsq::lsq_backward(&cfg, &v, &dy, COLS, &step, &beta, &mut dv2, &mut vh2)
                    .unwrap();
            },
        );
        group.finish();
    }
}

criterion_group!(lsq, benches);
criterion_main!(lsq);
