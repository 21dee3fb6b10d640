//! The `wgquant` binary end to end: round trips on small checkpoints, and every kind of bad
//! input giving one clear line, a non-zero exit, no output file and an untouched input.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::Dtype;
use wgquant::checkpoint::file::{OutTensor, write_atomic};

const BIN: &str = env!("CARGO_BIN_EXE_wgquant");

fn wgquant(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the wgquant binary runs")
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A deterministic pseudo-random weight in [-1, 1).
fn value(i: usize) -> f32 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    x as f32 / (1u64 << 23) as f32 - 1.0
}

fn tensor(dtype: Dtype, shape: &[usize], data: Vec<u8>) -> OutTensor<'static> {
    OutTensor {
        dtype,
        shape: shape.to_vec(),
        data: Cow::Owned(data),
    }
}

/// A small model: a 2-D F32 weight, an F16 and a BF16 weight, a 1-D bias, an I64 tensor.
fn small_model(dir: &Path) -> PathBuf {
    let w: Vec<f32> = (0..64 * 96).map(value).collect();
    let h: Vec<u8> = (0..32 * 64)
        .flat_map(|i| half::f16::from_f32(value(i + 7)).to_le_bytes())
        .collect();
    let b: Vec<u8> = (0..16 * 64)
        .flat_map(|i| half::bf16::from_f32(value(i + 3)).to_le_bytes())
        .collect();
    let ids: Vec<u8> = (0..10i64).flat_map(|i| i.to_le_bytes()).collect();
    let tensors = vec![
        (
            "w.f32".to_string(),
            tensor(Dtype::F32, &[64, 96], f32_bytes(&w)),
        ),
        ("w.f16".to_string(), tensor(Dtype::F16, &[32, 64], h)),
        ("w.bf16".to_string(), tensor(Dtype::BF16, &[16, 64], b)),
        (
            "bias".to_string(),
            tensor(Dtype::F32, &[96], f32_bytes(&w[..96])),
        ),
        ("ids".to_string(), tensor(Dtype::I64, &[10], ids)),
    ];
    let path = dir.join("model.safetensors");
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_atomic(&path, &tensors, meta).expect("writes the fixture");
    path
}

