//! WEQ of weights, the GPU's histogram form against the exact CPU algorithm, at 1M and 16M
//! Laplace weights and 4 bits, per tensor. Throughput in bytes of input. Each result is
//! checked before timing: the GPU's S (evaluated exactly on the data) within 0.1% of the
//! exact algorithm's, so a failed dispatch cannot pass as a fast one. Also the activation
//! quantizer's calibration (histogram and (h, o) sweep) on ReLU batches, its record checked
//! equal to the CPU twin's first.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_distr::{Distribution, Exp1};
use wgquant::cpu::weq_exact::partition_entropy;
use wgquant::format::{Encoding, Granularity};
use wgquant::gpu::Context;
use wgquant::quant::Backend;
use wgquant::quant::weq::{self, WeqConfig, activation};

fn laplace(n: usize) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(0x3E9);
    (0..n)
        .map(|_| {
            let a: f32 = Exp1.sample(&mut r);
            let b: f32 = Exp1.sample(&mut r);
            0.02 * (a - b)
        })
        .collect()
}

fn thresholds(out: &weq::WeqOutput) -> &[f32] {
    match &out.tensor.encoding {
        Encoding::Codebook {
            thresholds: Some(t),
            ..
        } => t,
        _ => panic!("WEQ gives thresholds"),
    }
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter (llvmpipe is fine)");
    eprintln!("weq bench on {}", ctx.adapter_summary());
    let cfg = WeqConfig {
        bits: 4,
        granularity: Granularity::Tensor,
    };
    let mut group = c.benchmark_group("weq");
    group.sample_size(10);
    for n in [1usize << 20, 1 << 24] {
        let x = laplace(n);
        let gpu = weq::solve(&Backend::Gpu(&ctx), "x", &x, &[n], &cfg).expect("gpu weq");
        let cpu = weq::solve_exact("x", &x, &[n], &cfg).expect("exact weq");
        let s_gpu = partition_entropy(&x, n, cfg.bits, thresholds(&gpu))[0];
        let s_cpu = cpu.entropy[0];
        assert!(
            s_gpu >= s_cpu * (1.0 - 1e-3),
            "GPU S {s_gpu} below exact {s_cpu} by more than 0.1%"
        );
        eprintln!(
            "n = {n}: S exact {s_cpu:.6e} ({} sweeps), GPU {s_gpu:.6e} ({} sweeps), ratio {:.7}",
            cpu.sweeps[0],
            gpu.sweeps[0],
            s_gpu / s_cpu
        );
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_function(format!("gpu_histogram/{n}"), |b| {
            b.iter(|| weq::solve(&Backend::Gpu(&ctx), "x", &x, &[n], &cfg).expect("gpu weq"))
        });
        group.bench_function(format!("cpu_histogram/{n}"), |b| {
            b.iter(|| weq::solve(&Backend::Cpu, "x", &x, &[n], &cfg).expect("cpu weq"))
        });
        group.bench_function(format!("cpu_exact/{n}"), |b| {
            b.iter(|| weq::solve_exact("x", &x, &[n], &cfg).expect("exact weq"))
        });
    }
    group.finish();
}

fn bench_activations(c: &mut Criterion) {
    let ctx = Context::new().expect("a GPU adapter (llvmpipe is fine)");
    let mut group = c.benchmark_group("weq_activation");
    group.sample_size(10);
    for n in [1usize << 20, 1 << 24] {
        let x: Vec<f32> = laplace(n).iter().map(|v| v.max(0.0)).collect();
        let gpu = activation::calibrate(&Backend::Gpu(&ctx), "x", &x, 4).expect("gpu");
        let cpu = activation::calibrate(&Backend::Cpu, "x", &x, 4).expect("cpu");
        assert_eq!(gpu.record, cpu.record, "GPU and CPU calibrations differ");
        group.throughput(Throughput::Bytes(4 * n as u64));
        group.bench_function(format!("gpu_calibrate/{n}"), |b| {
            b.iter(|| activation::calibrate(&Backend::Gpu(&ctx), "x", &x, 4).expect("gpu"))
        });
        group.bench_function(format!("cpu_calibrate/{n}"), |b| {
            b.iter(|| activation::calibrate(&Backend::Cpu, "x", &x, 4).expect("cpu"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_activations);
criterion_main!(benches);
