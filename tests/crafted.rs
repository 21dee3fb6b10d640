//! Crafted quantized files (issue 11, "Nothing lost, nothing crashes"): each lies in one field
//! of a record or a part, and must be refused with one line naming the tensor, by the
//! library (`inspect_file`, `dequantize_file`) and by the binary (`inspect`, `dequantize`),
//! never with a panic, an abort or an allocation the file's bytes do not justify.

mod readers;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use readers::{le_bytes, part, sample, set_data, write_edited};
use wgquant::checkpoint::{dequantize_file, inspect_file};
use wgquant::format::Granularity;
use wgquant::format::disk::{self, Part, TensorRecord};
use wgquant::quant::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_wgquant");

/// Address space the binary may take: far above what these small files need, far below what
/// the defects tried to allocate, so an old build aborts quickly instead of swapping.
const CLI_ADDRESS_SPACE: u64 = 8 << 30;

fn wgquant(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CLI_ADDRESS_SPACE,
                rlim_max: CLI_ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("the wgquant binary runs")
}

/// The library error must be one line naming `tensor` (and `detail`).
fn check_message(what: &str, msg: &str, tensor: &str, detail: &str) {
    assert_eq!(msg.lines().count(), 1, "{what}: not one line: {msg}");
    assert!(
        msg.contains(&format!("'{tensor}'")),
        "{what}: does not name '{tensor}': {msg}"
    );
    assert!(
        msg.contains(detail),
        "{what}: does not say '{detail}': {msg}"
    );
}

/// The binary must fail cleanly: exit status 1 (not 101 for a panic, 134 for an abort, nor a
/// signal), one stderr line naming the tensor, no output file.
fn check_cli(args: &[&str], tensor: &str, detail: &str, out: Option<&Path>) {
    let o = wgquant(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{args:?}: status {:?}, stderr: {err}",
        o.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: stderr is not one line: {err}");
    check_message(&format!("{args:?}"), lines[0], tensor, detail);
    if let Some(out) = out {
        assert!(!out.exists(), "{args:?}: {} written", out.display());
    }
}

/// `path` must be refused by inspect and dequantize, library and binary, naming `tensor`.
/// Inspection comes first: on a defective build it fails before dequantization tries to
/// allocate what the file claims.
fn check_refused(path: &Path, tensor: &str, detail: &str) {
    let out = path.with_extension("out.safetensors");
    let p = path.to_str().expect("utf-8 path");
    let o = out.to_str().expect("utf-8 path");
    match inspect_file(path) {
        Ok(s) => panic!("inspect_file accepted {p}: {s:?}"),
        Err(e) => check_message("inspect_file", &e.to_string(), tensor, detail),
    }
    check_cli(&["inspect", p], tensor, detail, None);
    check_cli(
        &["dequantize", p, "-o", o, "--device", "cpu"],
        tensor,
        detail,
        Some(&out),
    );
    match dequantize_file(&Backend::Cpu, path, &out) {
        Ok(n) => panic!("dequantize_file accepted {p} ({n} tensors)"),
        Err(e) => check_message("dequantize_file", &e.to_string(), tensor, detail),
    }
    assert!(!out.exists(), "dequantize_file wrote {o}");
}

/// Sample `name` edited by `edit`, written to a fresh directory, must be refused.
fn refused(name: &str, detail: &str, edit: impl FnOnce(&mut TensorRecord, &mut Vec<Part>)) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("crafted.safetensors");
    write_edited(&path, &sample(name), edit);
    check_refused(&path, name, detail);
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    le_bytes(v, f32::to_le_bytes)
}

