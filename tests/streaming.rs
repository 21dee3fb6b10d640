//! Streaming both ways: `dequantize` decoding in windows far smaller than a tensor (or a
//! group) gives the bytes of the unblocked decode for every method, on the CPU and on the GPU
//! (windows capped by a small storage binding); per-group tensors whose one row exceeds the
//! block are quantized in pieces of a row with the bytes of the unsplit run; `inspect` reports
//! a corrupt part without decoding.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use wgquant::checkpoint::dequantize::{DequantizeOptions, dequantize_file_with};
use wgquant::checkpoint::file::{OutTensor, write_atomic};
use wgquant::checkpoint::quantize::plan_file;
use wgquant::checkpoint::{self, QuantizeOptions};
use wgquant::gpu::context::WorkLimits;
use wgquant::quant::Backend;
use wgquant::quant::spec::MethodArgs;

/// The GL backend of software adapters panics when two threads hold its context for long
/// ("Could not lock adapter context"): this binary's GPU tests take turns.
static GPU_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gpu_turn() -> std::sync::MutexGuard<'static, ()> {
    GPU_TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn tensor(dtype: Dtype, shape: &[usize], salt: u64) -> OutTensor<'static> {
    common::hashed_tensor(dtype, shape, salt, 0.0)
}

/// Awkward shapes: rows that no block divides, a 3-D tensor, one long row per channel, a
/// 1-D bias (copied), in three dtypes; every last axis a multiple of 12 (3-bit groups of 12
/// end mid-word).
fn write_model(dir: &Path) -> PathBuf {
    let tensors = vec![
        ("a.weight".to_string(), tensor(Dtype::F32, &[37, 36], 1)),
        ("b.weight".to_string(), tensor(Dtype::BF16, &[5, 3, 24], 2)),
        ("c.weight".to_string(), tensor(Dtype::F16, &[3, 1764], 3)),
        ("d.bias".to_string(), tensor(Dtype::F32, &[37], 4)),
    ];
    let path = dir.join("model.safetensors");
    write_atomic(&path, &tensors, Default::default()).unwrap();
    path
}

fn args(scheme: &str, mode: Option<&str>, granularity: Option<&str>) -> MethodArgs {
    MethodArgs {
        scheme: Some(scheme.into()),
        mode: mode.map(Into::into),
        granularity: granularity.map(Into::into),
        ..Default::default()
    }
}

/// Every method, each as `label` and settings.
fn methods() -> Vec<(String, MethodArgs)> {
    let mut out = Vec::new();
    for bits in ["int3", "int4", "int8"] {
        for mode in ["symmetric", "asymmetric", "restricted"] {
            for g in ["tensor", "channel", "group:12"] {
                out.push((
                    format!("{bits} {mode} {g}"),
                    args(bits, Some(mode), Some(g)),
                ));
            }
        }
    }
    for (scheme, g) in [
        ("weq3", "tensor"),
        ("weq3", "channel"),
        ("weq4", "group:12"),
        ("lin3", "tensor"),
        ("lin4", "channel"),
        ("exp3", "tensor"),
        ("exp3", "channel"),
    ] {
        out.push((format!("{scheme} {g}"), args(scheme, None, Some(g))));
    }
    out.push(("dc".into(), args("dc", None, None)));
    out.push(("bf16 cast".into(), args("bf16", None, None)));
    out
}

fn dequantized(backend: &Backend<'_>, q: &Path, out: &Path, block_bytes: usize) -> Vec<u8> {
    dequantize_file_with(backend, q, out, &DequantizeOptions { block_bytes }).unwrap();
    std::fs::read(out).unwrap()
}

/// Blocks of 1, 33 and 40 f32 and 1 KiB: windows cut inside groups, across word boundaries
/// and across rows.
const TINY_BLOCKS: [usize; 4] = [4, 132, 160, 1024];

fn check_blocked_decode(backend: &Backend<'_>, label: &str, blocks: &[usize]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let mut failures = Vec::new();
    for (name, a) in methods() {
        let q = dir.path().join("q.safetensors");
        let opts = QuantizeOptions::with_defaults(a);
        checkpoint::quantize_file(&Backend::Cpu, &model, &q, &opts, None).unwrap();
        let whole = dequantized(backend, &q, &dir.path().join("whole.safetensors"), 1 << 30);
        for &block in blocks {
            let got = dequantized(backend, &q, &dir.path().join("blocked.safetensors"), block);
            if got != whole {
                failures.push(format!(
                    "{label} dequantize({name}, block_bytes {block}) differs"
                ));
            }
        }
    }
    failures
}