fn one_tensor_model(
    dir: &Path,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: Vec<u8>,
) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    write_atomic(
        &path,
        &[(name.to_string(), tensor(dtype, shape, data))],
        Default::default(),
    )
    .expect("writes the fixture");
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The contract for bad input: non-zero exit, exactly one error line naming `needle`, nothing
/// under the output name, the input byte-for-byte unchanged.
fn assert_clean_failure(o: &Output, needle: &str, out: &Path, input: Option<(&Path, &[u8])>) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err}");
    assert!(
        lines[0].contains(needle),
        "'{}' does not mention '{needle}'",
        lines[0]
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!out.exists(), "{} exists after a failure", out.display());
    if let Some((path, before)) = input {
        assert_eq!(
            std::fs::read(path).expect("input still readable"),
            before,
            "input changed"
        );
    }
    let leftovers = std::fs::read_dir(out.parent().unwrap_or(Path::new(".")))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "temporary files left behind");
}
#[test]
fn quantize_inspect_dequantize_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let before = std::fs::read(&model).unwrap();
    let q = dir.path().join("q.safetensors");
    let report = dir.path().join("report.json");
    let o = wgquant(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--scheme",
        "int4",
        "--granularity",
        "group:32",
        "--device",
        "cpu",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&model).unwrap(), before, "input changed");

    // The report holds every field per tensor and totals.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let tensors = r["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 5);
    let w = tensors.iter().find(|t| t["name"] == "w.f32").unwrap();
    for key in [
        "name",
        "shape",
        "scheme",
        "bits_per_weight",
        "sqnr_db",
        "rel_err",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(!w[key].is_null(), "report lacks {key}");
    }
    // 4-bit codes plus one f32 scale per 32 weights.
    assert!((w["bits_per_weight"].as_f64().unwrap() - 5.0).abs() < 1e-9);
    assert!(
        w["sqnr_db"].as_f64().unwrap() > 15.0,
        "int4 SQNR too low: {w}"
    );
    assert!(r["totals"]["bytes_out"].as_u64().unwrap() < r["totals"]["bytes_in"].as_u64().unwrap());

    // The file describes itself.
    let bytes = std::fs::read(&q).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert!(meta.contains_key("wgquant"));
    let rec: serde_json::Value = serde_json::from_str(&meta["wgquant:w.f32"]).unwrap();
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["bits"], 4);
    assert_eq!(meta["format"], "pt", "user metadata kept");

    let o = wgquant(&["inspect", q.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = s["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");

    let d = dir.path().join("d.safetensors");
    let o = wgquant(&[
        "dequantize",
        q.to_str().unwrap(),
        "-o",
        d.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let orig = std::fs::read(&model).unwrap();
    let orig = safetensors::SafeTensors::deserialize(&orig).unwrap();
    let deq = std::fs::read(&d).unwrap();
    let deq = safetensors::SafeTensors::deserialize(&deq).unwrap();
    let mut a: Vec<_> = orig.names().into_iter().map(String::from).collect();
    let mut b: Vec<_> = deq.names().into_iter().map(String::from).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "dequantized file has the original names");
    for name in a {
        let (x, y) = (orig.tensor(&name).unwrap(), deq.tensor(&name).unwrap());
        assert_eq!(x.dtype(), y.dtype(), "{name} dtype");
        assert_eq!(x.shape(), y.shape(), "{name} shape");
        if name == "bias" || name == "ids" {
            assert_eq!(x.data(), y.data(), "{name} passes through unchanged");
        }
    }
}

#[test]
fn every_cli_scheme_quantizes() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    for (scheme, extra) in [
        (
            "int8",
            vec!["--mode", "restricted", "--granularity", "tensor"],
        ),
        ("int8", vec!["--mode", "asymmetric", "--calib", "minmax"]),
        ("int3", vec!["--calib", "mse"]),
        ("int2", vec!["--calib", "percentile:99.5"]),
        ("weq3", vec!["--granularity", "tensor"]),
        ("weq4", vec![]),
    ] {
        let q = dir.path().join(format!("{scheme}.safetensors"));
        let mut args = vec![
            "quantize",
            model.to_str().unwrap(),
            "-o",
            q.to_str().unwrap(),
            "--scheme",
            scheme,
            "--device",
            "cpu",
        ];
        args.extend(extra.iter());
        let o = wgquant(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(q.exists());
    }
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        "/no/such/model.safetensors",
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(&o, "/no/such/model.safetensors", &out, None);
}

#[test]
fn not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(
        &input,
        b"these are not tensors, just a plain text file of some length",
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(
        &o,
        "notes.txt",
        &out,
        Some((&input, &std::fs::read(&input).unwrap())),
    );
    let o = wgquant(&["inspect", input.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a safetensors file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let input = dir.path().join("truncated.safetensors");
    std::fs::write(&input, &bytes[..bytes.len() - 100]).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(
        &o,
        "truncated",
        &out,
        Some((&input, &bytes[..bytes.len() - 100])),
    );
}

#[test]
fn header_offsets_lie() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[1.0; 8]);
    // Claims 64 bytes for a tensor of 8 floats (32 bytes) while the file holds 32.
    let header = r#"{"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,64]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(&data);
    let input = dir.path().join("lying.safetensors");
    std::fs::write(&input, &bytes).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(&o, "lying.safetensors", &out, Some((&input, &bytes)));
}

#[test]
fn unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..64).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let input = one_tensor_model(dir.path(), "double", Dtype::F64, &[8, 8], data);
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(&o, "'double'", &out, Some((&input, &before)));
    assert!(stderr(&o).contains("F64"), "{}", stderr(&o));
}

