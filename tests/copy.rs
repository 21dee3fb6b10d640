//! The copy kernel against its CPU twin on awkward lengths, at the device's own limits and with
//! limits lowered so that it chunks into binding windows and folds its grid into 2-D.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgquant::gpu::{Context, ElemType, GpuTensor, WorkLimits};
use wgquant::{cpu, gpu};

/// A context, or `None` (after saying so) when no adapter exists. With `CI` set a missing
/// adapter fails the run instead of skipping.
fn context() -> Option<Context> {
    match Context::new() {
        Ok(ctx) => {
            println!("adapter: {}", ctx.adapter_summary());
            Some(ctx)
        }
        Err(e) if std::env::var_os("CI").is_some() => panic!("no GPU adapter under CI: {e}"),
        Err(e) => {
            println!("SKIPPED: no GPU adapter: {e}");
            None
        }
    }
}

/// Copies `n` random words on the GPU into a poisoned output, between sentinel words, and
/// compares with the CPU twin.
fn check(ctx: &Context, n: usize, seed: u64) {
    let label = format!("copy(n={n}, limits={:?})", ctx.work_limits());
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<u32> = (0..n).map(|_| rng.random()).collect();
    let mut want = vec![0u32; n];
    cpu::copy::copy(&data, &mut want).unwrap();
    let mut reference = vec![0u32; n];
    cpu::copy::copy_reference(&data, &mut reference).unwrap();
    assert_eq!(want, reference, "{label}: CPU copy vs copy_reference");

    // Sentinels on both sides of the output (offset by one word, so windows are unaligned).
    const POISON: u32 = 0xdead_beef;
    const SENTINEL: u32 = 0x5e47_1e11;
    let src = GpuTensor::from_u32(ctx, &data, &[n]).unwrap();
    let whole = GpuTensor::zeros(ctx, &[n + 2], ElemType::U32).unwrap();
    whole.fill_bits(ctx, SENTINEL).unwrap();
    let dst = whole.slice(1, &[n]).unwrap();
    dst.fill_bits(ctx, POISON).unwrap();
    gpu::copy::copy(ctx, &src, &dst).unwrap_or_else(|e| panic!("{label}: {e}"));

    let got = whole.to_u32(ctx).unwrap();
    assert_eq!(got[0], SENTINEL, "{label}: wrote before the output");
    assert_eq!(got[n + 1], SENTINEL, "{label}: wrote past the output");
    if let Some(i) = (0..n).find(|&i| got[i + 1] != want[i]) {
        panic!(
            "{label}: word {i} is {:#x}, expected {:#x}",
            got[i + 1],
            want[i]
        );
    }
}

#[test]
fn copy_matches_cpu() {
    let Some(ctx) = context() else { return };
    for (seed, n) in [1, 257, (1 << 20) + 3].into_iter().enumerate() {
        check(&ctx, n, seed as u64);
    }
}

#[test]
fn copy_chunks_and_folds_under_low_limits() {
    let Some(ctx) = context() else { return };
    let small = ctx.with_work_limits(WorkLimits {
        max_binding_bytes: 4096,
        max_workgroups_per_dim: 7,
    });
    // 4096-byte bindings split 2^20+3 words into ~1,000 windows (one workgroup each). A 64 KiB
    // binding needs 16 workgroups per chunk, which 7 per row fold into a 2-D grid.
    for (seed, n) in [1, 257, (1 << 20) + 3].into_iter().enumerate() {
        check(&small, n, 100 + seed as u64);
    }
    let folded = ctx.with_work_limits(WorkLimits {
        max_binding_bytes: 1 << 16,
        max_workgroups_per_dim: 7,
    });
    for (seed, n) in [257, 40_000, (1 << 20) + 3].into_iter().enumerate() {
        check(&folded, n, 200 + seed as u64);
    }
}

#[test]
fn copy_rejects_bad_lengths() {
    let Some(ctx) = context() else { return };
    let a = GpuTensor::zeros(&ctx, &[8], ElemType::U32).unwrap();
    let b = GpuTensor::zeros(&ctx, &[9], ElemType::U32).unwrap();
    assert!(gpu::copy::copy(&ctx, &a, &b).is_err());
    let f = GpuTensor::zeros(&ctx, &[8], ElemType::F32).unwrap();
    assert!(gpu::copy::copy(&ctx, &a, &f).is_err());
    assert!(gpu::copy::copy(&ctx, &a, &a).is_err());
}

#[test]
fn cpu_copy_rejects_bad_lengths() {
    assert!(cpu::copy::copy(&[1, 2], &mut [0; 3]).is_err());
    assert!(cpu::copy::copy_reference(&[1, 2], &mut [0; 3]).is_err());
}
