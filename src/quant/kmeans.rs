//! Weight sharing by 1-D k-means (Deep Compression §3, Han, Mao, Dally 2016; ALGORITHMS.md §5):
//! k = 2^bits centroids per layer over the kept weights, Lloyd iterations of an assignment
//! pass (`codebook_assign` with midpoint thresholds: nearest centroid, ties upward) and a
//! deterministic per-cluster sum/count pass, until no kept weight changes cluster or the
//! iteration cap; and the centroid gradient `∂L/∂c_k = Σ_{i ∈ k} ∂L/∂w_i` for fine-tuning.
//!
//! The returned codes are the last assignment and the centroids the means of its clusters
//! (an empty cluster keeps its centroid). Both backends sum in f32 in the same fixed order
//! (`src/cpu/kmeans.rs`), so they return the same centroids, codes and iteration counts. In 1-D, Lloyd's update keeps centroids sorted: a
//! cluster is an interval between midpoints, so its mean stays between its neighbours'.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::affine::AffineSegment;
use crate::cpu;
use crate::error::{Error, Result};
use crate::format::pack;
use crate::gpu::{self, Context, ElemType, GpuTensor};

use super::{Backend, codebook};

/// How the centroids start (Han et al. §3.2 compare the three; linear works best).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KmeansInit {
    /// Evenly spaced over [min, max] of the kept weights.
    Linear,
    /// k kept weights drawn at random (seeded).
    Forgy,
    /// Evenly spaced in the CDF of the kept weights: the (j + ½)/k quantiles.
    Density,
}

impl KmeansInit {
    /// The CLI spelling.
    pub fn label(&self) -> &'static str {
        match self {
            KmeansInit::Linear => "linear",
            KmeansInit::Forgy => "forgy",
            KmeansInit::Density => "density",
        }
    }
}

impl std::str::FromStr for KmeansInit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linear" => Ok(KmeansInit::Linear),
            "forgy" => Ok(KmeansInit::Forgy),
            "density" => Ok(KmeansInit::Density),
            _ => Err(format!("'{s}' is not linear, forgy or density")),
        }
    }
}

/// A k-means recipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KmeansConfig {
    /// Bits per code: k = 2^bits clusters (1..=8).
    pub bits: u32,
    /// Initialisation.
    pub init: KmeansInit,
    /// Iteration cap.
    pub max_iter: u32,
    /// Seed of the Forgy draw.
    pub seed: u64,
}

/// Default iteration cap.
pub const DEFAULT_MAX_ITER: u32 = 30;

/// Values a density initialisation sorts at most: a strided sample of large tensors.
const DENSITY_SAMPLE: usize = 1 << 20;

/// The result of clustering one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// k sorted centroids.
    pub centroids: Vec<f32>,
    /// Packed codes of every element (pruned ones included, with whatever code their value
    /// gets).
    pub codes: Vec<u32>,
    /// Iterations run.
    pub iterations: u32,
    /// Whether the last iteration changed no kept code.
    pub converged: bool,
}

/// The kept values (all of them without a mask).
fn kept_values(data: &[f32], mask: Option<&[u32]>) -> Vec<f32> {
    match mask {
        Some(m) => data
            .iter()
            .enumerate()
            .filter(|(i, _)| pack::get_code(m, *i, 1) == 1)
            .map(|(_, &v)| v)
            .collect(),
        None => data.to_vec(),
    }
}

/// The k starting centroids, sorted (all 0 when nothing is kept).
pub fn initial_centroids(
    data: &[f32],
    mask: Option<&[u32]>,
    bits: u32,
    init: KmeansInit,
    seed: u64,
) -> Vec<f32> {
    let k = 1usize << bits;
    let kept = kept_values(data, mask);
    if kept.is_empty() {
        return vec![0.0; k];
    }
    let mut c: Vec<f32> = match init {
        KmeansInit::Linear => {
            let lo = kept.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = kept.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (0..k)
                .map(|j| lo + (hi - lo) * (j as f32 / (k - 1).max(1) as f32))
                .collect()
        }
        KmeansInit::Forgy => {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..k)
                .map(|_| *kept.choose(&mut rng).unwrap_or(&0.0))
                .collect()
        }
        KmeansInit::Density => {
            let stride = kept.len().div_ceil(DENSITY_SAMPLE);
            let mut sample: Vec<f32> = kept.iter().step_by(stride).copied().collect();
            sample.sort_by(f32::total_cmp);
            (0..k)
                .map(|j| {
                    let q = (j as f64 + 0.5) / k as f64;
                    sample[((q * sample.len() as f64) as usize).min(sample.len() - 1)]
                })
                .collect()
        }
    };
    c.sort_by(f32::total_cmp);
    c
}

