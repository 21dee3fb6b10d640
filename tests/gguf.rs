//! GGUF blocks byte-identical to the reference `gguf` Python package (vectors made by
//! scripts/gguf_vectors.py with gguf 0.19.0 and committed in tests/data).

mod common;

use wgquant::format::gguf::{GgmlType, encode};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn blocks_match_the_reference_package() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gguf_vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let values: Vec<f32> = hex(case["values_f32_hex"].as_str().unwrap())
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for (key, ty) in [
            ("f16", GgmlType::F16),
            ("q8_0", GgmlType::Q8_0),
            ("q4_0", GgmlType::Q4_0),
        ] {
            let want = hex(case[key].as_str().unwrap());
            let got = encode(ty, &values).unwrap();
            assert_eq!(got.len(), want.len(), "{} {key}: length", case["name"]);
            if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
                let block = i / ty.type_size();
                panic!(
                    "{} {key}: byte {i} (block {block}) is {:#04x}, reference {:#04x}",
                    case["name"], got[i], want[i]
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

#[test]
fn partial_blocks_are_refused() {
    assert!(encode(GgmlType::Q8_0, &[1.0; 33]).is_none());
    assert!(encode(GgmlType::Q4_0, &[1.0; 31]).is_none());
    assert_eq!(encode(GgmlType::F16, &[1.0; 3]).unwrap().len(), 6);
}

use std::borrow::Cow;
use std::process::Command;

use safetensors::Dtype;
use wgquant::checkpoint::file::{OutTensor, write_atomic};

fn f32_tensor(shape: &[usize], salt: u32) -> (Vec<f32>, OutTensor<'static>) {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let t = OutTensor {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        data: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    };
    (v, t)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
}

/// A minimal GGUF reader: key count, and per tensor (name, dims outermost first, type, offset),
/// and where the data section starts.
fn read_gguf(bytes: &[u8]) -> (u64, Vec<(String, Vec<u64>, u32, u64)>, usize) {
    let mut c = Cursor { bytes, at: 0 };
    assert_eq!(c.take(4), b"GGUF");
    assert_eq!(c.u32(), 3);
    let tensors = c.u64();
    let kvs = c.u64();
    for _ in 0..kvs {
        c.string();
        match c.u32() {
            4 => {
                c.u32();
            }
            8 => {
                c.string();
            }
            t => panic!("unexpected kv type {t}"),
        }
    }
    let mut infos = Vec::new();
    for _ in 0..tensors {
        let name = c.string();
        let nd = c.u32() as usize;
        let mut dims: Vec<u64> = (0..nd).map(|_| c.u64()).collect();
        dims.reverse();
        let ty = c.u32();
        let off = c.u64();
        infos.push((name, dims, ty, off));
    }
    (kvs, infos, c.at.next_multiple_of(32))
}

#[test]
fn export_writes_a_well_formed_file() {
    let dir = tempfile::tempdir().unwrap();
    let (w, wt) = f32_tensor(&[48, 64], 1);
    let (odd, ot) = f32_tensor(&[5, 33], 2);
    let (norm, nt) = f32_tensor(&[64], 3);
    let ids = OutTensor {
        dtype: Dtype::I32,
        shape: vec![3],
        data: Cow::Owned([1i32, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect()),
    };
    let model = dir.path().join("m.safetensors");
    write_atomic(
        &model,
        &[
            ("w".into(), wt),
            ("odd".into(), ot),
            ("norm".into(), nt),
            ("ids".into(), ids),
        ],
        Default::default(),
    )
    .unwrap();
    let out = dir.path().join("m.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_wgquant"))
        .args([
            "quantize",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "gguf",
            "--scheme",
            "q4_0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let (kvs, infos, data) = read_gguf(&bytes);
    assert_eq!(kvs, 4);
    let find = |n: &str| infos.iter().find(|i| i.0 == n).unwrap().clone();
    // Innermost axis filling blocks: q4_0; odd innermost axis: f16; 1-D: f32; ints as is.
    let expect = [
        ("w", vec![48, 64], 2, encode(GgmlType::Q4_0, &w).unwrap()),
        ("odd", vec![5, 33], 1, encode(GgmlType::F16, &odd).unwrap()),
        ("norm", vec![64], 0, encode(GgmlType::F32, &norm).unwrap()),
    ];
    for (name, dims, ty, blocks) in expect {
        let (_, d, t, off) = find(name);
        assert_eq!((d, t), (dims, ty), "{name}");
        assert_eq!(off % 32, 0, "{name} offset");
        let at = data + off as usize;
        assert_eq!(&bytes[at..at + blocks.len()], &blocks[..], "{name} data");
    }
    assert_eq!(find("ids").2, 26);
}

#[test]
fn the_reference_reader_opens_the_export_when_python_has_gguf() {
    // Needs python3 with the `gguf` package (not a test dependency): reported, not skipped
    // silently, when missing.
    let has = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has {
        eprintln!(
            "NOTE: python3 with gguf is not installed; GGUFReader check not run (pip install gguf==0.19.0)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, wt) = f32_tensor(&[16, 64], 5);
    let model = dir.path().join("m.safetensors");
    write_atomic(&model, &[("w".into(), wt)], Default::default()).unwrap();
    for q in ["q8_0", "q4_0", "f16"] {
        let out = dir.path().join(format!("m.{q}.gguf"));
        let o = Command::new(env!("CARGO_BIN_EXE_wgquant"))
            .args([
                "quantize",
                model.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "gguf",
                "--scheme",
                q,
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let script = format!(
            "import numpy as np\nfrom gguf import GGUFReader, quants\nfrom safetensors.numpy import load_file\n\
             r = GGUFReader('{}')\nx = load_file('{}')['w']\nt = r.tensors[0]\n\
             assert bytes(t.data.tobytes()) == np.asarray(quants.quantize(x, t.tensor_type)).tobytes()\n",
            out.display(),
            model.display()
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Every ggml type, as gguf-py's own table lists it (`GGMLQuantizationType` and
/// `GGML_QUANT_SIZES` in `gguf-py/gguf/constants.py`, llama.cpp vendored in the
/// llama-cpp-python 0.3.36 sdist): (name, id, elements per block, bytes per block).
const GGUF_PY_TYPES: &[(&str, u32, usize, usize)] = &[
    ("F32", 0, 1, 4),
    ("F16", 1, 1, 2),
    ("Q4_0", 2, 32, 18),
    ("Q4_1", 3, 32, 20),
    ("Q5_0", 6, 32, 22),
    ("Q5_1", 7, 32, 24),
    ("Q8_0", 8, 32, 34),
    ("Q8_1", 9, 32, 36),
    ("Q2_K", 10, 256, 84),
    ("Q3_K", 11, 256, 110),
    ("Q4_K", 12, 256, 144),
    ("Q5_K", 13, 256, 176),
    ("Q6_K", 14, 256, 210),
    ("Q8_K", 15, 256, 292),
    ("IQ2_XXS", 16, 256, 66),
    ("IQ2_XS", 17, 256, 74),
    ("IQ3_XXS", 18, 256, 98),
    ("IQ1_S", 19, 256, 50),
    ("IQ4_NL", 20, 32, 18),
    ("IQ3_S", 21, 256, 110),
    ("IQ2_S", 22, 256, 82),
    ("IQ4_XS", 23, 256, 136),
    ("I8", 24, 1, 1),
    ("I16", 25, 1, 2),
    ("I32", 26, 1, 4),
    ("I64", 27, 1, 8),
    ("F64", 28, 1, 8),
    ("IQ1_M", 29, 256, 56),
    ("BF16", 30, 1, 2),
    ("TQ1_0", 34, 256, 54),
    ("TQ2_0", 35, 256, 66),
    ("MXFP4", 39, 32, 17),
    ("NVFP4", 40, 64, 36),
    ("Q1_0", 41, 128, 18),
    ("Q2_0", 42, 64, 18),
];

#[test]
fn type_table_matches_gguf_py() {
    assert_eq!(GgmlType::all().count(), GGUF_PY_TYPES.len());
    for &(name, id, block, bytes) in GGUF_PY_TYPES {
        let ty = GgmlType::from_name(name).unwrap_or_else(|| panic!("{name} unknown"));
        assert_eq!(GgmlType::from_id(id), Some(ty), "{name}");
        assert_eq!(
            (ty.id(), ty.block_size(), ty.type_size()),
            (id, block, bytes),
            "{name}"
        );
        assert!(ty.name().eq_ignore_ascii_case(name), "{name}");
    }
    // Ids ggml removed (Q4_2, Q4_3, the interleaved Q4_0/IQ4_NL variants) and unassigned ones.
    for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
        assert_eq!(GgmlType::from_id(id), None, "id {id}");
    }
}

#[test]
fn export_refuses_what_llama_cpp_would_reject() {
    // ggml's gguf.cpp refuses a whole file with a name of 64 bytes or more, or a tensor of
    // more than 4 axes: the export names the tensor instead of writing such a file.
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(64);
    let cases = [
        (long.as_str(), vec![2usize, 32], "64 bytes"),
        ("conv5d", vec![1, 1, 1, 2, 32], "5 axes"),
    ];
    for (name, shape, why) in cases {
        let (_, t) = f32_tensor(&shape, 7);
        let (_, ok) = f32_tensor(&[2, 32], 8);
        let model = dir.path().join("m.safetensors");
        write_atomic(
            &model,
            &[("ok".into(), ok), (name.into(), t)],
            Default::default(),
        )
        .unwrap();
        let out = dir.path().join("m.gguf");
        let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
        let o = common::run_cli(&[
            "quantize", m, "-o", o, "--format", "gguf", "--scheme", "q8_0",
        ]);
        let err = common::stderr_of(&o);
        assert!(!o.status.success(), "{why}: accepted");
        assert!(err.contains(name) && err.contains(why), "{why}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{why}: {err}");
        assert!(!out.exists(), "{why}: output written");
    }
}

#[test]
fn the_reader_parses_an_export_and_survives_every_truncation_and_bit_flip() {
    use wgquant::format::gguf_read::{MetaValue, read_header};
    let dir = tempfile::tempdir().unwrap();
    let (_, wt) = f32_tensor(&[4, 64], 9);
    let (_, nt) = f32_tensor(&[64], 10);
    let model = dir.path().join("m.safetensors");
    write_atomic(
        &model,
        &[("w".into(), wt), ("n".into(), nt)],
        Default::default(),
    )
    .unwrap();
    let out = dir.path().join("m.gguf");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let r = common::run_cli(&[
        "quantize", m, "-o", o, "--format", "gguf", "--scheme", "q4_0",
    ]);
    assert!(r.status.success(), "{}", common::stderr_of(&r));
    let bytes = std::fs::read(&out).unwrap();
    let path = out.as_path();
    let h = read_header(path, &bytes, bytes.len() as u64).unwrap();
    assert_eq!((h.version, h.alignment), (3, 32));
    assert!(
        h.metadata
            .iter()
            .any(|(k, v)| k == "general.alignment" && *v == MetaValue::U32(32))
    );
    let names: Vec<_> = h
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.ty, t.shape.clone()))
        .collect();
    assert!(
        names.contains(&("w", GgmlType::Q4_0, vec![4, 64])),
        "{names:?}"
    );
    assert!(names.contains(&("n", GgmlType::F32, vec![64])), "{names:?}");
    for t in &h.tensors {
        assert!(h.data_start + t.offset + t.bytes <= bytes.len() as u64);
    }
    // Every truncation of the header's fields is an error, never a panic (the padding after
    // them is not needed); so is data cut short.
    let ok = |n: usize| read_header(path, &bytes[..n], bytes.len() as u64).is_ok();
    let fields_end = (0..=h.data_start as usize).find(|&n| ok(n)).unwrap();
    assert!(
        fields_end as u64 > h.data_start - h.alignment,
        "{fields_end}"
    );
    assert!((fields_end..=h.data_start as usize).all(ok));
    let data_end = h
        .tensors
        .iter()
        .map(|t| h.data_start + t.offset + t.bytes)
        .max()
        .unwrap();
    assert!(read_header(path, &bytes, data_end).is_ok());
    assert!(read_header(path, &bytes, data_end - 1).is_err());
    // Any single flipped bit in the header parses or fails cleanly.
    for i in 0..h.data_start as usize {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let _ = read_header(path, &b, b.len() as u64);
        }
    }
}

#[test]
fn the_reader_reads_every_value_type_and_a_custom_alignment() {
    use wgquant::format::gguf_read::{MetaValue, read_header};
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz_corpus/gguf/all_value_types.gguf"
    ));
    let bytes = std::fs::read(path).unwrap();
    let h = read_header(path, &bytes, bytes.len() as u64).unwrap();
    assert_eq!((h.version, h.alignment, h.metadata.len()), (3, 64, 15));
    let get = |k: &str| h.metadata.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("t.i64"), MetaValue::I64(-(1 << 40)));
    assert_eq!(get("t.f64"), MetaValue::F64(-2.25));
    assert_eq!(get("t.bool"), MetaValue::Bool(true));
    assert_eq!(
        get("t.nested"),
        MetaValue::Array(
            9,
            vec![
                MetaValue::Array(4, vec![MetaValue::U32(1)]),
                MetaValue::Array(6, vec![MetaValue::F32(0.5), MetaValue::F32(-0.5)]),
            ]
        )
    );
    let t = &h.tensors[0];
    assert_eq!(
        (t.name.as_str(), t.ty, t.shape.clone(), t.bytes),
        ("blk.0.ffn_down.weight", GgmlType::Q4_K, vec![2, 256], 288)
    );
    assert_eq!((h.tensors[1].offset, h.data_start % 64), (320, 0));
}
