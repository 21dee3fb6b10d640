//! Correlation-maximising linear and exponential discretization (ALGORITHMS.md §4; Malsagov,
//! Khayrov, Pushkareva, Karandashev 2019): per tensor or channel, the x0 whose levels
//! `0, ±r_k` correlate best with the weights, found by a parallel candidate search with
//! refinement, then the levels rescaled so the discretized weights keep the weights' variance.
//! The result is a codebook `QuantizedTensor`.
//!
//! Codebook layout: the `2^b − 1` real levels sorted ascending,
//! `[−s·r_K, …, −s·r_1, 0, s·r_1, …, s·r_K]`, then one pad level equal to the top one (the
//! format wants `2^b` levels per group). Codes come from the nearest level of the unscaled
//! ladder `m·r` (`m = max|w|`), the search's own rounding; the pad's threshold is +inf, so
//! the pad code is never produced and every value keeps the code of its nearest real level.

use crate::cpu::discretize::{self as twin, Ladder};
use crate::error::{Error, Result};
use crate::format::{Encoding, Granularity, QuantizedTensor};
use crate::gpu::{self, GpuTensor};
use crate::kernel::discretize::{SearchSpec, SearchState, Tiling};

use super::{Backend, check_finite, codebook};

pub use crate::kernel::discretize::Partition;

/// Default candidates per round: C + 1 = 64, so the refined grid contains its centre.
pub const DEFAULT_CANDIDATES: u32 = 63;

/// Default rounds: the coarse grid and two refinements (step 1/64, then /32, then /32).
pub const DEFAULT_ROUNDS: u32 = 3;

/// A discretization recipe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscretizeConfig {
    /// Linear or exponential levels.
    pub partition: Partition,
    /// Bits b (2..=8): `2^b − 1` levels.
    pub bits: u32,
    /// Per tensor or per channel.
    pub granularity: Granularity,
    /// Candidates per round.
    pub candidates: u32,
    /// Search rounds.
    pub rounds: u32,
}

impl DiscretizeConfig {
    /// A recipe with the default search.
    pub fn new(partition: Partition, bits: u32, granularity: Granularity) -> Self {
        Self {
            partition,
            bits,
            granularity,
            candidates: DEFAULT_CANDIDATES,
            rounds: DEFAULT_ROUNDS,
        }
    }

    /// The search settings.
    pub fn spec(&self) -> SearchSpec {
        SearchSpec {
            partition: self.partition,
            bits: self.bits,
            candidates: self.candidates,
            rounds: self.rounds,
        }
    }

    /// Checks the recipe and returns the group length for `shape`.
    pub fn group_len(&self, shape: &[usize]) -> Result<usize> {
        self.spec().validate()?;
        if matches!(self.granularity, Granularity::Group(_)) {
            return Err(Error::param(
                "discretize",
                "x0 is searched per tensor or per channel (use --granularity tensor or channel)",
            ));
        }
        let numel: usize = shape.iter().product();
        if numel as u64 >= u64::from(u32::MAX) {
            return Err(Error::param(
                "discretize",
                format!("{numel} elements exceed 2^32 − 1"),
            ));
        }
        self.granularity.group_len(shape)
    }

    /// The CLI scheme name, e.g. `exp4`.
    pub fn scheme(&self) -> String {
        format!("{}{}", self.partition.short(), self.bits)
    }
}

/// The outcome of a search on host memory: per group its range, final state, and the last
/// round's correlations (`groups × C`).
#[derive(Clone, Debug)]
pub struct Search {
    /// `max|w|` of each group.
    pub max_abs: Vec<f32>,
    /// Final search state of each group (best x0, its correlation, the variance scale).
    pub states: Vec<SearchState>,
    /// The last round's correlation of every candidate.
    pub correlations: Vec<f32>,
}

/// Runs the x0 search on `backend` over groups of `group_len` elements of `data`.
pub fn search(
    backend: &Backend<'_>,
    data: &[f32],
    group_len: usize,
    spec: &SearchSpec,
) -> Result<Search> {
    search_from(backend, data, group_len, spec, SearchState::INITIAL)
}

