//! Synthetic transformer-like checkpoints with realistic weight statistics, for the demo,
//! tests and benches (so none of them depends on a download).

use std::borrow::Cow;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal, StudentT};
use safetensors::Dtype;

use super::file::{OutTensor, from_f32, write_atomic};
use crate::error::{Error, Result};

/// Sizes of a synthetic model.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticSpec {
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden width.
    pub d_model: usize,
    /// MLP width.
    pub d_ff: usize,
    /// Vocabulary (embedding rows).
    pub vocab: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            layers: 2,
            d_model: 256,
            d_ff: 1024,
            vocab: 4096,
            seed: 7,
        }
    }
}

/// A named tensor of f32 values with the dtype it is stored in.
pub type SyntheticTensor = (String, Dtype, Vec<usize>, Vec<f32>);

/// Heavy-tailed weights: Student-t with 4 degrees of freedom scaled to `std`, with a few input
/// columns amplified 4× (the outlier features of trained transformers).
fn weight(rng: &mut StdRng, rows: usize, cols: usize, std: f32) -> Result<Vec<f32>> {
    let t = StudentT::new(4.0f32).map_err(|e| Error::param("synthetic", e.to_string()))?;
    // Var of t(4) is 2; rescale to the requested std.
    let scale = std / 2f32.sqrt();
    let outliers: Vec<bool> = (0..cols).map(|c| c % 211 == 13).collect();
    Ok((0..rows * cols)
        .map(|i| {
            let v = t.sample(rng) * scale;
            if outliers[i % cols] { v * 4.0 } else { v }
        })
        .collect())
}

fn around(rng: &mut StdRng, n: usize, mean: f32, std: f32) -> Result<Vec<f32>> {
    let d = Normal::new(mean, std).map_err(|e| Error::param("synthetic", e.to_string()))?;
    Ok((0..n).map(|_| d.sample(rng)).collect())
}

/// The tensors of a small transformer: an F16 embedding, per block the attention projections,
/// MLP weights, biases and layer norms (F32), and a final norm.
pub fn transformer(spec: &SyntheticSpec) -> Result<Vec<SyntheticTensor>> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let (d, f) = (spec.d_model, spec.d_ff);
    let w_std = 1.0 / (d as f32).sqrt();
    let mut out = vec![(
        "embeddings.weight".to_string(),
        Dtype::F16,
        vec![spec.vocab, d],
        weight(&mut rng, spec.vocab, d, 0.05)?,
    )];
    for l in 0..spec.layers {
        let p = format!("layers.{l}");
        for name in ["q", "k", "v", "o"] {
            out.push((
                format!("{p}.attn.{name}.weight"),
                Dtype::F32,
                vec![d, d],
                weight(&mut rng, d, d, w_std)?,
            ));
            out.push((
                format!("{p}.attn.{name}.bias"),
                Dtype::F32,
                vec![d],
                around(&mut rng, d, 0.0, 0.01)?,
            ));
        }
        out.push((
            format!("{p}.mlp.up.weight"),
            Dtype::F32,
            vec![f, d],
            weight(&mut rng, f, d, w_std)?,
        ));
        out.push((
            format!("{p}.mlp.up.bias"),
            Dtype::F32,
            vec![f],
            around(&mut rng, f, 0.0, 0.01)?,
        ));
        let down_std = 1.0 / (f as f32).sqrt();
        out.push((
            format!("{p}.mlp.down.weight"),
            Dtype::F32,
            vec![d, f],
            weight(&mut rng, d, f, down_std)?,
        ));
        out.push((
            format!("{p}.mlp.down.bias"),
            Dtype::F32,
            vec![d],
            around(&mut rng, d, 0.0, 0.01)?,
        ));
        for norm in ["norm1", "norm2"] {
            out.push((
                format!("{p}.{norm}.weight"),
                Dtype::F32,
                vec![d],
                around(&mut rng, d, 1.0, 0.05)?,
            ));
            out.push((
                format!("{p}.{norm}.bias"),
                Dtype::F32,
                vec![d],
                around(&mut rng, d, 0.0, 0.02)?,
            ));
        }
    }
    out.push((
        "final_norm.weight".into(),
        Dtype::F32,
        vec![d],
        around(&mut rng, d, 1.0, 0.05)?,
    ));
    Ok(out)
}