fn check(data: &[f32], mask: Option<&[u32]>, cfg: &KmeansConfig) -> Result<()> {
    if !(1..=gpu::kmeans::MAX_BITS).contains(&cfg.bits) {
        return Err(Error::param(
            "kmeans",
            format!("bits {} outside 1..={}", cfg.bits, gpu::kmeans::MAX_BITS),
        ));
    }
    if cfg.max_iter == 0 {
        return Err(Error::param(
            "kmeans",
            "the iteration cap must be at least 1",
        ));
    }
    if data.len() as u64 >= u64::from(u32::MAX) {
        return Err(Error::param("kmeans", "more than 2^32 − 1 elements"));
    }
    if mask.is_some_and(|m| m.len() != pack::packed_words(data.len(), 1)) {
        return Err(Error::shape("kmeans", "the mask does not cover the data"));
    }
    Ok(())
}

/// Largest magnitude clustered unscaled: sums of up to 2^32 of them stay below f32::MAX.
const UNSCALED_MAX: f32 = 1.8446744e19; // 2^64

/// The power of two that brings `data`'s largest magnitude to at most 2^64, or 0 when it is
/// there already.
fn overflow_exponent(data: &[f32]) -> i32 {
    let absmax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax <= UNSCALED_MAX {
        return 0;
    }
    // absmax ≤ 2^128, so 64 more halvings at most.
    (absmax.log2().ceil() as i32 - 64).max(1)
}

/// `v·2^e`, exact while the result is a normal number.
fn scale_pow2(v: f32, e: i32) -> f32 {
    v * 2f32.powi(e)
}

/// Clusters `data` (its kept elements, under `mask`) into 2^bits centroids on `backend`.
pub fn cluster(
    backend: &Backend<'_>,
    data: &[f32],
    mask: Option<&[u32]>,
    cfg: &KmeansConfig,
) -> Result<Clustering> {
    check(data, mask, cfg)?;
    // Huge weights are clustered scaled down by a power of two, exactly, so that neither the
    // linear init's hi − lo nor the device's f32 cluster sums can overflow.
    let exp = overflow_exponent(data);
    if exp != 0 {
        let scaled: Vec<f32> = data.iter().map(|&v| scale_pow2(v, -exp)).collect();
        let mut c = cluster(backend, &scaled, mask, cfg)?;
        // A mean rounded one ulp past f32::MAX's neighbourhood must not come back as Inf.
        c.centroids
            .iter_mut()
            .for_each(|v| *v = scale_pow2(*v, exp).clamp(-f32::MAX, f32::MAX));
        return Ok(c);
    }
    let bits = cfg.bits;
    let mut centroids = initial_centroids(data, mask, bits, cfg.init, cfg.seed);
    let n = data.len();
    if n == 0 {
        return Ok(Clustering {
            centroids,
            codes: Vec::new(),
            iterations: 0,
            converged: true,
        });
    }
    let mut iterations = 0;
    let mut converged = false;
    match backend {
        Backend::Gpu(ctx) => {
            let values = GpuTensor::from_f32(ctx, data, &[n])?;
            let mask_t = match mask {
                Some(m) => Some(GpuTensor::from_u32(ctx, m, &[m.len()])?),
                None => None,
            };
            let thresholds = codebook::midpoint_thresholds(&centroids, bits);
            let mut state = KmeansState::new(ctx, n, bits, &centroids, &thresholds)?;
            while iterations < cfg.max_iter {
                let first = iterations == 0;
                ctx.run("kmeans", |enc| {
                    state.encode_iteration(ctx, enc, &values, mask_t.as_ref(), first)
                })?;
                iterations += 1;
                if !first && state.scratch.status.to_u32(ctx)?[0] == 0 {
                    converged = true;
                    break;
                }
            }
            centroids = state.centroids.to_f32(ctx)?;
            let codes = state.codes.to_u32(ctx)?;
            Ok(Clustering {
                centroids,
                codes: codes[..pack::packed_words(n, bits)].to_vec(),
                iterations,
                converged,
            })
        }
        Backend::Cpu => {
            let seg = codebook::segment(n, n, bits);
            let mut codes = vec![0u32; pack::packed_words(n, bits)];
            let mut old = codes.clone();
            while iterations < cfg.max_iter {
                let thresholds = codebook::midpoint_thresholds(&centroids, bits);
                std::mem::swap(&mut codes, &mut old);
                cpu::codebook_assign::codebook_assign(data, &mut codes, &thresholds, &[seg])?;
                let first = iterations == 0;
                let stats = cpu::kmeans::cluster_sums(
                    data,
                    &codes,
                    bits,
                    mask,
                    (!first).then_some(old.as_slice()),
                )?;
                cpu::kmeans::update_centroids(&mut centroids, &stats);
                iterations += 1;
                if !first && stats.changed == 0 {
                    converged = true;
                    break;
                }
            }
            Ok(Clustering {
                centroids,
                codes,
                iterations,
                converged,
            })
        }
    }
}

