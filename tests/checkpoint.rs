//! Whole-checkpoint runs through the library and the CLI: streaming in row blocks gives the
//! same bytes as whole tensors, sharded input and output, rules, dry runs, half-precision
//! casts, alignment of every tensor, and failures that leave nothing behind.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{Dtype, SafeTensors};
use wgquant::checkpoint::file::{OutTensor, write_atomic};
use wgquant::checkpoint::rules::Rules;
use wgquant::checkpoint::{self, QuantizeOptions};
use wgquant::quant::Backend;
use wgquant::quant::spec::MethodArgs;

const BIN: &str = env!("CARGO_BIN_EXE_wgquant");

use common::{run_cli as run, stderr_of as stderr};

fn value(i: usize, salt: u64) -> f32 {
    let x = ((i as u64) ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    x as f32 / (1u64 << 23) as f32 - 1.0
}

fn f32_tensor(shape: &[usize], salt: u64) -> OutTensor<'static> {
    let n: usize = shape.iter().product();
    OutTensor {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: Cow::Owned((0..n).flat_map(|i| value(i, salt).to_le_bytes()).collect()),
    }
}

fn bf16_tensor(shape: &[usize], salt: u64) -> OutTensor<'static> {
    let n: usize = shape.iter().product();
    OutTensor {
        dtype: Dtype::BF16,
        shape: shape.to_vec(),
        data: Cow::Owned(
            (0..n)
                .flat_map(|i| half::bf16::from_f32(value(i, salt)).to_le_bytes())
                .collect(),
        ),
    }
}

/// A model with tensors of several dtypes, odd shapes and a 1-D F16 bias of odd length (so a
/// careless writer would misalign what follows).
fn model_tensors() -> Vec<(String, OutTensor<'static>)> {
    let ids: Vec<u8> = (0..7i64).flat_map(|i| i.to_le_bytes()).collect();
    let bias: Vec<u8> = (0..33)
        .flat_map(|i| half::f16::from_f32(value(i, 9)).to_le_bytes())
        .collect();
    vec![
        ("model.embed.weight".into(), bf16_tensor(&[300, 64], 1)),
        (
            "model.layers.0.attn.q.weight".into(),
            f32_tensor(&[64, 64], 2),
        ),
        (
            "model.layers.0.mlp.up.weight".into(),
            bf16_tensor(&[256, 64], 3),
        ),
        (
            "model.layers.0.mlp.down.weight".into(),
            f32_tensor(&[64, 256], 4),
        ),
        ("model.layers.0.norm.weight".into(), f32_tensor(&[64], 5)),
        (
            "model.layers.0.mlp.up.bias".into(),
            OutTensor {
                dtype: Dtype::F16,
                shape: vec![33],
                data: Cow::Owned(bias),
            },
        ),
        (
            "model.position_ids".into(),
            OutTensor {
                dtype: Dtype::I64,
                shape: vec![7],
                data: Cow::Owned(ids),
            },
        ),
    ]
}

fn write_model(dir: &Path) -> PathBuf {
    let path = dir.join("model.safetensors");
    write_atomic(&path, &model_tensors(), Default::default()).unwrap();
    path
}

fn int4_group32() -> MethodArgs {
    MethodArgs {
        scheme: Some("int4".into()),
        granularity: Some("group:32".into()),
        ..Default::default()
    }
}