/// Every sample, unedited, inspects and dequantizes through the library and the binary.
#[test]
fn valid_samples_still_read() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for s in readers::samples() {
        let path = dir.path().join(format!("{}.safetensors", s.name));
        write_edited(&path, &s, |_, _| {});
        let summary = inspect_file(&path).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(
            summary.tensors.iter().any(|t| t.name == s.name),
            "{summary:?}"
        );
        let out = dir.path().join(format!("{}.out.safetensors", s.name));
        dequantize_file(&Backend::Cpu, &path, &out).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let p = path.to_str().expect("utf-8 path");
        let o = dir.path().join(format!("{}.cli.safetensors", s.name));
        let r = wgquant(&[
            "dequantize",
            p,
            "-o",
            o.to_str().expect("utf-8"),
            "--device",
            "cpu",
        ]);
        assert!(
            r.status.success(),
            "{}: {}",
            s.name,
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

/// Item 1: a `.wq_mask` shorter than the tensor (indexing past it panicked, exit 101).
#[test]
fn short_mask_part_is_refused() {
    refused("pruned", "wq_mask", |_, parts| {
        let m = part(parts, disk::MASK);
        let short = m.data[..m.data.len() - 4].to_vec();
        set_data(m, short);
    });
}

/// Item 2: a shape of 2^40 + 256 elements with tiny parts (symmetric zero points were
/// allocated for every group before any check: abort, exit 134).
#[test]
fn huge_shape_is_refused_before_allocating() {
    refused("affine.sym", "wq_scale", |rec, _| {
        rec.shape = vec![4_294_967_297, 256];
        rec.granularity = Granularity::Group(1);
    });
}

/// Item 3: a shape whose element count wraps to 16384 ([2^63 + 1, 64, 256]), with parts for
/// the wrapped count (read as a valid tensor: exit 0 and an invalid file).
#[test]
fn wrapping_shape_is_refused() {
    refused(
        "affine.asym",
        "more elements than usize holds",
        |rec, parts| {
            rec.shape = vec![(1usize << 63) + 1, 64, 256];
            rec.granularity = Granularity::Tensor;
            set_data(part(parts, disk::CODES), vec![0x11; 16384 * 4 / 8]);
            set_data(part(parts, disk::SCALE), f32_le(&[0.01]));
            set_data(part(parts, disk::ZERO), le_bytes(&[1i32], i32::to_le_bytes));
        },
    );
}

/// Item 4: a sparse (Deep Compression) record of a few hundred stored bytes claiming
/// 65536 × 65535 elements (decoded densely, it grew to 23 GB and was killed).
#[test]
fn sparse_claiming_billions_of_elements_is_refused() {
    refused("dc", "claims 4294901760 elements", |rec, _| {
        rec.shape = vec![65536, 65535];
    });
}

/// Item 5: zero points outside [qmin, qmax] (i32::MIN wraps q − z on both backends).
#[test]
fn zero_point_outside_the_scheme_range_is_refused() {
    for z in [i32::MIN, -1, 16, i32::MAX] {
        refused("affine.asym", &format!("zero point {z}"), |_, parts| {
            let zp = part(parts, disk::ZERO);
            let mut zs: Vec<i32> = zp
                .data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            zs[3] = z;
            set_data(zp, le_bytes(&zs, i32::to_le_bytes));
        });
    }
}

/// Item 5: scales that are not finite, or whose decoded values overflow f32 (they decoded to
/// ±Inf silently).
#[test]
fn scales_decoding_past_the_dtype_are_refused() {
    for (name, scale, detail) in [
        // Group 0 has zero point 0: 15 steps of 1e38 exceed f32.
        ("affine.asym", 1e38, "decodes to"),
        ("affine.asym", f32::INFINITY, "not a positive number"),
        ("affine.asym", f32::NAN, "not a positive number"),
        // BF16 holds up to ~3.39e38, as f32 does; 4 steps of 1e38 exceed both.
        ("affine.sym", 1e38, "decodes to"),
    ] {
        refused(name, detail, |_, parts| {
            let sp = part(parts, disk::SCALE);
            let mut s: Vec<f32> = sp
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            s[0] = scale;
            set_data(sp, f32_le(&s));
        });
    }
    // Past F16's range but finite in f32 is read: decoding saturates at ±65504 (an F16
    // input at ±65504 under symmetric int4 decodes to −69871 legitimately).
}

/// Item 5: codebook levels that are NaN or infinite.
#[test]
fn levels_not_finite_or_past_the_dtype_are_refused() {
    for (level, detail) in [
        (f32::NAN, "level 2 (NaN)"),
        (f32::NEG_INFINITY, "level 2 (-inf)"),
    ] {
        refused("codebook", detail, |_, parts| {
            set_data(
                part(parts, disk::LEVELS),
                f32_le(&[-0.5, -0.25, level, 0.25]),
            );
        });
    }
}

/// Parts of the wrong size are refused before being read: codes one word long, scales short,
/// levels for the wrong bit width.
#[test]
fn parts_of_the_wrong_size_are_refused() {
    refused("affine.asym", "wq_codes", |_, parts| {
        let c = part(parts, disk::CODES);
        let mut long = c.data.clone();
        long.extend([0; 4]);
        set_data(c, long);
    });
    refused("affine.asym", "wq_scale", |_, parts| {
        set_data(part(parts, disk::SCALE), f32_le(&[0.1; 7]));
    });
    refused("codebook", "wq_levels", |rec, _| rec.bits = 3);
    refused("pruned", "wq_mask", |_, parts| {
        part(parts, disk::MASK).dtype = safetensors::Dtype::I32;
    });
}

/// A half-precision cast whose record lies about its shape or dtype (`disk::check_cast`, for
/// the dequantizer to call before writing the record's shape over the stored data).
#[test]
fn lying_cast_records_are_refused() {
    let data = [0u8; 24];
    let stored = |dtype, shape: &[usize]| disk::StoredPart {
        dtype,
        shape: shape.to_vec(),
        data: &data,
    };
    let rec = |shape: Vec<usize>, dtype: &str| {
        let mut r = readers::stored(&sample("codebook")).0;
        r.encoding = "half".into();
        r.shape = shape;
        r.dtype = dtype.into();
        r
    };
    use safetensors::Dtype::{F16, F32};
    assert!(disk::check_cast("c", &rec(vec![3, 4], "F32"), &stored(F16, &[3, 4])).is_ok());
    for (r, part, detail) in [
        (
            rec(vec![4, 3], "F32"),
            stored(F16, &[3, 4]),
            "is not the stored",
        ),
        (
            rec(vec![(1 << 63) + 1, 64, 256], "F32"),
            stored(F16, &[3, 4]),
            "more elements",
        ),
        (
            rec(vec![3, 4], "U8"),
            stored(F16, &[3, 4]),
            "unsupported original dtype",
        ),
        (
            rec(vec![3, 4], "F32"),
            stored(F32, &[3, 4]),
            "stored as F32",
        ),
    ] {
        let e = disk::check_cast("c", &r, &part)
            .expect_err(detail)
            .to_string();
        check_message("check_cast", &e, "c", detail);
    }
}