/// The centroid gradient `∂L/∂c_k = Σ ∂L/∂w_i` over the kept weights `i` of cluster `k`,
/// from the weights' gradients `grads`, their packed `codes` and the keep-mask.
pub fn centroid_gradient(
    backend: &Backend<'_>,
    grads: &[f32],
    codes: &[u32],
    bits: u32,
    mask: Option<&[u32]>,
) -> Result<Vec<f32>> {
    let n = grads.len();
    match backend {
        Backend::Gpu(ctx) => {
            let scratch = gpu::kmeans::KmeansScratch::new(ctx, n, bits)?;
            let g = GpuTensor::from_f32(ctx, grads, &[n])?;
            let c = GpuTensor::from_u32(ctx, codes, &[codes.len()])?;
            let m = match mask {
                Some(m) => Some(GpuTensor::from_u32(ctx, m, &[m.len()])?),
                None => None,
            };
            let out = GpuTensor::zeros(ctx, &[1 << bits], gpu::ElemType::F32)?;
            ctx.run("kmeans gradient", |enc| {
                gpu::kmeans::encode_partials(ctx, enc, &g, &c, m.as_ref(), None, &scratch)?;
                gpu::kmeans::encode_update(ctx, enc, &scratch)?;
                gpu::kmeans::encode_finish(ctx, enc, &scratch, &out, None)
            })?;
            out.to_f32(ctx)
        }
        Backend::Cpu => {
            let stats = cpu::kmeans::cluster_sums(grads, codes, bits, mask, None)?;
            Ok(stats.sums)
        }
    }
}

/// Device state of a running k-means over one tensor: the Lloyd loop's buffers, resident
/// between iterations.
#[derive(Clone, Debug)]
pub struct KmeansState {
    /// Sorted centroids (k f32).
    pub centroids: GpuTensor,
    /// Their midpoints (k f32, the last +inf).
    pub thresholds: GpuTensor,
    /// Codes of the latest assignment.
    pub codes: GpuTensor,
    /// Codes of the one before.
    pub old_codes: GpuTensor,
    /// Scratch.
    pub scratch: gpu::kmeans::KmeansScratch,
    n: usize,
    bits: u32,
}

impl KmeansState {
    /// State for `n` elements starting from `centroids` (k sorted values) and their
    /// `thresholds` (midpoints, the last +inf).
    pub fn new(
        ctx: &Context,
        n: usize,
        bits: u32,
        centroids: &[f32],
        thresholds: &[f32],
    ) -> Result<Self> {
        if centroids.len() != 1usize << bits || thresholds.len() != centroids.len() {
            return Err(Error::shape(
                "kmeans",
                format!("{} initial centroids for {bits} bits", centroids.len()),
            ));
        }
        let words = pack::packed_words(n, bits).max(1);
        Ok(Self {
            centroids: GpuTensor::from_f32(ctx, centroids, &[centroids.len()])?,
            thresholds: GpuTensor::from_f32(ctx, thresholds, &[thresholds.len()])?,
            codes: GpuTensor::zeros(ctx, &[words], ElemType::U32)?,
            old_codes: GpuTensor::zeros(ctx, &[words], ElemType::U32)?,
            scratch: gpu::kmeans::KmeansScratch::new(ctx, n, bits)?,
            n,
            bits,
        })
    }

    /// Records one iteration: assignment (`codebook_assign` with the current thresholds),
    /// per-cluster sums, new centroids and thresholds. Codes that changed are counted unless
    /// `first`. Swaps `codes` and `old_codes` first, so `codes` holds the new assignment.
    pub fn encode_iteration(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        values: &GpuTensor,
        mask: Option<&GpuTensor>,
        first: bool,
    ) -> Result<()> {
        std::mem::swap(&mut self.codes, &mut self.old_codes);
        let (n, bits) = (self.n, self.bits);
        let seg = AffineSegment::codebook(n, n.max(1), bits);
        let codes = self.codes.slice(0, &[pack::packed_words(n, bits)])?;
        let old = self.old_codes.slice(0, &[pack::packed_words(n, bits)])?;
        gpu::codebook_assign::encode(ctx, encoder, values, &codes, &self.thresholds, &[seg])?;
        gpu::kmeans::encode_partials(
            ctx,
            encoder,
            values,
            &codes,
            mask,
            (!first).then_some(&old),
            &self.scratch,
        )?;
        gpu::kmeans::encode_update(ctx, encoder, &self.scratch)?;
        gpu::kmeans::encode_finish(
            ctx,
            encoder,
            &self.scratch,
            &self.centroids,
            Some(&self.thresholds),
        )
    }
}
