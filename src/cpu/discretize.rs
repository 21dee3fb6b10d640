//! CPU twin of `shaders/discretize.wgsl`: the correlation-maximising x0 search of linear and
//! exponential discretization (ALGORITHMS.md §4), and the numerics both backends share.
//!
//! Levels are `0, ±r_k` (k = 1..K, K = 2^(b−1) − 1) in units of `m = max|w|`:
//! linear `r_k = x0 + (k−1)·d` and exponential `r_k = x0·α^(k−1) = x0^((K−k)/(K−1))`, both with
//! `r_K = 1`. With K = 1 (b = 2) there is no second level to pin at 1, so `r_1 = x0`: the
//! search then places the dead zone `|w| < x0·m/2`. Each weight goes to the nearest level
//! (ties to the larger magnitude); a candidate is scored by the Pearson correlation between
//! the weights and their discretized values. Candidates are `x0_c = lo + (c+1)·(hi−lo)/(C+1)`
//! over a per-group interval that starts at (0, 1) and shrinks to ±one step around the best x0
//! after every round. Sums here are f64 (the GPU tree-reduces in f32).

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};
pub use crate::kernel::discretize::{Partition, SearchSpec, SearchState};

/// Candidate `c` of `candidates` inside a state's interval; mirrors `candidate_x0`.
pub fn candidate_x0(s: &SearchState, c: u32, candidates: u32) -> f32 {
    s.lo + (s.hi - s.lo) * ((c + 1) as f32 / (candidates + 1) as f32)
}

/// The levels of one x0, precomputed for the nearest-level index; mirrors `Ladder`.
#[derive(Clone, Copy, Debug)]
pub struct Ladder {
    x0: f32,
    k: u32,
    exponential: bool,
    /// Index coordinate `y = f(u)·a + b` (f = identity or log2); level k+1 starts at y ≥ k.
    a: f32,
    b: f32,
    /// Linear step d, or log2(x0) for the exponential partition.
    c: f32,
}

impl Ladder {
    /// The ladder of `x0` with `half_levels` positive levels; mirrors `ladder` in the WGSL.
    pub fn new(x0: f32, half_levels: u32, partition: Partition) -> Self {
        let k = half_levels;
        let exponential = partition == Partition::Exponential;
        if k <= 1 {
            return Self {
                x0,
                k,
                exponential,
                a: 0.0,
                b: 0.0,
                c: 0.0,
            };
        }
        let km1 = (k - 1) as f32;
        if exponential {
            let lx = x0.log2();
            let la = -lx / km1; // log2 α
            let h = (0.5 + 0.5 * la.exp2()).log2(); // log2 of the midpoint factor (1 + α)/2
            let a = 1.0 / la;
            Self {
                x0,
                k,
                exponential,
                a,
                b: -(lx + h) * a,
                c: lx,
            }
        } else {
            let d = (1.0 - x0) / km1;
            let a = 1.0 / d;
            Self {
                x0,
                k,
                exponential,
                a,
                b: -x0 * a - 0.5,
                c: d,
            }
        }
    }

    /// Index of the level nearest to `u = |w|/m` (0 for the zero level, ties upward).
    #[inline]
    pub fn magnitude_index(&self, u: f32) -> u32 {
        let mut j = 1;
        if self.k > 1 {
            let f = if self.exponential {
                u.max(1e-30).log2()
            } else {
                u
            };
            let y = f * self.a + self.b;
            if y >= 0.0 {
                // y ≥ 0, so truncation is the floor.
                j = 2 + y.min((self.k - 2) as f32) as u32;
            }
        }
        if u < 0.5 * self.x0 { 0 } else { j }
    }

    /// Level `r_j` (0 for j = 0).
    #[inline]
    pub fn level(&self, j: u32) -> f32 {
        if j == 0 {
            0.0
        } else if self.k <= 1 {
            self.x0
        } else if self.exponential {
            (self.c * ((self.k - j) as f32 / (self.k - 1) as f32)).exp2()
        } else {
            self.x0 + (j - 1) as f32 * self.c
        }
    }