/// Writes tensors to a safetensors file, each in its dtype.
pub fn write(path: &Path, tensors: &[SyntheticTensor]) -> Result<()> {
    let outs = tensors
        .iter()
        .map(|(name, dtype, shape, values)| {
            Ok((
                name.clone(),
                OutTensor {
                    dtype: *dtype,
                    shape: shape.clone(),
                    data: Cow::Owned(from_f32(values, *dtype)?),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    write_atomic(path, &outs, Default::default())
}

/// Shapes of a Llama-like decoder at scale: embedding and output head `vocab × hidden`, and per
/// layer the four attention projections `hidden × hidden`, gate and up `ffn × hidden`, down
/// `hidden × ffn`, and two norms.
#[derive(Clone, Copy, Debug)]
pub struct LlmShapes {
    /// Hidden width (4096 for a 7B model).
    pub hidden: usize,
    /// MLP width (11008).
    pub ffn: usize,
    /// Vocabulary (32000).
    pub vocab: usize,
    /// Decoder layers.
    pub layers: usize,
}

impl LlmShapes {
    /// Llama-7B's widths with as many layers as fit `bytes` of BF16.
    pub fn for_bytes(bytes: u64) -> Self {
        let (hidden, ffn, vocab) = (4096usize, 11008usize, 32000usize);
        let per_layer = (4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden) as u64 * 2;
        let fixed = (2 * vocab * hidden + hidden) as u64 * 2;
        let layers = (bytes.saturating_sub(fixed) / per_layer).max(1) as usize;
        Self {
            hidden,
            ffn,
            vocab,
            layers,
        }
    }

    /// Every tensor's name and shape, in file order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f) = (self.hidden, self.ffn);
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                out.push((format!("{p}.self_attn.{n}.weight"), vec![h, h]));
            }
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, f]));
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        }
        out.push(("model.norm.weight".into(), vec![h]));
        out.push(("lm_head.weight".into(), vec![self.vocab, h]));
        out
    }
}

/// Writes a BF16 checkpoint of `shapes` one row block at a time (memory stays a few MiB):
/// weights roughly normal with a tensor-dependent scale, norms near 1. A fast counter-based
/// generator keeps 8 GB to seconds.
pub fn write_llm(path: &Path, shapes: &LlmShapes, seed: u64) -> Result<u64> {
    use rayon::prelude::*;
    let tensors = shapes.tensors();
    let reserve = super::writer::header_reserve(tensors.iter().map(|(n, _)| n.as_str()), 0);
    let mut w = super::writer::StreamWriter::create(path, reserve)?;
    const BLOCK: usize = 1 << 22;
    for (t, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let is_norm = shape.len() == 1;
        let scale = 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt();
        w.begin(name, Dtype::BF16, shape)?;
        let mut buf = vec![0u8; BLOCK.min(n) * 2];
        for start in (0..n).step_by(BLOCK) {
            let len = BLOCK.min(n - start);
            buf[..len * 2]
                .par_chunks_mut(2)
                .enumerate()
                .for_each(|(k, o)| {
                    let v = if is_norm {
                        1.0 + 0.05 * gaussian(seed, t, start + k)
                    } else {
                        scale * gaussian(seed, t, start + k)
                    };
                    o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
                });
            w.write(&buf[..len * 2])?;
        }
        w.end()?;
    }
    let done = w.finish(&Default::default())?;
    let bytes = done.bytes();
    done.persist()?;
    Ok(bytes)
}

/// A standard-normal-like value from (seed, tensor, index): the sum of four uniforms from a
/// splitmix64 hash, centred and scaled (Irwin–Hall, variance 1).
fn gaussian(seed: u64, tensor: usize, i: usize) -> f32 {
    let mut z = seed ^ ((tensor as u64) << 40) ^ i as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = |k: u32| ((z >> (16 * k)) & 0xffff) as f32 / 65536.0;
    (u(0) + u(1) + u(2) + u(3) - 2.0) * 3f32.sqrt()
}