/// Every tensor's data offset is a multiple of its element size.
fn assert_aligned(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes[8..8 + n].trim_ascii_end()).unwrap();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let dtype: Dtype = serde_json::from_value(info["dtype"].clone()).unwrap();
        let start = info["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
        assert_eq!(
            start % (dtype.bitsize() / 8).max(1),
            0,
            "{name} ({dtype:?}) starts at {start} in {}",
            path.display()
        );
    }
}
#[test]
fn row_blocks_give_the_same_bytes_as_whole_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let whole = dir.path().join("whole.safetensors");
    let blocks = dir.path().join("blocks.safetensors");
    let mut opts = QuantizeOptions::with_defaults(int4_group32());
    checkpoint::quantize_file(&Backend::Cpu, &model, &whole, &opts, None).unwrap();
    // 1 KiB of f32 per block: every 2-D tensor streams in many row blocks.
    opts.block_bytes = 1024;
    let report = checkpoint::quantize_file(&Backend::Cpu, &model, &blocks, &opts, None).unwrap();
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&blocks).unwrap()
    );
    assert_aligned(&blocks);
    assert_eq!(report.totals.quantized, 4);
    // Also with 3-bit codes, whose rows end mid-word unless blocks are chosen with care.
    let mut three = QuantizeOptions::with_defaults(MethodArgs {
        scheme: Some("int3".into()),
        ..Default::default()
    });
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    checkpoint::quantize_file(&Backend::Cpu, &model, &a, &three, None).unwrap();
    three.block_bytes = 700;
    checkpoint::quantize_file(&Backend::Cpu, &model, &b, &three, None).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_nan_deep_in_a_streamed_tensor_is_named_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = f32_tensor(&[100, 64], 7);
    let at = 77 * 64 + 5;
    t.data.to_mut()[at * 4..at * 4 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let model = dir.path().join("nan.safetensors");
    write_atomic(&model, &[("deep.weight".into(), t)], Default::default()).unwrap();
    let out = dir.path().join("out.safetensors");
    let mut opts = QuantizeOptions::with_defaults(int4_group32());
    opts.block_bytes = 1024;
    let err = checkpoint::quantize_file(&Backend::Cpu, &model, &out, &opts, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'deep.weight'") && err.contains(&format!("element {at}")),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "temporary files left behind"
    );
}