/// [`search`] with every group's first interval `(start.lo, start.hi)`.
pub fn search_from(
    backend: &Backend<'_>,
    data: &[f32],
    group_len: usize,
    spec: &SearchSpec,
    start: SearchState,
) -> Result<Search> {
    spec.validate()?;
    if !(0.0 <= start.lo && start.lo < start.hi && start.hi <= 1.0) {
        return Err(Error::param(
            "discretize",
            format!(
                "first interval ({}, {}) is not inside (0, 1)",
                start.lo, start.hi
            ),
        ));
    }
    let (ranges, states, correlations) = match backend {
        Backend::Gpu(ctx) => {
            let input = GpuTensor::from_f32(ctx, data, &[data.len()])?;
            let groups = data.len() / group_len.max(1);
            let bufs =
                gpu::discretize::SearchBuffers::starting_from(ctx, groups, spec.candidates, start)?;
            ctx.run("discretize", |enc| {
                gpu::discretize::encode(ctx, enc, &input, group_len, spec, &bufs)
            })?;
            let ranges: Vec<crate::affine::GroupRange> = bufs.ranges.download(ctx)?;
            let mut states: Vec<SearchState> = bufs.states.download(ctx)?;
            for (s, r) in states.iter_mut().zip(&ranges) {
                s.finish(twin::range_terms(r).0);
            }
            let corrs = crate::kernel::discretize::correlations(
                &bufs.scores.to_f32(ctx)?,
                &states,
                spec.candidates,
            );
            (ranges, states, corrs)
        }
        // The device's default tiling: the same bits as a GPU whose bindings hold ≥ 1 MiB.
        Backend::Cpu => twin::search_tiled(data, group_len, spec, start, Tiling::DEFAULT)?,
    };
    Ok(Search {
        max_abs: ranges.iter().map(|r| twin::range_terms(r).0).collect(),
        states,
        correlations,
    })
}

/// The correlation of `data` (one group) with its discretization at `points` x0 values
/// `lo + (c + 1)·(hi − lo)/(points + 1)` in each of `intervals`: one search round each,
/// merged in ascending x0.
pub fn correlation_curve(
    backend: &Backend<'_>,
    data: &[f32],
    partition: Partition,
    bits: u32,
    points: u32,
    intervals: &[(f32, f32)],
) -> Result<Vec<(f32, f32)>> {
    let spec = SearchSpec {
        partition,
        bits,
        candidates: points,
        rounds: 1,
    };
    let mut curve = Vec::new();
    for &(lo, hi) in intervals {
        let start = SearchState {
            lo,
            hi,
            ..SearchState::INITIAL
        };
        let s = search_from(backend, data, data.len().max(1), &spec, start)?;
        curve.extend(
            (0..points)
                .map(|c| twin::candidate_x0(&start, c, points))
                .zip(s.correlations),
        );
    }
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(curve)
}

/// The `2^b` sorted levels of one group in units where the top real level is `scale`, the
/// last a copy of the top one.
pub fn padded_levels(ladder: &Ladder, bits: u32, scale: f32) -> Vec<f32> {
    let r = ladder.levels();
    let mut out: Vec<f32> = r.iter().rev().map(|&v| -scale * v).collect();
    out.push(0.0);
    out.extend(r.iter().map(|&v| scale * v));
    out.push(scale * r[r.len() - 1]);
    debug_assert_eq!(out.len(), 1 << bits);
    out
}

/// Quantizes host data to a codebook [`QuantizedTensor`]; `name` labels errors.
pub fn quantize(
    backend: &Backend<'_>,
    name: &str,
    data: &[f32],
    shape: &[usize],
    cfg: &DiscretizeConfig,
) -> Result<QuantizedTensor> {
    let group_len = cfg.group_len(shape)?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "discretize",
            format!("{} values for shape {shape:?}", data.len()),
        ));
    }
    check_finite(name, data)?;
    let spec = cfg.spec();
    let s = search(backend, data, group_len, &spec)?;
    let per = 1usize << cfg.bits;
    let (mut levels, mut thresholds) = (Vec::new(), Vec::new());
    for (state, &m) in s.states.iter().zip(&s.max_abs) {
        let ladder = Ladder::new(state.best_x0, spec.half_levels(), cfg.partition);
        levels.extend(padded_levels(&ladder, cfg.bits, state.scale));
        let mut t = codebook::midpoint_thresholds(&padded_levels(&ladder, cfg.bits, m), cfg.bits);
        // The pad (code 2^b − 1) is never chosen: values at or above the top level keep the
        // top real level's code.
        t[per - 2] = f32::INFINITY;
        thresholds.extend(t);
    }
    let codes = codebook::assign(backend, data, shape, cfg.granularity, cfg.bits, &thresholds)?;
    let qt = QuantizedTensor {
        shape: shape.to_vec(),
        bits: cfg.bits,
        granularity: cfg.granularity,
        codes,
        encoding: Encoding::Codebook {
            levels,
            thresholds: None,
        },
        mask: None,
    };
    qt.validate()?;
    Ok(qt)
}
