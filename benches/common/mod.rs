//! Shared by the criterion benches: the device context (every lavapipe thread), a bench that
//! checks its result once before it is timed, and the copy rooflines each kernel is read
//! against.

#![allow(dead_code)]

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use wgquant::gpu::{Context, ElemType, GpuTensor};
use wgquant::{cpu, gpu};

/// The GPU for the benches, or `None` (and a note) without one. lavapipe computes on one
/// thread unless `LP_NUM_THREADS` says otherwise, so it is set to every core first (as the CLI
/// does); a user's own setting is kept.
pub fn context() -> Option<Context> {
    if std::env::var_os("LP_NUM_THREADS").is_none()
        && let Ok(n) = std::thread::available_parallelism()
    {
        // SAFETY: called before the benches start any thread that reads the environment.
        unsafe { std::env::set_var("LP_NUM_THREADS", n.get().to_string()) };
    }
    match Context::new() {
        Ok(ctx) => {
            eprintln!("GPU benches on {}", ctx.adapter_summary());
            Some(ctx)
        }
        Err(e) => {
            eprintln!("GPU benches skipped: {e}");
            None
        }
    }
}

/// Panics at the first word where `got` and `want` differ.
pub fn check_exact(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}: word {i} is {:#x}, expected {:#x}", got[i], want[i]);
    }
}

/// Runs `check` on the first call only, then times `run`.
pub fn bench_checked(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mut check: impl FnMut(),
    mut run: impl FnMut(),
) {
    let mut checked = false;
    group.bench_function(name, |b| {
        if !checked {
            check();
            checked = true;
        }
        b.iter(&mut run)
    });
}

/// The device rooflines for moving `words` u32 words (read once, written once): the
/// queue's buffer copy and the trivial copy shader, each checked before timing.
pub fn gpu_copy_rooflines(group: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context, words: usize) {
    let data: Vec<u32> = (0..words as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let x = GpuTensor::from_u32(ctx, &data, &[words]).expect("upload the copy input");
    let y = GpuTensor::zeros(ctx, &[words], ElemType::U32).expect("allocate the copy output");
    let bytes = x.byte_len();
    let check = |what: &str| {
        let got: Vec<u32> = y
            .download(ctx)
            .unwrap_or_else(|e| panic!("{what}: read back: {e}"));
        check_exact(what, &got, &data);
    };
    let poison = || y.fill_bits(ctx, 0xffff_ffff).expect("poison the output");
    let buffer_copy = || {
        ctx.run("buffer_copy", |enc| {
            enc.copy_buffer_to_buffer(x.buffer(), x.offset(), y.buffer(), y.offset(), bytes);
            Ok(())
        })
        .expect("gpu/buffer_copy")
    };
    bench_checked(
        group,
        "gpu/buffer_copy",
        || {
            poison();
            buffer_copy();
            check("gpu/buffer_copy");
        },
        buffer_copy,
    );
    let copy_shader = || gpu::copy::copy(ctx, &x, &y).expect("gpu/copy_shader");
    bench_checked(
        group,
        "gpu/copy_shader",
        || {
            poison();
            copy_shader();
            check("gpu/copy_shader");
        },
        copy_shader,
    );
}

/// The host rooflines for `words` u32 words: one thread's memcpy and the parallel copy.
pub fn cpu_copy_rooflines(group: &mut BenchmarkGroup<'_, WallTime>, words: usize) {
    let data: Vec<u32> = (0..words as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let mut out = vec![0u32; words];
    bench_checked(
        group,
        "cpu/memcpy_single_thread",
        || {
            let mut got = vec![u32::MAX; words];
            cpu::copy::copy_reference(&data, &mut got).unwrap();
            check_exact("cpu/memcpy_single_thread", &got, &data);
        },
        || cpu::copy::copy_reference(&data, &mut out).unwrap(),
    );
    let mut out2 = vec![0u32; words];
    bench_checked(
        group,
        "cpu/copy_parallel",
        || {
            let mut got = vec![u32::MAX; words];
            cpu::copy::copy(&data, &mut got).unwrap();
            check_exact("cpu/copy_parallel", &got, &data);
        },
        || cpu::copy::copy(&data, &mut out2).unwrap(),
    );
}
