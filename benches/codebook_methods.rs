//! The codebook methods' heavy steps, GPU against CPU at 16M elements: one x0 sweep of the
//! discretization search (16 candidates, one round: moments, reductions, select) and one
//! k-means iteration with 16 centroids (assignment, per-cluster sums, update). Throughput is
//! in bytes of weights read per step, beside the device's buffer-copy speed as the roofline.
//! Every GPU result is checked against the CPU before it is timed.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use wgquant::affine::AffineSegment;
use wgquant::cpu;
use wgquant::cpu::discretize::{Partition, SearchSpec, SearchState};
use wgquant::gpu::{self, Context, ElemType, GpuTensor};
use wgquant::quant::codebook;

const N: usize = 16 << 20;
const BITS: u32 = 4;

fn laplace(n: usize) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(2016);
    (0..n)
        .map(|_| {
            let (a, b): (f32, f32) = (Exp1.sample(&mut r), Exp1.sample(&mut r));
            a - b
        })
        .collect()
}

fn context() -> Option<Context> {
    // As the CLI does: lavapipe uses one thread unless told otherwise (see src/main.rs).
    if std::env::var_os("LP_NUM_THREADS").is_none()
        && let Ok(n) = std::thread::available_parallelism()
    {
        // SAFETY: set before the first device exists; nothing reads it concurrently.
        unsafe { std::env::set_var("LP_NUM_THREADS", n.get().to_string()) };
    }
    match Context::new() {
        Ok(c) => {
            eprintln!("bench device: {}", c.adapter_summary());
            Some(c)
        }
        Err(e) => {
            eprintln!("no GPU adapter ({e}); timing the CPU only");
            None
        }
    }
}

fn sweep(c: &mut Criterion) {
    let x = laplace(N);
    let ctx = context();
    let mut g = c.benchmark_group("x0_sweep_16_candidates");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Bytes((N * 4) as u64));
    for partition in [Partition::Linear, Partition::Exponential] {
        let spec = SearchSpec {
            partition,
            bits: BITS,
            candidates: 16,
            rounds: 1,
        };
        let ranges = cpu::minmax::group_ranges(&x, N).unwrap();
        let cpu_round = || {
            let mut states = vec![SearchState::INITIAL; 1];
            cpu::discretize::search_round(&x, N, &ranges, &mut states, &spec).unwrap()
        };
        let expected = cpu_round();
        if let Some(ctx) = &ctx {
            let input = GpuTensor::from_f32(ctx, &x, &[N]).unwrap();
            let (_, got) = gpu::discretize::search(ctx, &input, N, &spec).unwrap();
            // Checked before timing: correlations within f32 summation error of the CPU's.
            for (a, b) in got.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-4, "{partition:?}: gpu {a} cpu {b}");
            }
            g.bench_function(BenchmarkId::new("gpu", partition.short()), |b| {
                b.iter(|| gpu::discretize::search(ctx, &input, N, &spec).unwrap())
            });
        }
        g.bench_function(BenchmarkId::new("cpu", partition.short()), |b| {
            b.iter(cpu_round)
        });
    }
    g.finish();
}

fn kmeans_iteration(c: &mut Criterion) {
    let x = laplace(N);
    let ctx = context();
    let k = 1usize << BITS;
    let init: Vec<f32> = (0..k)
        .map(|j| -6.0 + 12.0 * j as f32 / (k - 1) as f32)
        .collect();
    let thresholds = codebook::midpoint_thresholds(&init, BITS);
    let seg = AffineSegment::codebook(N, N, BITS);
    let cpu_iteration = |codes: &mut Vec<u32>| {
        let mut centroids = init.clone();
        cpu::codebook_assign::codebook_assign(&x, codes, &thresholds, &[seg]).unwrap();
        let stats = cpu::kmeans::cluster_sums(&x, codes, BITS, None, None).unwrap();
        cpu::kmeans::update_centroids(&mut centroids, &stats);
        centroids
    };
    let mut codes = vec![0u32; N * BITS as usize / 32];
    let expected = cpu_iteration(&mut codes);
    let mut g = c.benchmark_group("kmeans_iteration_16_centroids");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes((N * 4) as u64));
    if let Some(ctx) = &ctx {
        let values = GpuTensor::from_f32(ctx, &x, &[N]).unwrap();
        let mut state =
            wgquant::quant::kmeans::KmeansState::new(ctx, N, BITS, &init, &thresholds).unwrap();
        ctx.run("bench", |enc| {
            state.encode_iteration(ctx, enc, &values, None, true)
        })
        .unwrap();
        let got = state.centroids.to_f32(ctx).unwrap();
        assert_eq!(
            state.codes.to_u32(ctx).unwrap(),
            codes,
            "assignments differ"
        );
        for (a, b) in got.iter().zip(&expected) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "centroid gpu {a} cpu {b}"
            );
        }
        g.bench_function("gpu", |b| {
            b.iter(|| {
                // The same iteration each time: reset the centroids and thresholds.
                state.centroids.write(ctx, &init).unwrap();
                state.thresholds.write(ctx, &thresholds).unwrap();
                ctx.run("bench", |enc| {
                    state.encode_iteration(ctx, enc, &values, None, true)
                })
                .unwrap();
                // Completion is part of the step: read the 16-byte status back.
                state.scratch.status.to_u32(ctx).unwrap()
            })
        });
        // The roofline: a device buffer copy of the same bytes.
        let dst = GpuTensor::zeros(ctx, &[N], ElemType::F32).unwrap();
        g.bench_function("gpu_buffer_copy_roofline", |b| {
            b.iter(|| {
                ctx.run("copy", |enc| {
                    enc.copy_buffer_to_buffer(values.buffer(), 0, dst.buffer(), 0, (N * 4) as u64);
                    Ok(())
                })
                .unwrap()
            })
        });
    }
    g.bench_function("cpu", |b| b.iter(|| cpu_iteration(&mut codes)));
    g.finish();
}

criterion_group!(benches, sweep, kmeans_iteration);
criterion_main!(benches);
