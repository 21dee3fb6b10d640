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
