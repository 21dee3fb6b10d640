//! The discretization study of ALGORITHMS.md §4 on synthetic data: Gaussian and Laplace
//! vectors of 10,000 numbers from a fixed seed, b = 2..6 bits, linear and exponential
//! partitions; for each, the best x0 and its correlation (the full search) and the correlation
//! as a function of x0 (a dense sweep).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::Serialize;

use super::Backend;
use super::discretize::{self, DEFAULT_CANDIDATES, DEFAULT_ROUNDS, Partition};
use crate::error::Result;
use crate::kernel::discretize::SearchSpec;

/// Length of each study vector.
pub const STUDY_LEN: usize = 10_000;

/// Bit widths of the study.
pub const STUDY_BITS: std::ops::RangeInclusive<u32> = 2..=6;

/// The curves sweep each of these x0 intervals with the same number of points, so small x0
/// (where the maxima lie at 4 bits and more) are sampled as finely as a log axis shows them.
pub const CURVE_INTERVALS: [(f32, f32); 3] = [(0.0, 1.0), (0.0, 0.1), (0.0, 0.01)];

/// The study's distributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyDistribution {
    /// Standard normal.
    Gaussian,
    /// Laplace with unit scale (the difference of two unit exponentials).
    Laplace,
}

impl StudyDistribution {
    /// Both, in study order.
    pub const ALL: [Self; 2] = [Self::Gaussian, Self::Laplace];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gaussian => "gaussian",
            Self::Laplace => "laplace",
        }
    }

    /// `n` samples from `seed`.
    pub fn sample(self, n: usize, seed: u64) -> Vec<f32> {
        let mut r = StdRng::seed_from_u64(seed);
        match self {
            Self::Gaussian => (0..n).map(|_| StandardNormal.sample(&mut r)).collect(),
            Self::Laplace => (0..n)
                .map(|_| {
                    let (a, b): (f32, f32) = (Exp1.sample(&mut r), Exp1.sample(&mut r));
                    a - b
                })
                .collect(),
        }
    }
}

/// One (distribution, partition, bits) of the study.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StudyRow {
    /// Distribution.
    pub distribution: StudyDistribution,
    /// Partition.
    pub partition: Partition,
    /// Bits.
    pub bits: u32,
    /// The x0 the search found.
    pub best_x0: f32,
    /// Its correlation with the data.
    pub correlation: f32,
    /// `(x0, correlation)` of the dense sweep.
    #[serde(skip)]
    pub curve: Vec<(f32, f32)>,
}

/// Runs the study on `backend` with data from `seed`, sweeping `points` x0 values per curve.
pub fn run(backend: &Backend<'_>, seed: u64, points: u32) -> Result<Vec<StudyRow>> {
    let mut rows = Vec::new();
    for (d, dist) in StudyDistribution::ALL.into_iter().enumerate() {
        let data = dist.sample(STUDY_LEN, seed.wrapping_add(d as u64));
        for partition in [Partition::Linear, Partition::Exponential] {
            for bits in STUDY_BITS {
                let spec = SearchSpec {
                    partition,
                    bits,
                    candidates: DEFAULT_CANDIDATES,
                    rounds: DEFAULT_ROUNDS,
                };
                let s = discretize::search(backend, &data, data.len(), &spec)?;
                rows.push(StudyRow {
                    distribution: dist,
                    partition,
                    bits,
                    best_x0: s.states[0].best_x0,
                    correlation: s.states[0].best_corr,
                    curve: discretize::correlation_curve(
                        backend,
                        &data,
                        partition,
                        bits,
                        points,
                        &CURVE_INTERVALS,
                    )?,
                });
            }
        }
    }
    Ok(rows)
}
