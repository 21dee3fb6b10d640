//! Streaming inside groups: a uniform minmax/absmax tensor whose row (per-channel) or whole
//! tensor (per-tensor) is larger than the block takes a range pre-pass and is quantized in
//! blocks cut inside groups, with the bytes of the unsplit run, on the CPU and on the GPU;
//! methods that need a whole group at once keep it one block, and the plan says so.

mod common;

use std::path::{Path, PathBuf};

use safetensors::Dtype;
use wgquant::checkpoint::file::{OutTensor, write_atomic};
use wgquant::checkpoint::quantize::plan_file;
use wgquant::checkpoint::{self, QuantizeOptions};
use wgquant::quant::Backend;
use wgquant::quant::spec::MethodArgs;

/// 1 KiB of f32: 256 elements, less than any row of the model but those of `d.bias`.
const TINY: usize = 1024;

/// Large enough that every tensor of the model is one block per row (or whole).
const HUGE: usize = 1 << 30;

fn tensor(dtype: Dtype, shape: &[usize], salt: u64) -> OutTensor<'static> {
    common::hashed_tensor(dtype, shape, salt, 0.4)
}

/// Awkward shapes in three dtypes: rows that no block divides, odd lengths (codes of a row
/// end mid-word), a 3-D tensor and a 1-D one (`--include-1d`).
fn write_model(dir: &Path) -> PathBuf {
    let tensors = vec![
        ("a.weight".to_string(), tensor(Dtype::BF16, &[2, 6000], 1)),
        ("b.weight".to_string(), tensor(Dtype::F16, &[3, 1764], 2)),
        ("c.weight".to_string(), tensor(Dtype::F32, &[5, 7, 333], 3)),
        ("d.bias".to_string(), tensor(Dtype::F32, &[1757], 4)),
    ];
    let path = dir.join("model.safetensors");
    write_atomic(&path, &tensors, Default::default()).unwrap();
    path
}

fn args(scheme: &str, mode: &str, granularity: &str, calib: &str) -> MethodArgs {
    MethodArgs {
        scheme: Some(scheme.into()),
        mode: Some(mode.into()),
        granularity: Some(granularity.into()),
        calib: Some(calib.into()),
        ..Default::default()
    }
}

/// Every uniform setting the pre-pass covers.
fn settings() -> Vec<MethodArgs> {
    let mut out = Vec::new();
    for bits in ["int3", "int4", "int8"] {
        for (mode, calib) in [
            ("symmetric", "absmax"),
            ("symmetric", "minmax"),
            ("restricted", "absmax"),
            ("asymmetric", "minmax"),
        ] {
            for g in ["channel", "tensor"] {
                out.push(args(bits, mode, g, calib));
            }
        }
    }
    out
}

fn options(a: MethodArgs, block_bytes: usize) -> QuantizeOptions {
    QuantizeOptions {
        include_1d: true,
        block_bytes,
        ..QuantizeOptions::with_defaults(a)
    }
}

/// Quantizes the model with tiny and huge blocks and checks the plan cuts inside groups and
/// the files are the same bytes; returns the failures.
fn check_split(backend: &Backend<'_>, label: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let mut failures = Vec::new();
    for a in settings() {
        let what = format!(
            "{label} {} {} {} {}",
            a.scheme.as_deref().unwrap_or(""),
            a.mode.as_deref().unwrap_or(""),
            a.granularity.as_deref().unwrap_or(""),
            a.calib.as_deref().unwrap_or("")
        );
        let tiny = options(a.clone(), TINY);
        let (_, plan) = plan_file(&model, &tiny).unwrap();
        for item in &plan.items {
            let blocks: Vec<_> = item.blocks().collect();
            // Groups and their length: rows, or the whole tensor.
            let (groups, group_len) = if a.granularity.as_deref() == Some("tensor") {
                (1, item.tensor.numel())
            } else {
                (item.rows(), item.row_len())
            };
            if group_len > TINY / 4 && !(item.prepass && blocks.len() > groups) {
                failures.push(format!(
                    "{what}: {} ({:?}) planned as {} block(s), prepass {}",
                    item.tensor.name,
                    item.tensor.shape,
                    blocks.len(),
                    item.prepass
                ));
            }
            if blocks.iter().any(|b| b.len() > TINY / 4) {
                failures.push(format!("{what}: {} has a block over 256", item.tensor.name));
            }
        }
        if !plan.table().contains("read twice") {
            failures.push(format!("{what}: the plan table does not name the pre-pass"));
        }
        let whole = dir.path().join("whole.safetensors");
        let split = dir.path().join("split.safetensors");
        checkpoint::quantize_file(backend, &model, &whole, &options(a.clone(), HUGE), None)
            .unwrap();
        let report = checkpoint::quantize_file(backend, &model, &split, &tiny, None).unwrap();
        if std::fs::read(&whole).unwrap() != std::fs::read(&split).unwrap() {
            failures.push(format!("{what}: split quantization differs"));
        }
        if report
            .tensors
            .iter()
            .any(|t| t.sqnr_db.is_some_and(|s| s < 10.0))
        {
            failures.push(format!("{what}: implausible SQNR in {:?}", report.tensors));
        }
    }
    failures
}

#[test]
fn groups_larger_than_a_block_are_cut_with_the_bytes_of_the_unsplit_run_on_the_cpu() {
    let failures = check_split(&Backend::Cpu, "cpu");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn groups_larger_than_a_block_are_cut_with_the_bytes_of_the_unsplit_run_on_the_gpu() {
    let Some(ctx) = common::gpu() else { return };
    let failures = check_split(&Backend::Gpu(ctx), "gpu");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn whole_group_methods_stay_one_block_and_the_plan_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    for a in [
        args("int4", "symmetric", "channel", "percentile:99.9"),
        args("int4", "asymmetric", "tensor", "mse"),
        MethodArgs {
            scheme: Some("weq3".into()),
            granularity: Some("channel".into()),
            ..Default::default()
        },
    ] {
        let (_, plan) = plan_file(&model, &options(a.clone(), TINY)).unwrap();
        let a_item = plan
            .items
            .iter()
            .find(|i| i.tensor.name == "a.weight")
            .unwrap();
        assert!(!a_item.prepass, "{a:?}");
        assert!(a_item.blocks().all(|b| b.len() >= 6000), "{a:?}");
        let table = plan.table();
        assert!(
            table.contains("held in memory in blocks of whole groups"),
            "{a:?}:\n{table}"
        );
        assert!(table.contains("a.weight"), "{table}");
        assert!(!table.contains("read twice"), "{a:?}:\n{table}");
    }
    // Nothing larger than the default block: no notes.
    let (_, plan) = plan_file(
        &model,
        &options(args("int4", "symmetric", "channel", "mse"), 0),
    )
    .unwrap();
    assert!(!plan.table().contains("held in memory"), "{}", plan.table());
    assert!(!plan.table().contains("read twice"), "{}", plan.table());
}

#[test]
fn a_non_finite_value_found_by_the_pre_pass_names_its_index_in_the_whole_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.safetensors");
    let mut t = tensor(Dtype::F32, &[2, 6000], 9);
    let bad = 6000 + 4321;
    t.data.to_mut()[bad * 4..bad * 4 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    write_atomic(&model, &[("w".to_string(), t)], Default::default()).unwrap();
    for block in [TINY, HUGE] {
        let out = dir.path().join("q.safetensors");
        let opts = options(args("int4", "symmetric", "channel", "absmax"), block);
        let err = checkpoint::quantize_file(&Backend::Cpu, &model, &out, &opts, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("at element {bad}")), "{block}: {err}");
        assert!(!out.exists());
    }
}