    /// The positive levels `r_1..r_K`.
    pub fn levels(&self) -> Vec<f32> {
        (1..=self.k.max(1)).map(|j| self.level(j)).collect()
    }
}

/// Sums over a group for one candidate: of q (the discretized value in level units), q², w·q,
/// w and w², where w is the weight minus the group's midrange (correlation and variance do not
/// change under the shift, and it spares the sums a cancellation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub q: f64,
    pub qq: f64,
    pub wq: f64,
    pub w: f64,
    pub ww: f64,
}

impl Moments {
    fn add(self, o: Self) -> Self {
        Self {
            q: self.q + o.q,
            qq: self.qq + o.qq,
            wq: self.wq + o.wq,
            w: self.w + o.w,
            ww: self.ww + o.ww,
        }
    }

    /// `(n·Σwq − Σw·Σq, n·Σw² − (Σw)², n·Σq² − (Σq)²)`: n² times covariance and variances.
    fn centered(&self, n: f64) -> (f64, f64, f64) {
        (
            n * self.wq - self.w * self.q,
            n * self.ww - self.w * self.w,
            n * self.qq - self.q * self.q,
        )
    }

    /// Pearson correlation of w and q over `n` elements; 0 when either is constant.
    pub fn correlation(&self, n: f64) -> f64 {
        let (cov, vw, vq) = self.centered(n);
        if vw > 0.0 && vq > 0.0 {
            cov / (vw.sqrt() * vq.sqrt())
        } else {
            0.0
        }
    }

    /// The factor making the discretized values' variance the weights' (`σ_w / σ_q`), or
    /// `m` when either variance is 0 (a constant group keeps its value exactly).
    pub fn scale(&self, n: f64, m: f32) -> f32 {
        let (_, vw, vq) = self.centered(n);
        if vw > 0.0 && vq > 0.0 {
            (vw.sqrt() / vq.sqrt()) as f32
        } else {
            m
        }
    }
}

/// `max|w|` and the midrange of a group's range.
pub fn range_terms(r: &GroupRange) -> (f32, f32) {
    (r.lo.abs().max(r.hi.abs()), 0.5 * r.lo + 0.5 * r.hi)
}

/// One element's discretized value in level units; mirrors `discretized` in the WGSL.
#[inline]
pub fn discretized(x: f32, inv_m: f32, ladder: &Ladder) -> f32 {
    let q = ladder.level(ladder.magnitude_index(x.abs() * inv_m));
    if x < 0.0 {
        -q
    } else if x > 0.0 {
        q
    } else {
        0.0
    }
}

/// Elements per rayon task inside one large group.
const TASK_ELEMS: usize = 1 << 14;

/// Adds one element's terms to the sums.
#[inline]
fn accumulate(acc: Moments, q: f32, w: f32) -> Moments {
    let (q, w) = (f64::from(q), f64::from(w));
    Moments {
        q: acc.q + q,
        qq: acc.qq + q * q,
        wq: acc.wq + w * q,
        w: acc.w + w,
        ww: acc.ww + w * w,
    }
}

/// Sums over fixed chunks added in order (the same result on every run), in parallel for
/// large groups.
fn chunked(x: &[f32], part: impl Fn(&[f32]) -> Moments + Sync + Send) -> Moments {
    if x.len() >= 2 * TASK_ELEMS {
        let parts: Vec<Moments> = x.par_chunks(TASK_ELEMS).map(&part).collect();
        parts.into_iter().fold(Moments::default(), Moments::add)
    } else {
        part(x)
    }
}

