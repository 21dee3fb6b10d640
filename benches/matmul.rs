//! The dequantizing matmul at LLM shapes (ALGORITHMS.md §7): W [N, K] of 4096×4096 and
//! 11008×4096 as int4 group-128, int8 per-channel, a 4-bit codebook and dense f32 (the
//! baseline, on the same kernel), x with M = 1, 16, 512 rows; GPU and CPU twin side by side,
//! with the copy shader (benches/common) as the device roofline. Throughput counts the bytes of W as stored
//! (codes, scales, levels), so criterion reports GB/s of W; `wgquant bench matmul` prints the
//! same problems as one table with GFLOP/s and the ratios.
//!
//! Every GPU line is checked against the CPU twin before it is timed, and the CPU twin
//! against `qmatmul_reference` on the first rows, so a failed dispatch cannot pass as a fast
//! figure. `WGQUANT_BENCH_QUICK=1` keeps to 4096×4096 and M ≤ 16.

mod common;

use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use wgquant::bench::matmul::{self, DeviceWeight, HostWeight, WeightFormat};
use wgquant::cpu::qmatmul as cq;
use wgquant::gpu::{ElemType, GpuTensor};

fn quick() -> bool {
    std::env::var_os("WGQUANT_BENCH_QUICK").is_some()
}

/// The CPU twin against its plain reference on the first rows of x (the reference is slow).
fn check_cpu(label: &str, x: &[f32], m: usize, w: &cq::QWeight<'_>, got: &[f32]) {
    let rows = m.min(2);
    let (n, k) = (w.layout.rows, w.layout.cols);
    let mut want = vec![0f32; rows * n];
    cq::qmatmul_reference(&x[..rows * k], rows, w, None, &mut want).expect("the reference runs");
    matmul::check(label, &want, &got[..rows * n]).unwrap_or_else(|e| panic!("{e}"));
}

fn benches(c: &mut Criterion) {
    let ctx = common::context();
    if let Some(ctx) = &ctx {
        // The roofline: 64 MiB copied, counted as bytes read plus written.
        let words = 16 << 20;
        let mut group = c.benchmark_group("matmul/roofline");
        group
            .sample_size(10)
            .throughput(Throughput::Bytes(2 * 4 * words as u64));
        common::gpu_copy_rooflines(&mut group, ctx, words);
        group.finish();
    }
    let shapes: &[(usize, usize)] = if quick() {
        &matmul::SHAPES[..1]
    } else {
        &matmul::SHAPES
    };
    let batches: &[usize] = if quick() {
        &matmul::BATCHES[..2]
    } else {
        &matmul::BATCHES
    };
    let mut formats = vec![WeightFormat::F32];
    formats.extend(WeightFormat::QUANTIZED);
    for &(n, k) in shapes {
        let data = matmul::normal(n * k, 0.02, (n * 31 + k) as u64);
        for &m in batches {
            let x = matmul::normal(m * k, 1.0, (m * 7 + k) as u64);
            let mut group = c.benchmark_group(format!("matmul/{n}x{k}/m{m}"));
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(100))
                .measurement_time(Duration::from_secs(2));
            for &format in &formats {
                let w = HostWeight::new(format, &data, n, k).expect("quantize W");
                let cw = w.cpu(n, k).expect("a CPU view of W");
                let label = format!("{n}x{k} m={m} {}", format.name());
                let mut want = vec![0f32; m * n];
                cq::qmatmul(&x, m, &cw, None, &mut want).expect("the CPU twin runs");
                check_cpu(&label, &x, m, &cw, &want);
                group.throughput(Throughput::Bytes(w.bytes()));
                if let Some(ctx) = &ctx {
                    let dw = DeviceWeight::upload(ctx, &w, n, k).expect("upload W");
                    let gx = GpuTensor::from_f32(ctx, &x, &[m, k]).expect("upload x");
                    let gy = GpuTensor::zeros(ctx, &[m, n], ElemType::F32).expect("allocate y");
                    gy.fill_bits(ctx, 0x7FC0_DEAD).expect("poison y");
                    matmul::run_gpu(ctx, &gx, &dw, &gy).expect("the GPU runs");
                    let got = gy.to_f32(ctx).expect("read y back");
                    matmul::check(&label, &want, &got).unwrap_or_else(|e| panic!("{e}"));
                    group.bench_function(format!("gpu/{}", format.name()), |b| {
                        b.iter(|| matmul::run_gpu(ctx, &gx, &dw, &gy).expect("gpu run"))
                    });
                }
                let mut y = vec![0f32; m * n];
                group.bench_function(format!("cpu/{}", format.name()), |b| {
                    b.iter(|| cq::qmatmul(&x, m, &cw, None, &mut y).expect("cpu run"))
                });
            }
            group.finish();
        }
    }
}

criterion_group!(matmul_benches, benches);
criterion_main!(matmul_benches);