#[test]
fn non_finite_values_are_named() {
    for (bad, label) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut v: Vec<f32> = (0..64).map(value).collect();
        v[37] = bad;
        let input = one_tensor_model(
            dir.path(),
            "weights.with.nan",
            Dtype::F32,
            &[8, 8],
            f32_bytes(&v),
        );
        let before = std::fs::read(&input).unwrap();
        let out = dir.path().join("out.safetensors");
        for device in common::cli_devices() {
            let o = wgquant(&[
                "quantize",
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--device",
                device,
            ]);
            let err = stderr(&o);
            // `auto` may add a warning line when there is no GPU; keep only the error.
            let err_line = err
                .lines()
                .find(|l| l.contains("error"))
                .unwrap_or("")
                .to_string();
            assert!(!o.status.success(), "{label} accepted on {device}");
            assert!(
                err_line.contains("'weights.with.nan'") && err_line.contains("element 37"),
                "{err_line}"
            );
            assert!(
                err_line.to_lowercase().contains(&label.to_lowercase()),
                "{err_line}"
            );
            assert!(!out.exists());
            assert_eq!(std::fs::read(&input).unwrap(), before);
        }
    }
}

#[test]
fn bits_and_groups_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let before = std::fs::read(&model).unwrap();
    let out = dir.path().join("out.safetensors");
    let m = model.to_str().unwrap();
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--scheme", "int9"], "bits 9 out of range"),
        (vec!["--scheme", "int0"], "bits 0 out of range"),
        (vec!["--scheme", "float4"], "float4"),
        (
            vec!["--granularity", "group:0"],
            "group size must be positive",
        ),
        (vec!["--granularity", "group:x"], "group size 'x'"),
        (vec!["--calib", "percentile:120"], "percentile 120"),
    ] {
        let mut full = vec!["quantize", m, "-o", o, "--device", "cpu"];
        full.extend(args.iter());
        let r = wgquant(&full);
        assert!(!r.status.success(), "{args:?} accepted");
        assert!(stderr(&r).contains(needle), "{args:?}: {}", stderr(&r));
        assert!(!out.exists());
    }
    // A group that does not divide a tensor's last axis names the tensor.
    let r = wgquant(&[
        "quantize",
        m,
        "-o",
        o,
        "--device",
        "cpu",
        "--granularity",
        "group:40",
    ]);
    assert_clean_failure(&r, "does not divide", &out, Some((&model, &before)));
    assert!(
        stderr(&r).contains("'w.f32'") || stderr(&r).contains("'w.f16'"),
        "{}",
        stderr(&r)
    );
    // absmax on an asymmetric scheme is refused.
    let r = wgquant(&[
        "quantize",
        m,
        "-o",
        o,
        "--device",
        "cpu",
        "--mode",
        "asymmetric",
        "--calib",
        "absmax",
    ]);
    assert_clean_failure(&r, "absmax", &out, Some((&model, &before)));
}

