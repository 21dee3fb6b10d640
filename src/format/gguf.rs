//! GGUF (llama.cpp's file format, version 3): the block encodings F16, Q8_0 and Q4_0,
//! byte-identical to the reference `gguf` Python package (gguf-py 0.19, `quants.py`), and the
//! header layout.
//!
//! The blocks are encoded on the CPU on purpose: byte identity needs correctly rounded f32
//! division, which WGSL does not promise (2.5 ULP), and the encoders run at memory speed.
//!
//! File layout: magic `GGUF`, version 3 (u32), tensor count and key-value count (u64), the
//! key-value pairs, the tensor infos (name, dims innermost first, type, data offset), padding to
//! the alignment, then each tensor's data at its offset (multiples of the alignment).

use rayon::prelude::*;

/// Bytes every tensor's data offset is a multiple of (`general.alignment`'s default).
pub const ALIGNMENT: u64 = 32;
/// `GGUF` as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;
/// The version written.
pub const VERSION: u32 = 3;
/// A tensor name must be shorter than this many bytes (`GGML_MAX_NAME`; ggml's `gguf.cpp`
/// refuses the file otherwise).
pub const MAX_NAME_BYTES: usize = 64;
/// Most axes a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// ggml tensor types (`enum ggml_type` in llama.cpp's `ggml.h`), with their block size and
/// bytes per block (`ggml-common.h`). Reading needs every one; wgquant encodes a subset
/// ([`encode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32 = 0,
    /// 16-bit float.
    F16 = 1,
    /// Blocks of 32: an f16 scale d = (value of largest magnitude)/−8 and 4-bit codes.
    Q4_0 = 2,
    /// Blocks of 32: f16 scale and minimum, 4-bit codes.
    Q4_1 = 3,
    /// Blocks of 32: f16 scale, 5-bit codes (high bits in a u32).
    Q5_0 = 6,
    /// Blocks of 32: f16 scale and minimum, 5-bit codes.
    Q5_1 = 7,
    /// Blocks of 32: an f16 scale d = max|x|/127 and int8 codes.
    Q8_0 = 8,
    /// Blocks of 32: f16 scale and sum, int8 codes (activations).
    Q8_1 = 9,
    /// Super-blocks of 256: 16 sub-blocks with 4-bit scales and minimums, 2-bit codes.
    Q2_K = 10,
    /// Super-blocks of 256: 16 sub-blocks with 6-bit scales, 3-bit codes.
    Q3_K = 11,
    /// Super-blocks of 256: 8 sub-blocks with 6-bit scales and minimums, 4-bit codes.
    Q4_K = 12,
    /// Super-blocks of 256: 8 sub-blocks with 6-bit scales and minimums, 5-bit codes.
    Q5_K = 13,
    /// Super-blocks of 256: 16 sub-blocks with int8 scales, 6-bit codes.
    Q6_K = 14,
    /// Super-blocks of 256: f32 scale, int8 codes, block sums (activations).
    Q8_K = 15,
    /// Lattice type, 2.06 bits per weight.
    Iq2Xxs = 16,
    /// Lattice type, 2.31 bits per weight.
    Iq2Xs = 17,
    /// Lattice type, 3.06 bits per weight.
    Iq3Xxs = 18,
    /// Lattice type, 1.56 bits per weight.
    Iq1S = 19,
    /// Blocks of 32: f16 scale, 4-bit indices into a fixed non-linear table.
    Iq4Nl = 20,
    /// Lattice type, 3.44 bits per weight.
    Iq3S = 21,
    /// Lattice type, 2.56 bits per weight.
    Iq2S = 22,
    /// Super-blocks of 256: 6-bit sub-block scales, 4-bit non-linear indices.
    Iq4Xs = 23,
    /// 8-bit integer.
    I8 = 24,
    /// 16-bit integer.
    I16 = 25,
    /// 32-bit integer.
    I32 = 26,
    /// 64-bit integer.
    I64 = 27,
    /// 64-bit float.
    F64 = 28,
    /// Lattice type, 1.75 bits per weight.
    Iq1M = 29,
    /// bfloat16.
    Bf16 = 30,
    /// Ternary, 1.69 bits per weight.
    Tq1_0 = 34,
    /// Ternary, 2.06 bits per weight.
    Tq2_0 = 35,
    /// Blocks of 32: an E8M0 shared exponent and FP4 (E2M1) values.
    Mxfp4 = 39,
    /// Blocks of 64: four E4M3 sub-block scales and FP4 values.
    Nvfp4 = 40,
    /// Blocks of 128: f16 scale, 1-bit codes.
    Q1_0 = 41,
    /// Blocks of 64: f16 scale, 2-bit codes.
    Q2_0 = 42,
}