#[test]
fn blocked_decode_matches_the_whole_decode_on_the_cpu() {
    let failures = check_blocked_decode(&Backend::Cpu, "cpu", &TINY_BLOCKS);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn blocked_decode_matches_the_whole_decode_on_the_gpu() {
    let Some(ctx) = common::gpu() else { return };
    let _turn = gpu_turn();
    // One-element windows cost one submission each: too slow on software adapters.
    let mut failures = check_blocked_decode(&Backend::Gpu(ctx), "gpu", &TINY_BLOCKS[1..]);
    // A binding of 1 KiB caps every window whatever block is asked for.
    let small = ctx.with_work_limits(WorkLimits {
        max_binding_bytes: 1024,
        max_workgroups_per_dim: ctx.work_limits().max_workgroups_per_dim,
    });
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let q = dir.path().join("q.safetensors");
    let opts = QuantizeOptions::with_defaults(args("int3", Some("asymmetric"), Some("group:12")));
    checkpoint::quantize_file(&Backend::Cpu, &model, &q, &opts, None).unwrap();
    let whole = dequantized(&Backend::Gpu(ctx), &q, &dir.path().join("w.safetensors"), 0);
    let capped = dequantized(
        &Backend::Gpu(&small),
        &q,
        &dir.path().join("c.safetensors"),
        0,
    );
    if whole != capped {
        failures.push("gpu dequantize under a 1 KiB binding differs".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A [2, N] tensor whose one row is larger than the block is quantized in pieces of a row
/// (the plan says how many), with the bytes of the unsplit run.
fn check_wide(backend: &Backend<'_>, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("wide.safetensors");
    let n = 6000;
    write_atomic(
        &model,
        &[("wide.weight".into(), tensor(Dtype::BF16, &[2, n], 7))],
        Default::default(),
    )
    .unwrap();
    for a in [
        args("int4", Some("symmetric"), Some("group:12")),
        args("int3", Some("asymmetric"), Some("group:12")),
        args("weq3", None, Some("group:12")),
    ] {
        let what = format!("{label} {:?} {:?}", a.scheme, a.mode);
        let mut opts = QuantizeOptions::with_defaults(a);
        let whole = dir.path().join("whole.safetensors");
        checkpoint::quantize_file(backend, &model, &whole, &opts, None).unwrap();
        // 1 KiB of f32: 256 elements, far less than one row of 6000.
        opts.block_bytes = 1024;
        let (_, plan) = plan_file(&model, &opts).unwrap();
        let item = &plan.items[0];
        let blocks: Vec<_> = item.blocks().collect();
        assert!(
            blocks.len() > 2 * n / 256,
            "{what}: {} blocks",
            blocks.len()
        );
        assert!(blocks.iter().all(|b| b.len() <= 256), "{what}: {blocks:?}");
        let split = dir.path().join("split.safetensors");
        checkpoint::quantize_file(backend, &model, &split, &opts, None).unwrap();
        assert!(
            std::fs::read(&whole).unwrap() == std::fs::read(&split).unwrap(),
            "{what}: split quantization differs"
        );
    }
}

#[test]
fn wide_rows_are_quantized_in_pieces_with_the_same_bytes() {
    check_wide(&Backend::Cpu, "cpu");
    if let Some(ctx) = common::gpu() {
        let _turn = gpu_turn();
        check_wide(&Backend::Gpu(ctx), "gpu");
    }
}

#[test]
fn a_corrupt_part_is_reported_by_inspect_and_dequantize() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let q = dir.path().join("q.safetensors");
    let opts = QuantizeOptions::with_defaults(args("int4", Some("asymmetric"), Some("group:12")));
    checkpoint::quantize_file(&Backend::Cpu, &model, &q, &opts, None).unwrap();
    let bytes = std::fs::read(&q).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    // One scale short: the record's groups no longer match the part.
    let tensors: Vec<(String, OutTensor<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let mut data = t.data().to_vec();
            let mut shape = t.shape().to_vec();
            if name == "a.weight.wq_scale" {
                data.truncate(data.len() - 4);
                shape[0] -= 1;
            }
            (
                name,
                OutTensor {
                    dtype: t.dtype(),
                    shape,
                    data: Cow::Owned(data),
                },
            )
        })
        .collect();
    let bad = dir.path().join("bad.safetensors");
    write_atomic(&bad, &tensors, meta.metadata().clone().unwrap_or_default()).unwrap();
    let err = checkpoint::inspect_file(&bad).unwrap_err().to_string();
    assert!(err.contains("a.weight.wq_scale"), "{err}");
    let out = dir.path().join("out.safetensors");
    let err = checkpoint::dequantize_file(&Backend::Cpu, &bad, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.weight.wq_scale"), "{err}");
    assert!(!out.exists());
    // The intact file still inspects.
    assert_eq!(checkpoint::inspect_file(&q).unwrap().tensors.len(), 4);
}