/// The sums of one candidate over a group. Levels come from a table of the ladder's own
/// values (the same bits as [`Ladder::level`], without a power per element).
pub fn moments(x: &[f32], r: &GroupRange, ladder: &Ladder) -> Moments {
    let (m, mid) = range_terms(r);
    let inv_m = if m > 0.0 { 1.0 / m } else { 0.0 };
    let table: Vec<f32> = (0..=ladder.k.max(1)).map(|j| ladder.level(j)).collect();
    chunked(x, |p| {
        p.iter().fold(Moments::default(), |acc, &v| {
            let q = table[ladder.magnitude_index(v.abs() * inv_m) as usize];
            let q = if v < 0.0 {
                -q
            } else if v > 0.0 {
                q
            } else {
                0.0
            };
            accumulate(acc, q, v - mid)
        })
    })
}

/// [`moments`] straight from the formulas: the plain reference.
pub fn moments_reference(x: &[f32], r: &GroupRange, ladder: &Ladder) -> Moments {
    let (m, mid) = range_terms(r);
    let inv_m = if m > 0.0 { 1.0 / m } else { 0.0 };
    chunked(x, |p| {
        p.iter().fold(Moments::default(), |acc, &v| {
            accumulate(acc, discretized(v, inv_m, ladder), v - mid)
        })
    })
}

/// Picks a round's best candidate (first maximum) and moves the state; mirrors `disc_select`.
/// `corrs` and `moments` hold the round's C entries.
pub fn select(state: &mut SearchState, corrs: &[f32], sums: &[Moments], n: f64, m: f32) {
    let candidates = corrs.len() as u32;
    let (mut best_c, mut best) = (0usize, f32::NEG_INFINITY);
    for (c, &v) in corrs.iter().enumerate() {
        if v > best {
            best = v;
            best_c = c;
        }
    }
    let step = (state.hi - state.lo) / (candidates + 1) as f32;
    if best > state.best_corr {
        state.best_x0 = candidate_x0(state, best_c as u32, candidates);
        state.best_corr = best;
        state.scale = sums[best_c].scale(n, m);
    }
    state.lo = (state.best_x0 - step).max(0.0);
    state.hi = (state.best_x0 + step).min(1.0);
}

/// One round for every group of `x`: the correlation of every candidate (`groups × C`, group
/// major), and the states moved to the next round.
pub fn search_round(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    states: &mut [SearchState],
    spec: &SearchSpec,
) -> Result<Vec<f32>> {
    spec.validate()?;
    if group_len == 0 || !x.len().is_multiple_of(group_len) || x.len() / group_len != states.len() {
        return Err(Error::shape(
            "discretize",
            "one state per group of the input is needed",
        ));
    }
    if ranges.len() != states.len() {
        return Err(Error::shape("discretize", "one range per group is needed"));
    }
    let c = spec.candidates as usize;
    let k = spec.half_levels();
    let score = |g: usize, cand: usize| {
        let x0 = candidate_x0(&states[g], cand as u32, spec.candidates);
        moments(
            &x[g * group_len..][..group_len],
            &ranges[g],
            &Ladder::new(x0, k, spec.partition),
        )
    };
    let sums: Vec<Moments> = (0..states.len() * c)
        .into_par_iter()
        .map(|i| score(i / c, i % c))
        .collect();
    let n = group_len as f64;
    let corrs: Vec<f32> = sums.iter().map(|s| s.correlation(n) as f32).collect();
    for (g, state) in states.iter_mut().enumerate() {
        let (m, _) = range_terms(&ranges[g]);
        select(state, &corrs[g * c..][..c], &sums[g * c..][..c], n, m);
    }
    Ok(corrs)
}

/// The whole search over every group of `group_len` elements: the final states and the
/// correlations of the last round.
pub fn search(
    x: &[f32],
    group_len: usize,
    spec: &SearchSpec,
) -> Result<(Vec<SearchState>, Vec<f32>)> {
    let ranges = super::minmax::group_ranges(x, group_len)?;
    let mut states = vec![SearchState::INITIAL; ranges.len()];
    let mut corrs = Vec::new();
    for _ in 0..spec.rounds {
        corrs = search_round(x, group_len, &ranges, &mut states, spec)?;
    }
    Ok((states, corrs))
}