/// Every type: (type, ggml id, elements per block, bytes per block, lowercase name).
const TYPES: [(GgmlType, u32, usize, usize, &str); 35] = [
    (GgmlType::F32, 0, 1, 4, "f32"),
    (GgmlType::F16, 1, 1, 2, "f16"),
    (GgmlType::Q4_0, 2, 32, 18, "q4_0"),
    (GgmlType::Q4_1, 3, 32, 20, "q4_1"),
    (GgmlType::Q5_0, 6, 32, 22, "q5_0"),
    (GgmlType::Q5_1, 7, 32, 24, "q5_1"),
    (GgmlType::Q8_0, 8, 32, 34, "q8_0"),
    (GgmlType::Q8_1, 9, 32, 36, "q8_1"),
    (GgmlType::Q2_K, 10, 256, 84, "q2_k"),
    (GgmlType::Q3_K, 11, 256, 110, "q3_k"),
    (GgmlType::Q4_K, 12, 256, 144, "q4_k"),
    (GgmlType::Q5_K, 13, 256, 176, "q5_k"),
    (GgmlType::Q6_K, 14, 256, 210, "q6_k"),
    (GgmlType::Q8_K, 15, 256, 292, "q8_k"),
    (GgmlType::Iq2Xxs, 16, 256, 66, "iq2_xxs"),
    (GgmlType::Iq2Xs, 17, 256, 74, "iq2_xs"),
    (GgmlType::Iq3Xxs, 18, 256, 98, "iq3_xxs"),
    (GgmlType::Iq1S, 19, 256, 50, "iq1_s"),
    (GgmlType::Iq4Nl, 20, 32, 18, "iq4_nl"),
    (GgmlType::Iq3S, 21, 256, 110, "iq3_s"),
    (GgmlType::Iq2S, 22, 256, 82, "iq2_s"),
    (GgmlType::Iq4Xs, 23, 256, 136, "iq4_xs"),
    (GgmlType::I8, 24, 1, 1, "i8"),
    (GgmlType::I16, 25, 1, 2, "i16"),
    (GgmlType::I32, 26, 1, 4, "i32"),
    (GgmlType::I64, 27, 1, 8, "i64"),
    (GgmlType::F64, 28, 1, 8, "f64"),
    (GgmlType::Iq1M, 29, 256, 56, "iq1_m"),
    (GgmlType::Bf16, 30, 1, 2, "bf16"),
    (GgmlType::Tq1_0, 34, 256, 54, "tq1_0"),
    (GgmlType::Tq2_0, 35, 256, 66, "tq2_0"),
    (GgmlType::Mxfp4, 39, 32, 17, "mxfp4"),
    (GgmlType::Nvfp4, 40, 64, 36, "nvfp4"),
    (GgmlType::Q1_0, 41, 128, 18, "q1_0"),
    (GgmlType::Q2_0, 42, 64, 18, "q2_0"),
];

impl GgmlType {
    fn entry(self) -> &'static (GgmlType, u32, usize, usize, &'static str) {
        TYPES
            .iter()
            .find(|e| e.0 == self)
            .expect("every variant is in TYPES")
    }

    /// Every type ggml defines, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPES.iter().map(|e| e.0)
    }

    /// The type with ggml id `id` (as stored in a GGUF tensor info); `None` for ids ggml
    /// removed or never assigned.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// The type named `name`, case-insensitively (`q4_k`, `Q4_K`, `bf16`, …).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TYPES
            .iter()
            .find(|e| e.4.eq_ignore_ascii_case(name))
            .map(|e| e.0)
    }

    /// ggml's id.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().3
    }

    /// Bytes of `n` elements, if `n` fills whole blocks.
    pub fn bytes(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_size())
            .then(|| n / self.block_size() * self.type_size())
    }

    /// The lowercase name (`q4_0`, …).
    pub fn name(self) -> &'static str {
        self.entry().4
    }
}

