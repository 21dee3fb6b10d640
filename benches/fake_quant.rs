//! Fake quantization next to the copy rooflines, GPU and CPU, at 1M, 16M and 64M f32
//! elements. Throughput counts bytes read plus bytes written, so a line reads in GB/s against
//! `buffer_copy`/`copy_shader` (device) and `memcpy_single_thread`/`copy_parallel` (host).
//!
//! Every line checks its result once before it is timed (a GPU readback against the CPU twin,
//! the CPU fast path against its reference), so a failed allocation or dispatch cannot pass as
//! an impossibly fast figure. GPU timings are record + submit + wait on device-resident data.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgquant::affine::{AffineMode, AffineScheme, AffineSegment};
use wgquant::gpu::{Context, GpuTensor};
use wgquant::{cpu, gpu};

mod common;
use common::{bench_checked, check_exact};

/// Elements per row: each row is one channel with its own scale.
const COLS: usize = 4096;
/// Tensor sizes in f32 elements.
const SIZES: [usize; 3] = [1 << 20, 1 << 24, 1 << 26];
/// The slow single-threaded reference is timed only at sizes up to this.
const REFERENCE_MAX: usize = 1 << 20;

/// A per-channel int4 symmetric problem: data, per-row scales and zero points, one segment.
struct Problem {
    x: Vec<f32>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    seg: AffineSegment,
}

impl Problem {
    fn new(n: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(n as u64);
        // Rows of different magnitudes, as in real weights.
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let row_gain = 1.0 + (i / COLS % 7) as f32;
                (rng.random::<f32>() * 2.0 - 1.0) * row_gain
            })
            .collect();
        let scheme = AffineScheme::new(4, AffineMode::Symmetric).unwrap();
        let (scale, zero) = x
            .chunks(COLS)
            .map(|row| {
                let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                scheme.params_from_range(lo, hi)
            })
            .unzip();
        let seg = AffineSegment {
            src: 0,
            dst: 0,
            len: n as u32,
            group_len: COLS as u32,
            group_phase: 0,
            param: 0,
            qmin: scheme.qmin(),
            qmax: scheme.qmax(),
            bits: scheme.bits,
        };
        Self {
            x,
            scale,
            zero,
            seg,
        }
    }
}

/// GPU fake quantization against the CPU twin: equal except where x/s lies within a tiny
/// distance of a rounding tie (GPU division may be off by a few ULP, DESIGN.md), and there
/// one step apart; such elements must be rare.
fn check_fake_quant(p: &Problem, got: &[f32], want: &[f32]) {
    let mut ties = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() {
            continue;
        }
        let s = p.scale[i / COLS];
        let v = p.x[i] / s;
        let near_tie = (v - v.floor() - 0.5).abs() < 1e-5 * v.abs().max(1.0);
        let one_step = ((g - w).abs() - s).abs() <= 1e-6 * s;
        assert!(
            near_tie && one_step,
            "gpu/fake_quant: element {i} (x/s = {v}) is {g}, CPU twin says {w}"
        );
        ties += 1;
    }
    let allowed = got.len() / 10_000 + 1;
    assert!(
        ties <= allowed,
        "gpu/fake_quant: {ties} tie mismatches (allowed {allowed})"
    );
    eprintln!(
        "gpu/fake_quant check: {ties} of {} differ at ties",
        got.len()
    );
}

fn gpu_benches(group: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context, p: &Problem, want: &[f32]) {
    let n = p.x.len();
    let shape = [n / COLS, COLS];
    let x = GpuTensor::from_f32(ctx, &p.x, &shape).expect("upload the input");
    let y = GpuTensor::zeros(ctx, &shape, gpu::ElemType::F32).expect("allocate the output");
    let scale = GpuTensor::from_f32(ctx, &p.scale, &[shape[0]]).expect("upload scales");
    let zero = GpuTensor::from_i32(ctx, &p.zero, &[shape[0]]).expect("upload zero points");
    let readback = |what: &str| -> Vec<u32> {
        y.download(ctx)
            .unwrap_or_else(|e| panic!("{what}: read back: {e}"))
    };
    let poison = || y.fill_bits(ctx, 0xffff_ffff).expect("poison the output");

    // The rooflines move the same bytes: n words read, n written.
    common::gpu_copy_rooflines(group, ctx, n);

    let segs = [p.seg];
    let fake_quant =
        || gpu::fake_quant::fake_quant(ctx, &x, &y, &scale, &zero, &segs).expect("gpu/fake_quant");
    bench_checked(
        group,
        "gpu/fake_quant",
        || {
            poison();
            fake_quant();
            let got: Vec<f32> = bytemuck::cast_vec(readback("gpu/fake_quant"));
            check_fake_quant(p, &got, want);
        },
        fake_quant,
    );
}

fn cpu_benches(group: &mut BenchmarkGroup<'_, WallTime>, p: &Problem, want: &[f32]) {
    let n = p.x.len();
    let segs = [p.seg];
    // Each check writes a fresh poisoned buffer; the timed runs reuse `words` and `out`.
    let poisoned_f32 = || vec![f32::NAN; n];
    let mut out = vec![0f32; n];

    common::cpu_copy_rooflines(group, n);

    bench_checked(
        group,
        "cpu/fake_quant",
        || {
            let mut got = poisoned_f32();
            cpu::fake_quant::fake_quant(&p.x, &mut got, &p.scale, &p.zero, &segs).unwrap();
            // Same numerics on the same host: the fast path equals the reference bit for bit.
            check_exact(
                "cpu/fake_quant",
                bytemuck::cast_slice(&got),
                bytemuck::cast_slice(want),
            );
        },
        || cpu::fake_quant::fake_quant(&p.x, &mut out, &p.scale, &p.zero, &segs).unwrap(),
    );

    if n <= REFERENCE_MAX {
        bench_checked(
            group,
            "cpu/fake_quant_reference",
            || {
                let mut got = poisoned_f32();
                cpu::fake_quant::fake_quant_reference(&p.x, &mut got, &p.scale, &p.zero, &segs)
                    .unwrap();
                check_exact(
                    "cpu/fake_quant_reference",
                    bytemuck::cast_slice(&got),
                    bytemuck::cast_slice(want),
                );
            },
            || {
                cpu::fake_quant::fake_quant_reference(&p.x, &mut out, &p.scale, &p.zero, &segs)
                    .unwrap()
            },
        );
    }
}

fn benches(c: &mut Criterion) {
    let ctx = common::context();
    for n in SIZES {
        let p = Problem::new(n);
        // The reference result every other line is checked against.
        let mut want = vec![f32::NAN; n];
        cpu::fake_quant::fake_quant_reference(&p.x, &mut want, &p.scale, &p.zero, &[p.seg])
            .unwrap();

        let mut group = c.benchmark_group(format!("{}M", n >> 20));
        // Ten samples; past 1M a software GPU takes a sizeable fraction of a second per run,
        // so samples of one fixed iteration count (flat) over a time that grows with size.
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if n >= 1 << 26 { 8 } else { 3 }))
            .sampling_mode(if n > 1 << 20 {
                SamplingMode::Flat
            } else {
                SamplingMode::Auto
            })
            .throughput(Throughput::Bytes(2 * 4 * n as u64));
        if let Some(ctx) = &ctx {
            gpu_benches(&mut group, ctx, &p, &want);
        }
        cpu_benches(&mut group, &p, &want);
        group.finish();
    }
}

criterion_group!(fake_quant, benches);
criterion_main!(fake_quant);
