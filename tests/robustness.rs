//! The guarantees a hostile user checks (issue "Nothing lost, nothing crashes"): no input or
//! other existing file is ever overwritten, no device or FIFO is replaced, signals leave no
//! temporary files, outputs get the umask's permissions, every finite input decodes to finite
//! values, and pruning prunes exactly the fraction asked for, ties or not.

mod common;

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::{Dtype, SafeTensors};
use wgquant::checkpoint::file::{OutTensor, write_atomic};
use wgquant::quant::{Backend, prune};

const BIN: &str = env!("CARGO_BIN_EXE_wgquant");

use common::{run_cli as run, stderr_of as stderr};

fn fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {err}");
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].contains(needle), "'{}' lacks '{needle}'", lines[0]);
}

fn bytes_of(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("no fixture dtype {other:?}"),
    }
}

fn values_of(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("no fixture dtype {other:?}"),
    }
}

/// A deterministic pseudo-random value in [-1, 1).
fn value(i: usize) -> f32 {
    common::hashed_value(i, 0)
}

fn write_model(path: &Path, tensors: &[(&str, Dtype, &[usize], Vec<f32>)]) {
    let outs: Vec<(String, OutTensor<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, v)| {
            (
                name.to_string(),
                OutTensor {
                    dtype: *dtype,
                    shape: shape.to_vec(),
                    data: Cow::Owned(bytes_of(v, *dtype)),
                },
            )
        })
        .collect();
    write_atomic(path, &outs, HashMap::new()).expect("writes the fixture");
}

fn small_model(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let w: Vec<f32> = (0..64 * 64).map(value).collect();
    write_model(
        &path,
        &[
            ("a.weight", Dtype::F32, &[64, 64], w.clone()),
            ("b.weight", Dtype::F32, &[64, 64], w),
        ],
    );
    path
}

/// Every file under `dir` with its bytes, to prove nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn partials(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .count()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Decoded tensors of a safetensors file, as f32.
fn decoded(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, values_of(v.data(), v.dtype())))
        .collect()
}

#[test]
fn sharded_output_named_like_the_input_shards_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w: Vec<f32> = (0..32 * 32).map(value).collect();
    let shards = [
        "m-00001-of-00002.safetensors",
        "m-00002-of-00002.safetensors",
    ];
    for (k, s) in shards.iter().enumerate() {
        write_model(
            &d.join(s),
            &[(&format!("t{k}.weight"), Dtype::F32, &[32, 32], w.clone())],
        );
    }
    let index = serde_json::json!({
        "metadata": {},
        "weight_map": { "t0.weight": shards[0], "t1.weight": shards[1] },
    });
    std::fs::write(d.join("m.safetensors.index.json"), index.to_string()).unwrap();
    let before = snapshot(d);
    let o = run(&[
        "quantize",
        d.join("m.safetensors.index.json").to_str().unwrap(),
        "-o",
        d.join("m.safetensors").to_str().unwrap(),
        "--max-shard-size",
        "1B",
        "--device",
        "cpu",
    ]);
    fails_with(&o, "would overwrite the input");
    assert_eq!(snapshot(d), before, "an input changed");
    assert_eq!(partials(d), 0);
}

#[test]
fn report_equal_to_the_input_or_the_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d, "model.safetensors");
    let out = d.join("q.safetensors");
    let before = snapshot(d);
    for report in [&model, &out] {
        let o = run(&[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(
            !o.status.success(),
            "--report {} accepted",
            report.display()
        );
        assert_eq!(snapshot(d), before, "a file changed");
        assert!(!out.exists());
    }
}

#[test]
fn report_into_a_missing_directory_fails_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d, "model.safetensors");
    let out = d.join("q.safetensors");
    let report = d.join("no-such-dir").join("r.json");
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    fails_with(&o, "directory does not exist");
    assert!(
        !out.exists(),
        "the output was written although the run failed"
    );
    assert_eq!(partials(d), 0);
}