/// Round half away from zero exactly as gguf-py's `np_roundf` computes it in f32.
#[inline]
fn roundf(n: f32) -> f32 {
    let a = n.abs();
    let floored = a.floor();
    let b = floored + (2.0 * (a - floored)).floor();
    // np.sign(0) is 0; b is 0 there too, so the sign does not matter.
    if n < 0.0 { -b } else { b }
}

/// One Q8_0 block (gguf-py `Q8_0.quantize_blocks`): d = max|x|/127, q = roundf(x/d) through
/// the reciprocal, d stored as f16.
fn q8_0_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = roundf(v * id) as i8 as u8;
    }
}

/// One Q4_0 block (gguf-py `Q4_0.quantize_blocks`): d = (value of largest magnitude, first
/// on ties)/−8, q = clip(trunc(x/d + 8.5), 0, 15) through the reciprocal, codes j and j+16
/// in the low and high nibble of byte j.
fn q4_0_block(x: &[f32], out: &mut [u8]) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
    for j in 0..16 {
        out[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// `x` encoded as `ty` (F32, F16, BF16, Q8_0 or Q4_0); `None` if `x` does not fill whole
/// blocks or the type is not a float encoding.
pub fn encode(ty: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    let n = ty.bytes(x.len())?;
    let mut out = vec![0u8; n];
    let (bs, ts) = (ty.block_size(), ty.type_size());
    match ty {
        GgmlType::F32 => out
            .par_chunks_mut(4)
            .zip(x.par_iter())
            .for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => out
            .par_chunks_mut(2)
            .zip(x.par_iter())
            .for_each(|(o, &v)| o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes())),
        GgmlType::Bf16 => out
            .par_chunks_mut(2)
            .zip(x.par_iter())
            .for_each(|(o, &v)| o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes())),
        GgmlType::Q8_0 => out
            .par_chunks_mut(ts)
            .zip(x.par_chunks(bs))
            .for_each(|(o, b)| q8_0_block(b, o)),
        GgmlType::Q4_0 => out
            .par_chunks_mut(ts)
            .zip(x.par_chunks(bs))
            .for_each(|(o, b)| q4_0_block(b, o)),
        _ => return None,
    }
    Some(out)
}

/// A key-value pair's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 8.
    String(String),
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Shape, outermost first (as in safetensors); written innermost first.
    pub shape: Vec<usize>,
    /// Encoding.
    pub ty: GgmlType,
    /// Data offset from the start of the data section (a multiple of [`ALIGNMENT`]).
    pub offset: u64,
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The header: magic, version, counts, key-values, tensor infos, padded to [`ALIGNMENT`].
pub fn header(kv: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(MAGIC.to_le_bytes());
    out.extend(VERSION.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        put_string(&mut out, key);
        match value {
            Value::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Value::String(s) => {
                out.extend(8u32.to_le_bytes());
                put_string(&mut out, s);
            }
        }
    }
    for t in tensors {
        put_string(&mut out, &t.name);
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ty.id().to_le_bytes());
        out.extend(t.offset.to_le_bytes());
    }
    out.resize((out.len() as u64).next_multiple_of(ALIGNMENT) as usize, 0);
    out
}

/// Data offsets for tensors of `sizes` bytes, each at a multiple of [`ALIGNMENT`]; and the
/// total data length.
pub fn offsets(sizes: &[usize]) -> (Vec<u64>, u64) {
    let mut at = 0u64;
    let offsets = sizes
        .iter()
        .map(|&s| {
            let o = at;
            at = (at + s as u64).next_multiple_of(ALIGNMENT);
            o
        })
        .collect();
    (offsets, at)
}

/// Decodes F32, F16, BF16, Q8_0 or Q4_0 bytes back to f32 (the reference's dequantizers).
pub fn decode(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    Some(match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(f16).collect(),
        GgmlType::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => bytes
            .chunks_exact(34)
            .flat_map(|b| {
                let d = f16(b);
                b[2..].iter().map(move |&q| q as i8 as f32 * d)
            })
            .collect(),
        GgmlType::Q4_0 => bytes
            .chunks_exact(18)
            .flat_map(|b| {
                let d = f16(b);
                let lo = b[2..]
                    .iter()
                    .map(move |&q| ((q & 15) as i32 - 8) as f32 * d);
                let hi = b[2..]
                    .iter()
                    .map(move |&q| ((q >> 4) as i32 - 8) as f32 * d);
                lo.chain(hi).collect::<Vec<_>>()
            })
            .collect(),
        _ => return None,
    })
}
