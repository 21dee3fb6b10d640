//! Shared by the reader tests (`crafted.rs`, `fuzz.rs`): small valid quantized tensors of
//! every storage kind, written by the library itself, and files rebuilt from their parts so a
//! test can lie in one field.

// Each test binary uses a different subset.
#![allow(dead_code)]

pub mod case;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;
use wgquant::affine::{AffineMode, AffineScheme};
use wgquant::checkpoint::file::{OutTensor, write_atomic};
use wgquant::format::disk::{self, Part, Storage, TensorRecord};
use wgquant::format::{Encoding, Granularity, QuantizedTensor, pack};

/// One quantized tensor to store: name, tensor, original dtype, storage.
pub struct Sample {
    pub name: &'static str,
    pub tensor: QuantizedTensor,
    pub dtype: Dtype,
    pub storage: Storage,
}

/// Packed codes `f(i)` (below 2^bits) for `n` elements.
fn codes(n: usize, bits: u32, f: impl Fn(usize) -> u32) -> Vec<u32> {
    pack::pack(&(0..n).map(f).collect::<Vec<_>>(), bits)
}

/// A keep-mask keeping the elements where `keep(i)`.
fn mask(n: usize, keep: impl Fn(usize) -> bool) -> Vec<u32> {
    codes(n, 1, |i| u32::from(keep(i)))
}

/// Affine 4-bit asymmetric per group of 8 (F32), 3-bit symmetric per channel (BF16), a 2-bit
/// per-tensor codebook (F16), a pruned 3-bit codebook with a dense mask, and a pruned 4-bit
/// codebook stored sparse (Deep Compression).
pub fn samples() -> Vec<Sample> {
    let asym = AffineScheme::new(4, AffineMode::Asymmetric).expect("valid scheme");
    let sym = AffineScheme::new(3, AffineMode::Symmetric).expect("valid scheme");
    let levels = |groups: usize, bits: u32| -> Vec<f32> {
        (0..groups << bits)
            .map(|i| (i % (1 << bits)) as f32 * 0.25 - 0.5)
            .collect()
    };
    vec![
        Sample {
            name: "affine.asym",
            tensor: QuantizedTensor {
                shape: vec![4, 16],
                bits: 4,
                granularity: Granularity::Group(8),
                codes: codes(64, 4, |i| (i * 7 % 16) as u32),
                encoding: Encoding::Affine {
                    scheme: asym,
                    scale: (0..8).map(|g| 0.01 * (g + 1) as f32).collect(),
                    zero_point: (0..8).map(|g| g * 2).collect(),
                },
                mask: None,
            },
            dtype: Dtype::F32,
            storage: Storage::Dense,
        },
        Sample {
            name: "affine.sym",
            tensor: QuantizedTensor {
                shape: vec![3, 7],
                bits: 3,
                granularity: Granularity::Channel,
                codes: codes(21, 3, |i| (i % 8) as u32),
                encoding: Encoding::Affine {
                    scheme: sym,
                    scale: vec![0.5, 0.25, 0.125],
                    zero_point: vec![0; 3],
                },
                mask: None,
            },
            dtype: Dtype::BF16,
            storage: Storage::Dense,
        },
        Sample {
            name: "codebook",
            tensor: QuantizedTensor {
                shape: vec![5, 6],
                bits: 2,
                granularity: Granularity::Tensor,
                codes: codes(30, 2, |i| (i % 4) as u32),
                encoding: Encoding::Codebook {
                    levels: levels(1, 2),
                    thresholds: None,
                },
                mask: None,
            },
            dtype: Dtype::F16,
            storage: Storage::Dense,
        },
        Sample {
            name: "pruned",
            tensor: QuantizedTensor {
                shape: vec![2, 40],
                bits: 3,
                granularity: Granularity::Channel,
                codes: codes(80, 3, |i| (i % 8) as u32),
                encoding: Encoding::Codebook {
                    levels: levels(2, 3),
                    thresholds: None,
                },
                mask: Some(mask(80, |i| i % 3 == 0)),
            },
            dtype: Dtype::F32,
            storage: Storage::Dense,
        },
        Sample {
            name: "dc",
            tensor: QuantizedTensor {
                shape: vec![8, 32],
                bits: 4,
                granularity: Granularity::Tensor,
                codes: codes(256, 4, |i| (i * 5 % 16) as u32),
                encoding: Encoding::Codebook {
                    levels: levels(1, 4),
                    thresholds: None,
                },
                mask: Some(mask(256, |i| i % 5 == 0 || i % 7 == 0)),
            },
            dtype: Dtype::F32,
            storage: Storage::SparseHuffman { index_bits: 3 },
        },
    ]
}

/// The sample called `name`.
pub fn sample(name: &str) -> Sample {
    samples()
        .into_iter()
        .find(|s| s.name == name)
        .expect("a sample of that name")
}

/// The record and parts the library writes for `s`.
pub fn stored(s: &Sample) -> (TensorRecord, Vec<Part>) {
    disk::to_parts(s.name, &s.tensor, "test", s.dtype, None, s.storage).expect("stores")
}

/// A plain F32 tensor.
pub fn plain(name: &str, values: &[f32]) -> (String, OutTensor<'static>) {
    (
        name.to_string(),
        OutTensor {
            dtype: Dtype::F32,
            shape: vec![values.len()],
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        },
    )
}

/// Writes a wgquant file holding the quantized tensors `(name, record, parts)` (records and
/// parts as given, however they lie) and the plain tensors `extra`.
pub fn write_parts(
    path: &Path,
    quantized: &[(String, TensorRecord, Vec<Part>)],
    extra: &[(String, OutTensor<'static>)],
) {
    let records: BTreeMap<String, TensorRecord> = quantized
        .iter()
        .map(|(n, r, _)| (n.clone(), r.clone()))
        .collect();
    let meta: HashMap<String, String> = disk::metadata(&records, None).expect("metadata");
    let mut tensors: Vec<(String, OutTensor<'static>)> = extra.to_vec();
    for (_, _, parts) in quantized {
        for p in parts {
            tensors.push((
                p.name.clone(),
                OutTensor {
                    dtype: p.dtype,
                    shape: p.shape.clone(),
                    data: Cow::Owned(p.data.clone()),
                },
            ));
        }
    }
    write_atomic(path, &tensors, meta).expect("writes the file");
}

/// Writes sample `s` to `path` after `edit` has changed its record or parts.
pub fn write_edited(path: &Path, s: &Sample, edit: impl FnOnce(&mut TensorRecord, &mut Vec<Part>)) {
    let (mut rec, mut parts) = stored(s);
    edit(&mut rec, &mut parts);
    write_parts(
        path,
        &[(s.name.to_string(), rec, parts)],
        &[plain("bias", &[0.5; 3])],
    );
}

/// The part of `parts` with suffix `suffix`.
pub fn part<'p>(parts: &'p mut [Part], suffix: &str) -> &'p mut Part {
    parts
        .iter_mut()
        .find(|p| p.name.ends_with(suffix))
        .expect("a part with that suffix")
}

/// Sets a part's bytes (and its shape to match, as 4-byte elements).
pub fn set_data(p: &mut Part, data: Vec<u8>) {
    p.shape = vec![data.len() / 4];
    p.data = data;
}

/// Little-endian bytes of 4-byte values.
pub fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}