#[test]
fn fifo_and_device_outputs_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d, "model.safetensors");
    let fifo = d.join("out.fifo");
    mkfifo(&fifo);
    for cmd in ["quantize", "dequantize"] {
        let input = if cmd == "quantize" {
            model.clone()
        } else {
            let q = d.join("q.safetensors");
            let o = run(&[
                "quantize",
                model.to_str().unwrap(),
                "-o",
                q.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            q
        };
        let o = run(&[
            cmd,
            input.to_str().unwrap(),
            "-o",
            fifo.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        fails_with(&o, "a FIFO");
        let meta = std::fs::symlink_metadata(&fifo).unwrap();
        assert!(meta.file_type().is_fifo(), "{cmd} replaced the FIFO");
    }
    // A report aimed at a device is refused before the run. Through a link to /dev/null, so
    // that a regression would replace the link, not the system's device.
    let null = d.join("null");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let o = run(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        d.join("q2.safetensors").to_str().unwrap(),
        "--report",
        null.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    fails_with(&o, "a character device");
    assert!(
        std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!d.join("q2.safetensors").exists());
}

#[test]
fn fifo_input_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.safetensors");
    mkfifo(&fifo);
    for cmd in ["quantize", "dequantize", "inspect"] {
        let out = dir.path().join("o.safetensors");
        let mut args = vec![cmd, fifo.to_str().unwrap()];
        if cmd != "inspect" {
            args.extend(["-o", out.to_str().unwrap()]);
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{cmd} on a FIFO input still waits after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = child.wait_with_output().unwrap();
        assert_eq!(status.code(), Some(1), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("a FIFO"), "{cmd}: {}", stderr(&o));
    }
}

/// A run long enough to be interrupted: the lin4 x0 search (63 candidates × 3 rounds) over
/// 4M weights as one group, seconds on the CPU.
fn slow_model(dir: &Path) -> PathBuf {
    let path = dir.join("big.safetensors");
    let w: Vec<f32> = (0..1024 * 4096).map(value).collect();
    write_model(&path, &[("w", Dtype::F32, &[1024, 4096], w)]);
    path
}

#[test]
fn signals_remove_temporary_files_and_exit_128_plus_n() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = slow_model(d);
    let out = d.join("q.safetensors");
    // An existing output must survive the interrupted run untouched.
    std::fs::write(&out, b"previous result").unwrap();
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let mut child = Command::new(BIN)
            .args([
                "quantize",
                model.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--scheme",
                "lin4",
                "--granularity",
                "tensor",
                "--device",
                "cpu",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while partials(d) == 0 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before it could be interrupted"
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert_eq!(partials(d), 0, "signal {sig} left temporary files");
        assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
    }
}

/// Runs `cmd` with the umask `mask`.
fn with_umask(args: &[&str], mask: libc::mode_t) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // SAFETY: umask is async-signal-safe and touches nothing but the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn outputs_follow_the_umask_and_keep_a_replaced_files_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d, "model.safetensors");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (mask, want) in [(0o022, 0o644), (0o027, 0o640)] {
        let out = d.join(format!("q{mask:o}.safetensors"));
        let report = d.join(format!("r{mask:o}.json"));
        let o = with_umask(
            &[
                "quantize",
                model.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--report",
                report.to_str().unwrap(),
            ],
            mask,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(mode(&out), want, "output under umask {mask:o}");
        assert_eq!(mode(&report), want, "report under umask {mask:o}");
    }
    let out = d.join("replaced.safetensors");
    std::fs::write(&out, b"old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o604)).unwrap();
    let o = with_umask(
        &[
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        0o077,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&out), 0o604, "replacing keeps the file's mode");
}

#[test]
fn escape_sequences_in_names_do_not_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("evil.safetensors");
    let name = "w\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m";
    let w: Vec<f32> = (0..64 * 64).map(value).collect();
    write_model(&path, &[(name, Dtype::F32, &[64, 64], w)]);
    let q = d.join("q.safetensors");
    let outputs = [
        run(&[
            "quantize",
            path.to_str().unwrap(),
            "-o",
            q.to_str().unwrap(),
        ]),
        run(&["inspect", q.to_str().unwrap()]),
        run(&["inspect", q.to_str().unwrap(), "--json"]),
        run(&[
            "quantize",
            path.to_str().unwrap(),
            "-o",
            q.to_str().unwrap(),
            "--dry-run",
        ]),
    ];
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "a control character reached stdout: {text:?}"
        );
        assert!(
            text.contains("\\u001b"),
            "the name is shown escaped: {text}"
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&outputs[2].stdout).unwrap();
    assert!(
        json.to_string().contains("owned"),
        "JSON stays valid and names the tensor"
    );
    // An error naming the tensor is escaped too.
    let nan: Vec<f32> = vec![f32::NAN; 64 * 64];
    write_model(&path, &[(name, Dtype::F32, &[64, 64], nan)]);
    let o = run(&[
        "quantize",
        path.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains('\u{1b}'), "{:?}", stderr(&o));
}

#[test]
fn report_seconds_add_up_to_at_most_the_wall_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("m.safetensors");
    let tensors: Vec<(String, Vec<f32>)> = (0..6)
        .map(|k| {
            (
                format!("l{k}.weight"),
                (0..256 * 512).map(|i| value(i + k)).collect(),
            )
        })
        .collect();
    let spec: Vec<(&str, Dtype, &[usize], Vec<f32>)> = tensors
        .iter()
        .map(|(n, v)| (n.as_str(), Dtype::F32, &[256usize, 512][..], v.clone()))
        .collect();
    write_model(&path, &spec);
    let report = d.join("r.json");
    let o = run(&[
        "quantize",
        path.to_str().unwrap(),
        "-o",
        d.join("q.safetensors").to_str().unwrap(),
        "--scheme",
        "int4",
        "--calib",
        "mse",
        "--report",
        report.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let sum: f64 = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seconds"].as_f64().unwrap())
        .sum();
    let wall = r["totals"]["seconds"].as_f64().unwrap();
    assert!(sum <= wall, "tensors {sum} s > run {wall} s");
}

#[test]
fn bench_size_is_validated_before_anything_is_built() {
    for bad in ["0", "-1", "NaN", "inf", "1e9", "x"] {
        let arg = format!("--size-gb={bad}");
        let o = run(&["bench", "checkpoint", &arg, "--dir", "/nonexistent/never"]);
        assert_eq!(o.status.code(), Some(2), "--size-gb {bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("size-gb"), "{}", stderr(&o));
    }
}

/// Quantizes `values` (stored as `dtype`) with `args`, decodes, and returns the decoded values.
fn round_trip(dir: &Path, dtype: Dtype, values: Vec<f32>, args: &[&str], device: &str) -> Vec<f32> {
    let n = values.len();
    let input = dir.join("x.safetensors");
    write_model(&input, &[("x", dtype, &[n / 64, 64], values)]);
    let q = dir.join("xq.safetensors");
    let back = dir.join("xd.safetensors");
    let mut a = vec![
        "quantize",
        input.to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
    ];
    a.extend(args);
    a.extend(["--device", device]);
    let o = run(&a);
    assert!(o.status.success(), "{args:?} on {device}: {}", stderr(&o));
    let o = run(&[
        "dequantize",
        q.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
        "--device",
        device,
    ]);
    assert!(o.status.success(), "{args:?} on {device}: {}", stderr(&o));
    decoded(&back).remove("x").unwrap()
}

#[test]
fn finite_extremes_decode_to_finite_values() {
    let dir = tempfile::tempdir().unwrap();
    let extremes = [
        (Dtype::F16, half::f16::MAX.to_f32()),
        (Dtype::BF16, half::bf16::MAX.to_f32()),
        (Dtype::F32, f32::MAX),
    ];
    let schemes: [&[&str]; 5] = [
        &["--scheme", "int4"],
        &["--scheme", "int8", "--granularity", "group:32"],
        &["--scheme", "int4", "--mode", "asymmetric"],
        &[
            "--scheme",
            "int3",
            "--mode",
            "restricted",
            "--granularity",
            "tensor",
        ],
        &["--scheme", "dc", "--bits", "3", "--sparsity", "0.25"],
    ];
    for device in common::cli_devices() {
        for (dtype, max) in extremes {
            // ±max at both ends of every row, a spread of ordinary values between.
            let values: Vec<f32> = (0..64 * 64)
                .map(|i| match i % 64 {
                    0 => max,
                    1 => -max,
                    _ => value(i) * max * 0.5,
                })
                .collect();
            let stored = values_of(&bytes_of(&values, dtype), dtype);
            for args in schemes {
                let back = round_trip(dir.path(), dtype, values.clone(), args, device);
                let bad = back.iter().position(|v| !v.is_finite());
                assert_eq!(bad, None, "{dtype:?} ±{max} {args:?} on {device}: {back:?}");
                // Symmetric extremes still decode near themselves (within 30% of the range: the
                // scale cap is a power of two); asymmetric grids past f32::MAX/2 are only
                // promised finite.
                let err = (back[0] - stored[0]).abs().max((back[1] - stored[1]).abs());
                if !args.contains(&"dc") && !args.contains(&"asymmetric") {
                    assert!(
                        err <= 0.3 * max,
                        "{dtype:?} {args:?} on {device}: error {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn half_casts_refuse_values_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("x.safetensors");
    let mut v: Vec<f32> = (0..64 * 64).map(value).collect();
    v[77] = 1e5;
    write_model(&input, &[("big", Dtype::F32, &[64, 64], v)]);
    let out = dir.path().join("h.safetensors");
    let o = run(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--scheme",
        "f16",
        "--device",
        "cpu",
    ]);
    fails_with(&o, "element 77");
    assert!(stderr(&o).contains("'big'"));
    assert!(!out.exists());
}

#[test]
fn an_all_zero_tensor_decodes_to_zeros() {
    let dir = tempfile::tempdir().unwrap();
    for device in common::cli_devices() {
        for scheme in ["weq4", "weq2", "lin3", "exp3", "int4", "dc"] {
            let back = round_trip(
                dir.path(),
                Dtype::F32,
                vec![0.0; 64 * 64],
                &["--scheme", scheme],
                device,
            );
            assert!(
                back.iter().all(|&v| v == 0.0),
                "{scheme} on {device}: {:?}",
                &back[..4]
            );
        }
    }
}

#[test]
fn pruning_removes_exactly_the_fraction_asked_for_despite_ties() {
    let backends: Vec<Backend<'_>> = std::iter::once(Backend::Cpu)
        .chain(common::gpu().map(Backend::Gpu))
        .collect();
    let n = 10_007usize;
    let constant = vec![0.25f32; n];
    // BF16-rounded Gaussian-like data: many magnitudes tie.
    let tied: Vec<f32> = common::generate(common::Dist::Normal, n, common::seed_for("prune ties"))
        .into_iter()
        .map(|v| half::bf16::from_f32(v).to_f32())
        .collect();
    for backend in &backends {
        for (what, data) in [("constant", &constant), ("bf16 gaussian", &tied)] {
            for s in [0.1f32, 0.5, 0.9] {
                let mask = prune::keep_mask(backend, data, s).unwrap();
                let pruned = n - prune::kept(&mask);
                let want = (f64::from(s) * n as f64).round() as usize;
                assert_eq!(pruned, want, "{what} at sparsity {s}");
            }
        }
    }
}

#[test]
fn deep_compression_of_a_constant_tensor_keeps_ninety_percent() {
    let dir = tempfile::tempdir().unwrap();
    for device in common::cli_devices() {
        let back = round_trip(
            dir.path(),
            Dtype::F32,
            vec![0.5; 64 * 64],
            &["--scheme", "dc", "--sparsity", "0.1"],
            device,
        );
        let zeros = back.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, (0.1f64 * 4096.0).round() as usize, "on {device}");
        assert!(back.iter().all(|&v| v == 0.0 || v == 0.5), "on {device}");
    }
}

#[test]
fn a_plot_never_replaces_the_checkpoint_it_draws() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = small_model(d, "model.safetensors");
    let before = snapshot(d);
    let o = run(&[
        "plot",
        "levels",
        "--checkpoint",
        model.to_str().unwrap(),
        "--tensor",
        "a.weight",
        "-o",
        model.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    fails_with(&o, "would overwrite the input");
    assert_eq!(snapshot(d), before);
}

#[test]
fn wrapping_a_buffer_with_a_shape_that_overflows_is_an_error() {
    let Some(ctx) = common::gpu() else { return };
    let buffer = ctx
        .device()
        .create_buffer(&wgquant::wgpu::BufferDescriptor {
            label: None,
            size: 64,
            usage: wgquant::gpu::GpuTensor::USAGE,
            mapped_at_creation: false,
        });
    // 2^62 · 4 elements of 4 bytes wrap u64 to 0 bytes, which would "fit" any buffer.
    let shape = [1usize << 62, 4];
    let r = wgquant::gpu::GpuTensor::wrap(buffer, 0, &shape, wgquant::gpu::ElemType::F32);
    assert!(r.is_err(), "an overflowing shape was wrapped");
}