#[test]
fn sharded_output_and_input_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let single = dir.path().join("single.safetensors");
    let sharded = dir.path().join("q.safetensors");
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        single.to_str().unwrap(),
        "--scheme",
        "int4",
        "--granularity",
        "group:32",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        sharded.to_str().unwrap(),
        "--scheme",
        "int4",
        "--granularity",
        "group:32",
        "--device",
        "cpu",
        "--max-shard-size",
        "20kB",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let index_path = dir.path().join("q.safetensors.index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let files: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(files.len() > 1, "expected several shards: {files:?}");
    // The shards hold exactly the single file's tensors, with the same bytes.
    let single_bytes = std::fs::read(&single).unwrap();
    let single_st = SafeTensors::deserialize(&single_bytes).unwrap();
    let mut seen = 0;
    for f in &files {
        let path = dir.path().join(f);
        assert_aligned(&path);
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert!(
            bytes.len() < 20_000 + 8192 || st.len() == 1,
            "{f} is {} bytes",
            bytes.len()
        );
        for (name, view) in st.tensors() {
            assert_eq!(map[&name], *f);
            assert_eq!(
                view.data(),
                single_st.tensor(&name).unwrap().data(),
                "{name}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, single_st.len());
    // A sharded checkpoint is also an input: inspect and dequantize read it through its index.
    let o = run(&["inspect", index_path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d1 = dir.path().join("d1.safetensors");
    let d2 = dir.path().join("d2.safetensors");
    for (input, out) in [(&index_path, &d1), (&single, &d2)] {
        let o = run(&[
            "dequantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&d1).unwrap(), std::fs::read(&d2).unwrap());
    // And quantizing a sharded float checkpoint equals quantizing the merged file.
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--scheme",
        "bf16",
        "--device",
        "cpu",
        "--max-shard-size",
        "30kB",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a_index = dir.path().join("a.safetensors.index.json");
    let o = run(&[
        "quantize",
        a_index.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--scheme",
        "int8",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn rules_choose_per_tensor_and_first_match_wins() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rule]]
pattern = "*.embed.*"
skip = true

[[rule]]
regex = 'layers\.\d+\.mlp\.up\.weight'
scheme = "int2"
granularity = "group:64"

[[rule]]
pattern = "*.mlp.*"
scheme = "int8"
mode = "asymmetric"

[[rule]]
pattern = "*.norm.weight"
scheme = "f16"
include_1d = true
"#,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--scheme",
        "int4",
        "--device",
        "cpu",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.exists(), "a dry run writes nothing");
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let line = |name: &str| {
        plan.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in plan:\n{plan}"))
            .to_string()
    };
    assert!(line("model.embed.weight").contains("keep (skip)"), "{plan}");
    assert!(
        line("model.layers.0.mlp.up.weight").contains("int2")
            && line("model.layers.0.mlp.up.weight").contains("group:64"),
        "{plan}"
    );
    assert!(
        line("model.layers.0.mlp.down.weight").contains("int8 asym"),
        "{plan}"
    );
    assert!(
        line("model.layers.0.attn.q.weight").contains("int4 sym channel"),
        "{plan}"
    );
    assert!(line("model.layers.0.norm.weight").contains("f16"), "{plan}");
    // The 1-D bias is matched by "*.mlp.*", which changes only what the defaults quantize.
    assert!(
        line("model.layers.0.mlp.up.bias").contains("keep (1-D)"),
        "{plan}"
    );
    assert!(
        line("model.position_ids").contains("keep (not float)"),
        "{plan}"
    );

    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--scheme",
        "int4",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_aligned(&out);
    // Dequantize restores every original name, dtype and shape, the cast one included.
    let d = dir.path().join("d.safetensors");
    let o = run(&[
        "dequantize",
        out.to_str().unwrap(),
        "-o",
        d.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (orig, deq) = (std::fs::read(&model).unwrap(), std::fs::read(&d).unwrap());
    let (orig, deq) = (
        SafeTensors::deserialize(&orig).unwrap(),
        SafeTensors::deserialize(&deq).unwrap(),
    );
    assert_eq!(orig.len(), deq.len());
    for (name, x) in orig.tensors() {
        let y = deq.tensor(&name).unwrap();
        assert_eq!((x.dtype(), x.shape()), (y.dtype(), y.shape()), "{name}");
        if name.contains("embed") || name.contains("position") {
            assert_eq!(x.data(), y.data(), "{name} kept");
        }
    }
    let norm = deq.tensor("model.layers.0.norm.weight").unwrap();
    let vals: Vec<f32> = norm
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (i, v) in vals.iter().enumerate() {
        // f16 keeps 11 significant bits.
        assert!(
            (v - value(i, 5)).abs() <= value(i, 5).abs() * 1e-3,
            "norm[{i}] {v}"
        );
    }
}

#[test]
fn bad_rules_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = dir.path().join("out.safetensors");
    for (text, needle) in [
        ("[[rule]]\npattern = \"*\"\nschem = \"int4\"\n", "schem"),
        ("[[rule]]\nscheme = \"int4\"\n", "exactly one of"),
        ("[[rule]]\nregex = \"(\"\nscheme = \"int4\"\n", "regex"),
        (
            "[[rule]]\npattern = \"*.position_ids\"\nscheme = \"int4\"\n",
            "not float",
        ),
        (
            "[[rule]]\npattern = \"*q.weight\"\nscheme = \"int4\"\ngranularity = \"group:48\"\n",
            "does not divide",
        ),
        (
            "[[rule]]\npattern = \"*\"\nskip = true\nscheme = \"int4\"\n",
            "both skips",
        ),
        ("not toml at all [", "rules.toml"),
    ] {
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, text).unwrap();
        let o = run(&[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(!o.status.success(), "accepted: {text}");
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{text}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

#[test]
fn a_full_disk_fails_cleanly() {
    // RLIMIT_FSIZE makes writes past 64 KiB fail like a full disk (wgquant ignores SIGXFSZ).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.safetensors");
    write_atomic(
        &big,
        &[("w".into(), f32_tensor(&[256, 256], 3))],
        Default::default(),
    )
    .unwrap();
    let before = std::fs::read(&big).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64 && exec {BIN} quantize {} -o {} --scheme int8 --device cpu",
            big.display(),
            out.display()
        ))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("out.safetensors"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read(&big).unwrap(), before);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("partial")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn rules_parse_alone() {
    let r = Rules::parse(
        Path::new("r.toml"),
        "[[rule]]\npattern = \"a.*\"\nskip = true\n[[rule]]\nregex = \"b$\"\nscheme = \"int2\"\n",
    )
    .unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.first_match("a.x").unwrap().skip);
    assert_eq!(r.first_match("xb").unwrap().index, 2);
    assert!(r.first_match("c").is_none());
}

/// Every method, each chosen by a rule in one checkpoint, on the CPU and the GPU: two runs
/// write the same bytes, the output stays aligned, and `dequantize` restores every tensor.
#[test]
fn every_method_by_rule_and_dequantize_reverses_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "uniform", "weq", "lin", "exp", "dc", "half", "bhalf", "group",
    ];
    let tensors: Vec<(String, OutTensor<'static>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{n}.weight"),
                f32_tensor(&[64, 128], 100 + i as u64),
            )
        })
        .collect();
    let model = dir.path().join("model.safetensors");
    write_atomic(&model, &tensors, Default::default()).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rule]]
pattern = "uniform.*"
scheme = "int4"
[[rule]]
pattern = "weq.*"
scheme = "weq4"
[[rule]]
pattern = "lin.*"
scheme = "lin4"
[[rule]]
pattern = "exp.*"
scheme = "exp4"
[[rule]]
pattern = "dc.*"
scheme = "dc"
sparsity = 0.5
bits = 4
[[rule]]
pattern = "half.*"
scheme = "f16"
[[rule]]
pattern = "bhalf.*"
scheme = "bf16"
[[rule]]
pattern = "group.*"
scheme = "int3"
mode = "asymmetric"
granularity = "group:32"
calib = "mse"
"#,
    )
    .unwrap();
    let q = dir.path().join("q.safetensors");
    let again = dir.path().join("again.safetensors");
    let d = dir.path().join("d.safetensors");
    for device in common::cli_devices() {
        for out in [&q, &again] {
            let o = run(&[
                "quantize",
                model.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--rules",
                rules.to_str().unwrap(),
                "--device",
                device,
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        assert_aligned(&q);
        // Deterministic: a second run writes the same bytes.
        assert!(
            std::fs::read(&q).unwrap() == std::fs::read(&again).unwrap(),
            "{device}: two runs of the same quantization wrote different files"
        );
        let o = run(&[
            "dequantize",
            q.to_str().unwrap(),
            "-o",
            d.to_str().unwrap(),
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let (orig, deq) = (std::fs::read(&model).unwrap(), std::fs::read(&d).unwrap());
        let (orig, deq) = (
            SafeTensors::deserialize(&orig).unwrap(),
            SafeTensors::deserialize(&deq).unwrap(),
        );
        assert_eq!(deq.len(), names.len(), "{device}");
        for n in names {
            let name = format!("{n}.weight");
            let (x, y) = (orig.tensor(&name).unwrap(), deq.tensor(&name).unwrap());
            assert_eq!(
                (x.dtype(), x.shape()),
                (y.dtype(), y.shape()),
                "{device} {name}"
            );
            let f = |b: &[u8]| {
                b.chunks(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (f(x.data()), f(y.data()));
            let signal: f64 = a.iter().map(|v| v * v).sum();
            let noise: f64 = a.iter().zip(&b).map(|(u, v)| (u - v) * (u - v)).sum();
            let sqnr = 10.0 * (signal / noise.max(1e-30)).log10();
            // Uniform data in [−1, 1): every 3–4-bit method keeps well above 8 dB; half
            // precision above 45 dB; dc prunes half the weights (≈ 6 dB at best).
            let floor = match n {
                "half" | "bhalf" => 45.0,
                "dc" => 5.0,
                _ => 8.0,
            };
            assert!(sqnr > floor, "{device} {name}: SQNR {sqnr:.1} dB");
        }
    }
}

/// The report's error, `quant::squared_error` (one pass over affine codes, decoding first for
/// the others), equals Σx² and Σ(x − x̂)² of the decoded tensor, and is the same on every call.
#[test]
fn squared_error_matches_the_decoded_tensor() {
    use wgquant::quant::spec::{Choice, resolve};
    let shape = [37usize, 96];
    let x: Vec<f32> = (0..shape[0] * shape[1])
        .map(|i| value(i, 77) * (1.0 + (i % 5) as f32))
        .collect();
    for (scheme, granularity, mode) in [
        ("int4", "group:32", Some("symmetric")),
        ("int3", "channel", Some("asymmetric")),
        ("int8", "tensor", Some("restricted")),
        ("weq3", "channel", None),
        ("dc", "tensor", None),
    ] {
        let args = MethodArgs {
            scheme: Some(scheme.into()),
            granularity: Some(granularity.into()),
            mode: mode.map(Into::into),
            ..Default::default()
        };
        let Ok(Choice::Quantize(method)) = resolve(&args) else {
            panic!("{scheme}: {:?}", resolve(&args).err());
        };
        let qt = method.quantize(&Backend::Cpu, "w", &x, &shape).unwrap();
        let approx = wgquant::quant::dequantize(&Backend::Cpu, &qt).unwrap();
        let (mut signal, mut noise) = (0f64, 0f64);
        for (a, b) in x.iter().zip(&approx) {
            signal += f64::from(*a).powi(2);
            noise += (f64::from(*a) - f64::from(*b)).powi(2);
        }
        let got = wgquant::quant::squared_error(&qt, &x).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-30);
        assert!(
            close(got.0, signal) && close(got.1, noise) && noise > 0.0,
            "{scheme} {granularity}: {got:?} vs ({signal}, {noise})"
        );
        assert_eq!(
            got,
            wgquant::quant::squared_error(&qt, &x).unwrap(),
            "{scheme}"
        );
    }
}