#[test]
fn unwritable_output_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let before = std::fs::read(&model).unwrap();
    let out = dir.path().join("no-such-dir").join("out.safetensors");
    let o = wgquant(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(&o, "no-such-dir", &out, Some((&model, &before)));
    // An output that is an existing directory.
    let o = wgquant(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let before = std::fs::read(&model).unwrap();
    let o = wgquant(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("overwrite the input"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn dequantize_rejects_plain_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out.safetensors");
    let o = wgquant(&[
        "dequantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_failure(&o, "no wgquant-quantized tensors", &out, None);
}

#[test]
fn missing_gpu_is_explained() {
    // No adapter exists for a backend this platform lacks.
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out.safetensors");
    let o = Command::new(BIN)
        .args([
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--device",
            "gpu",
        ])
        .env("WGPU_BACKEND", "metal")
        .output()
        .unwrap();
    assert_clean_failure(&o, "--device cpu", &out, None);
    assert!(stderr(&o).contains("adapters found"), "{}", stderr(&o));
}

/// Discretization (linN, expN) and Deep Compression (dc) through the binary: quantize with a
/// report, inspect, dequantize; dc prints its per-stage compression table and stores sparse;
/// the report's bytes out are the bytes written (Huffman streams are sized only then).
#[test]
fn discretize_and_dc_schemes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    for (name, args) in [
        ("lin4", vec!["--scheme", "lin4"]),
        ("exp3", vec!["--scheme", "exp3", "--granularity", "tensor"]),
        (
            "dc",
            vec![
                "--scheme",
                "dc",
                "--sparsity",
                "0.8",
                "--bits",
                "4",
                "--index-bits",
                "3",
            ],
        ),
    ] {
        let q = dir.path().join(format!("{name}.safetensors"));
        let report = dir.path().join(format!("{name}.json"));
        let mut full = vec![
            "quantize",
            model.to_str().unwrap(),
            "-o",
            q.to_str().unwrap(),
            "--device",
            "cpu",
            "--report",
            report.to_str().unwrap(),
        ];
        full.extend(args.iter());
        let o = wgquant(&full);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        check_report_bytes(&report, &q);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        if name == "dc" {
            assert!(out.contains("+huffman") && out.contains("w.f32"), "{out}");
            let bytes = std::fs::read(&q).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let names = st.names();
            assert!(
                names.iter().any(|n| n.ends_with(".wq_sparse_codes")),
                "{names:?}"
            );
            assert!(!names.iter().any(|n| n.ends_with(".wq_codes")), "{names:?}");
        }
        let o = wgquant(&["inspect", q.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let w = s["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "w.f32")
            .cloned()
            .unwrap();
        assert!(w["scheme"].as_str().unwrap().contains("codebook"), "{w}");
        let d = dir.path().join(format!("{name}.deq.safetensors"));
        let o = wgquant(&[
            "dequantize",
            q.to_str().unwrap(),
            "-o",
            d.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let bytes = std::fs::read(&d).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("w.f32").unwrap();
        let vals: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let zeros = vals.iter().filter(|v| **v == 0.0).count();
        if name == "dc" {
            // 80% pruned (⌊0.8·n⌉ elements): at least that many decode to exactly 0.
            let pruned = (vals.len() as f64 * 0.8).round() as usize;
            assert!(zeros >= pruned, "{zeros} zeros of {}", vals.len());
        }
    }
}

/// Every tensor's `bytes_out` in the report is the size of its parts in the output file,
/// and the totals add up.
fn check_report_bytes(report: &std::path::Path, output: &std::path::Path) {
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let bytes = std::fs::read(output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut total = 0;
    for t in r["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let parts = format!("{name}.wq_");
        let written: u64 = st
            .tensors()
            .iter()
            .filter(|(n, _)| n == name || n.starts_with(&parts))
            .map(|(_, v)| v.data().len() as u64)
            .sum();
        assert_eq!(
            t["bytes_out"].as_u64(),
            Some(written),
            "{name} in {report:?}"
        );
        total += written;
    }
    assert_eq!(r["totals"]["bytes_out"].as_u64(), Some(total), "{report:?}");
}

#[test]
fn discretize_and_dc_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("out.safetensors");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    for (args, needle) in [
        (vec!["--scheme", "lin1"], "bits 1 out of range"),
        (vec!["--scheme", "exp9"], "bits 9 out of range"),
        (vec!["--scheme", "linear4"], "linear4"),
        (
            vec!["--scheme", "lin4", "--granularity", "group:32"],
            "per tensor or per channel",
        ),
        (
            vec!["--scheme", "dc", "--granularity", "channel"],
            "--granularity tensor",
        ),
        (vec!["--scheme", "dc", "--sparsity", "1.5"], "sparsity 1.5"),
        (vec!["--scheme", "dc", "--bits", "9"], "bits 9"),
        (vec!["--scheme", "dc", "--index-bits", "0"], "index bits 0"),
        (vec!["--scheme", "dc", "--kmeans-init", "random"], "random"),
        (
            vec!["--scheme", "int4", "--bits", "3"],
            "apply to --scheme dc",
        ),
    ] {
        let mut full = vec!["quantize", m, "-o", o, "--device", "cpu"];
        full.extend(args.iter());
        let r = wgquant(&full);
        assert!(!r.status.success(), "{args:?} accepted");
        assert!(stderr(&r).contains(needle), "{args:?}: {}", stderr(&r));
        assert!(!stderr(&r).contains("panicked"), "{}", stderr(&r));
        assert!(!out.exists());
    }
}

#[test]
fn study_discretize_prints_table_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curves");
    let base = [
        "study",
        "discretize",
        "--device",
        "cpu",
        "--points",
        "15",
        "--out-dir",
        svg.to_str().unwrap(),
    ];
    let o = wgquant(&base);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text.contains("gaussian") && text.contains("laplace"),
        "{text}"
    );
    let mut args = base.to_vec();
    args.push("--json");
    let o = wgquant(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 5, "{v}");
    for r in rows {
        let (x0, c) = (
            r["best_x0"].as_f64().unwrap(),
            r["correlation"].as_f64().unwrap(),
        );
        assert!(x0 > 0.0 && x0 < 1.0 && c > 0.5 && c < 1.0, "{r}");
    }
    // The table and the JSON carry the same numbers.
    let first = &rows[0];
    assert!(text.contains(&format!("{:.6}", first["correlation"].as_f64().unwrap())));
    for d in ["gaussian", "laplace"] {
        let f = svg.join(format!("discretize-{d}.svg"));
        let s = std::fs::read_to_string(&f).unwrap();
        assert!(
            s.starts_with("<svg") && s.contains("polyline"),
            "{}",
            f.display()
        );
    }
}

/// `--device auto` (the default) takes a hardware GPU, but passes over a software adapter for
/// the CPU backend, which is faster there, and says so on stderr.
#[test]
fn auto_prefers_the_cpu_to_a_software_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let out = dir.path().join("q.safetensors");
    let o = wgquant(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--scheme",
        "int8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    match common::gpu() {
        Some(ctx) if ctx.is_software() => {
            assert!(stderr(&o).contains("software"), "{}", stderr(&o));
            assert!(stdout.contains("on cpu:"), "{stdout}");
        }
        Some(_) => assert!(stdout.contains("on gpu:"), "{stdout}"),
        None => assert!(stdout.contains("on cpu:"), "{stdout}"),
    }
}

#[test]
fn rules_leave_1d_tensors_unless_they_include_them_and_dry_runs_warn() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let rules = dir.path().join("rules.toml");
    let out = dir.path().join("q.safetensors");
    // `bias` is 1-D: the first rule matches it and leaves it; the second matches nothing.
    std::fs::write(
        &rules,
        "[[rule]]\npattern = \"bias\"\nscheme = \"int4\"\n\n[[rule]]\npattern = \"nothing.*\"\nscheme = \"int8\"\n",
    )
    .unwrap();
    let r = rules.to_str().unwrap();
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let dry = wgquant(&["quantize", m, "-o", o, "--rules", r, "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let table = String::from_utf8_lossy(&dry.stdout);
    assert!(
        table.contains("rule 1 ('bias') matches only 1-D tensors"),
        "{table}"
    );
    assert!(
        table.contains("rule 2 ('nothing.*') matches no tensor"),
        "{table}"
    );
    let bias = table.lines().find(|l| l.starts_with("bias ")).unwrap();
    assert!(bias.contains("keep (1-D)"), "{bias}");
    // With include_1d the rule quantizes it.
    std::fs::write(
        &rules,
        "[[rule]]\npattern = \"bias\"\nscheme = \"int4\"\ninclude_1d = true\n",
    )
    .unwrap();
    let dry = wgquant(&["quantize", m, "-o", o, "--rules", r, "--dry-run"]);
    let table = String::from_utf8_lossy(&dry.stdout);
    let bias = table.lines().find(|l| l.starts_with("bias ")).unwrap();
    assert!(bias.contains("int4"), "{bias}");
    assert!(!table.contains("warning:"), "{table}");
}
