//! CPU twin of `shaders/discretize.wgsl`: the correlation-maximising x0 search of linear and
//! exponential discretization (ALGORITHMS.md §4), bit for bit the shader's arithmetic.
//!
//! Levels are `0, ±r_k` (k = 1..K, K = 2^(b−1) − 1) in units of `m = max|w|`:
//! linear `r_k = x0 + (k−1)·d` and exponential `r_k = x0·α^(k−1)`, both with `r_K = 1`. With
//! K = 1 (b = 2) there is no second level to pin at 1, so `r_1 = x0`: the search then places
//! the dead zone `|w| < x0·m/2`. Each weight goes to the nearest level (ties to the larger
//! magnitude); a candidate is scored by the Pearson correlation between the weights and their
//! discretized values. Candidates are `x0_c = lo + (hi−lo)·((c+1)·(1/(C+1)))` over a per-group
//! interval that starts at (0, 1) and shrinks to ±one step around the best x0 after every
//! round.
//!
//! Same bits as the device: f32 throughout, the shader's partition of a group into tiles and
//! lanes ([`Tiling`]) and its fixed combine order, exactly rounded operations only (+, −, ×,
//! comparisons; `1/(C+1)` and `1/(K−1)` rounded once on the host; α by bisection with
//! products), the argmax by cross-multiplied keys with the first maximum kept. Square roots
//! and divisions happen only on the host, after the search ([`SearchState::finish`]).

use rayon::prelude::*;

use crate::affine::GroupRange;
use crate::error::{Error, Result};
pub use crate::kernel::discretize::{Partition, SearchSpec, SearchState, Tiling};
use crate::kernel::discretize::{correlation, n_scale, reciprocal};

/// Candidate `c` of `candidates` inside a state's interval; mirrors `candidate_x0`.
pub fn candidate_x0(s: &SearchState, c: u32, candidates: u32) -> f32 {
    s.lo + (s.hi - s.lo) * ((c + 1) as f32 * reciprocal(candidates + 1))
}

/// `a^(K−1)` by squaring, bits of K−1 ascending; mirrors `pow_levels`.
fn pow_levels(a: f32, k: u32) -> f32 {
    let (mut r, mut b, mut e) = (1.0f32, a, k - 1);
    while e > 0 {
        if e & 1 == 1 {
            r *= b;
        }
        b *= b;
        e >>= 1;
    }
    r
}

/// The smallest α (by bisection) with `x0·α^(K−1) ≥ 1`; mirrors `solve_alpha`.
fn solve_alpha(x0: f32, k: u32) -> f32 {
    let (mut lo, mut hi) = (1.0f32, 2.0f32);
    for _ in 0..160 {
        if x0 * pow_levels(hi, k) >= 1.0 {
            break;
        }
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..64 {
        let mid = (lo + hi) * 0.5;
        if !(mid > lo && mid < hi) {
            break;
        }
        if x0 * pow_levels(mid, k) < 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The levels of one x0 in units of m; mirrors the unit half of `Ladder` in the WGSL.
#[derive(Clone, Copy, Debug)]
pub struct Ladder {
    x0: f32,
    k: u32,
    exponential: bool,
    /// Exponential ratio α.
    alpha: f32,
    /// Linear step d = (1 − x0)·(1/(K−1)).
    d: f32,
    /// Bits of K − 2 (the threshold search's probes).
    nb: u32,
    /// `α^(2^i)`.
    pw: [f32; 8],
}

impl Ladder {
    /// The ladder of `x0` with `half_levels` positive levels; mirrors `ladder` in the WGSL.
    pub fn new(x0: f32, half_levels: u32, partition: Partition) -> Self {
        let k = half_levels;
        let exponential = partition == Partition::Exponential;
        let mut l = Self {
            x0,
            k,
            exponential,
            alpha: 1.0,
            d: 0.0,
            nb: 0,
            pw: [0.0; 8],
        };
        if k <= 1 {
            return l;
        }
        if k > 2 {
            l.nb = 32 - (k - 2).leading_zeros();
        }
        if exponential {
            l.alpha = solve_alpha(x0, k);
            let mut p = l.alpha;
            for w in &mut l.pw {
                *w = p;
                p *= p;
            }
        } else {
            l.d = (1.0 - x0) * reciprocal(k - 1);
        }
        l
    }

    /// `P(s)`: the product of `α^(2^i)` over the set bits of s, highest first.
    fn power(&self, s: u32) -> f32 {
        (0..self.nb)
            .rev()
            .filter(|&i| s & (1 << i) != 0)
            .fold(1.0, |p, i| p * self.pw[i as usize])
    }

    /// Level `r_j` (0 for j = 0); mirrors the end of `magnitude`.
    pub fn level(&self, j: u32) -> f32 {
        if j == 0 {
            0.0
        } else if self.k <= 1 || j == 1 {
            self.x0
        } else if j == self.k {
            1.0
        } else if self.exponential {
            self.x0 * (self.power(j - 2) * self.alpha)
        } else {
            self.x0 + (j - 1) as f32 * self.d
        }
    }

    /// The positive levels `r_1..r_K`.
    pub fn levels(&self) -> Vec<f32> {
        (1..=self.k.max(1)).map(|j| self.level(j)).collect()
    }

    /// Threshold `T(s)` between `r_{s+1}` and `r_{s+2}` for a group of maximum `m`.
    fn threshold(&self, s: u32, m: f32) -> f32 {
        if self.exponential {
            ((m * self.x0) * (0.5 + 0.5 * self.alpha)) * self.power(s)
        } else {
            m * (self.x0 + (2 * s + 1) as f32 * (0.5 * self.d))
        }
    }

    /// The tables of one group: thresholds and levels.
    pub fn scan(&self, m: f32) -> Scan {
        let t = (0..self.k.saturating_sub(1))
            .map(|s| self.threshold(s, m))
            .collect();
        Scan {
            k: self.k,
            nb: self.nb,
            zero_t: 0.5 * (m * self.x0),
            thresholds: t,
            levels: (0..=self.k.max(1)).map(|j| self.level(j)).collect(),
        }
    }

    /// The discretized magnitude of `a = |w|` straight from the formulas (the shader's
    /// probes, thresholds computed on the way): the plain reference of [`Scan::magnitude`].
    pub fn magnitude_reference(&self, a: f32, m: f32) -> f32 {
        let zero_t = 0.5 * (m * self.x0);
        if self.k <= 1 {
            return if a < zero_t { 0.0 } else { self.x0 };
        }
        let (mut pos, mut p) = (0u32, 1.0f32);
        for bit in (0..self.nb).rev() {
            let cand = pos + (1 << bit);
            let pc = p * self.pw[bit as usize];
            let t = if self.exponential {
                ((m * self.x0) * (0.5 + 0.5 * self.alpha)) * pc
            } else {
                m * (self.x0 + (2 * cand + 1) as f32 * (0.5 * self.d))
            };
            if cand <= self.k - 2 && t <= a {
                pos = cand;
                p = pc;
            }
        }
        let j = if self.threshold(0, m) <= a {
            pos + 2
        } else {
            1
        };
        if a < zero_t { 0.0 } else { self.level(j) }
    }
}

/// A ladder's thresholds against `|w|` for one group (maximum m) and its levels, as tables:
/// the shader's search with its probes read instead of computed.
#[derive(Clone, Debug)]
pub struct Scan {
    k: u32,
    nb: u32,
    zero_t: f32,
    thresholds: Vec<f32>,
    levels: Vec<f32>,
}

impl Scan {
    /// The discretized magnitude of `a = |w|` in level units; mirrors `magnitude`.
    #[inline]
    pub fn magnitude(&self, a: f32) -> f32 {
        if a < self.zero_t {
            return 0.0;
        }
        if self.k <= 1 {
            return self.levels[1];
        }
        let mut pos = 0u32;
        for bit in (0..self.nb).rev() {
            let cand = pos + (1 << bit);
            if cand <= self.k - 2 && self.thresholds[cand as usize] <= a {
                pos = cand;
            }
        }
        let j = if self.thresholds[0] <= a { pos + 2 } else { 1 };
        self.levels[j as usize]
    }
}

/// Sums over a group for one candidate: of q (the discretized value in level units), q², w·q,
/// w and w², where w is the weight minus the group's midrange (correlation and variance do not
/// change under the shift, and it spares the sums a cancellation). f32, as on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    pub q: f32,
    pub qq: f32,
    pub wq: f32,
    pub w: f32,
    pub ww: f32,
}

impl Moments {
    /// Mirrors `add_moments`.
    fn add(self, o: Self) -> Self {
        Self {
            q: self.q + o.q,
            qq: self.qq + o.qq,
            wq: self.wq + o.wq,
            w: self.w + o.w,
            ww: self.ww + o.ww,
        }
    }

    /// `(n·Σwq − Σw·Σq, n·Σw² − (Σw)², n·Σq² − (Σq)²)` as `disc_select` computes them.
    pub fn centered(&self, n: f32) -> (f32, f32, f32) {
        (
            n * self.wq - self.w * self.q,
            n * self.ww - self.w * self.w,
            n * self.qq - self.q * self.q,
        )
    }

    /// Pearson correlation over `n` elements (host sqrt and division); 0 when either is
    /// constant.
    pub fn correlation(&self, n: f32) -> f32 {
        let (cov, vw, vq) = self.centered(n);
        correlation(cov, vw, vq)
    }
}

/// `max|w|` and the midrange of a group's range.
pub fn range_terms(r: &GroupRange) -> (f32, f32) {
    (r.lo.abs().max(r.hi.abs()), 0.5 * r.lo + 0.5 * r.hi)
}

/// One element's discretized value in level units; mirrors `discretized` in the WGSL.
#[inline]
pub fn discretized(x: f32, scan: &Scan) -> f32 {
    let q = scan.magnitude(x.abs());
    if x < 0.0 {
        -q
    } else if x > 0.0 {
        q
    } else {
        0.0
    }
}

/// Sums `lanes` lane partials as `reduce_tile` does: every 16th lane adds its 16 (or all)
/// lanes in order, then lane 0 adds those partial sums in order.
fn reduce_tile(parts: &[Moments]) -> Moments {
    let fan = parts.len().clamp(1, 16);
    parts
        .chunks(fan)
        .map(|b| b.iter().fold(Moments::default(), |a, &m| a.add(m)))
        .fold(Moments::default(), Moments::add)
}

/// One tile of `disc_moments`: lane l adds elements l, l + lanes, … in order, then the lanes
/// are reduced. `term(x)` gives one element's (q, w).
fn tile_sum(x: &[f32], lanes: u32, term: impl Fn(f32) -> (f32, f32)) -> Moments {
    let lanes = lanes as usize;
    let parts: Vec<Moments> = (0..lanes)
        .map(|l| {
            x.iter()
                .skip(l)
                .step_by(lanes)
                .fold(Moments::default(), |acc, &v| {
                    let (q, w) = term(v);
                    Moments {
                        q: acc.q + q,
                        qq: acc.qq + q * q,
                        wq: acc.wq + w * q,
                        w: acc.w + w,
                        ww: acc.ww + w * w,
                    }
                })
        })
        .collect();
    reduce_tile(&parts)
}

/// Sums runs of records as `reduce_records` does: passes of tiles of at most `record_tile`
/// records, each tile by its lanes, until one record is left.
fn reduce_records(mut recs: Vec<Moments>, record_tile: u64) -> Moments {
    while recs.len() > 1 {
        let (tile_len, lanes, tiles) = Tiling::split(recs.len() as u64, record_tile);
        let lanes = lanes as usize;
        recs = recs
            .chunks(tile_len as usize)
            .map(|t| {
                let parts: Vec<Moments> = (0..lanes)
                    .map(|l| {
                        t.iter()
                            .skip(l)
                            .step_by(lanes)
                            .fold(Moments::default(), |a, &m| a.add(m))
                    })
                    .collect();
                reduce_tile(&parts)
            })
            .collect();
        if tiles == 1 {
            break;
        }
    }
    recs.first().copied().unwrap_or_default()
}

/// The sums of one candidate over a group, in the device's order for `tiling`.
pub fn moments_tiled(x: &[f32], r: &GroupRange, ladder: &Ladder, tiling: Tiling) -> Moments {
    let (m, mid) = range_terms(r);
    let scan = ladder.scan(m);
    let (tile_len, lanes, _) = Tiling::split(x.len() as u64, tiling.value_tile);
    let tiles: Vec<Moments> = x
        .par_chunks(tile_len.max(1) as usize)
        .map(|t| tile_sum(t, lanes, |v| (discretized(v, &scan), v - mid)))
        .collect();
    reduce_records(tiles, tiling.record_tile)
}

/// [`moments_tiled`] with [`Tiling::DEFAULT`].
pub fn moments(x: &[f32], r: &GroupRange, ladder: &Ladder) -> Moments {
    moments_tiled(x, r, ladder, Tiling::DEFAULT)
}

/// [`moments`] with every threshold computed on the way ([`Ladder::magnitude_reference`]):
/// the plain reference.
pub fn moments_reference(x: &[f32], r: &GroupRange, ladder: &Ladder) -> Moments {
    let (m, mid) = range_terms(r);
    let (tile_len, lanes, _) = Tiling::split(x.len() as u64, Tiling::DEFAULT.value_tile);
    let tiles: Vec<Moments> = x
        .chunks(tile_len.max(1) as usize)
        .map(|t| {
            tile_sum(t, lanes, |v| {
                let q = ladder.magnitude_reference(v.abs(), m);
                let q = if v < 0.0 {
                    -q
                } else if v > 0.0 {
                    q
                } else {
                    0.0
                };
                (q, v - mid)
            })
        })
        .collect();
    reduce_records(tiles, Tiling::DEFAULT.record_tile)
}

/// 2^(−⌊e/2⌋−1) for the exponent e of `v > 0` (1 otherwise); mirrors `cov_factor`.
fn cov_factor(v: f32) -> f32 {
    if !(v > 0.0) {
        return 1.0;
    }
    let e = ((v.to_bits() >> 23) & 0xff) as i32 - 127;
    f32::from_bits(((127 - (e >> 1) - 1) as u32) << 23)
}

/// A candidate's comparison key; mirrors `score_key`.
fn score_key(cov: f32, vw: f32, vq: f32, f: f32, ns: f32) -> (f32, f32) {
    if vw > 0.0 && vq > 0.0 {
        let a = cov * f;
        (a * a.abs(), vq * ns)
    } else {
        (0.0, 1.0)
    }
}

/// Whether key a beats key b; mirrors `beats`.
fn beats(a: (f32, f32), b: (f32, f32)) -> bool {
    a.0 * b.1 > b.0 * a.1
}

/// Picks a round's best candidate (the first that no later one beats) and moves the state;
/// mirrors `disc_select`. `sums` holds the round's C entries, `n` the group length; returns
/// the candidates' `(cov, vq)`.
pub fn select(
    state: &mut SearchState,
    sums: &[Moments],
    n: u64,
    first_round: bool,
) -> Vec<[f32; 2]> {
    let candidates = sums.len() as u32;
    let nf = n as f32;
    let ns = n_scale(n);
    let vw = sums.first().map_or(0.0, |s| s.centered(nf).1);
    let f = cov_factor(vw);
    let mut scores = Vec::with_capacity(sums.len());
    let (mut best_key, mut best_c, mut best_cov, mut best_vq) = ((0.0, 1.0), 0, 0.0, 0.0);
    for (c, s) in sums.iter().enumerate() {
        let (cov, _, vq) = s.centered(nf);
        scores.push([cov, vq]);
        let key = score_key(cov, vw, vq, f, ns);
        if c == 0 || beats(key, best_key) {
            (best_key, best_c, best_cov, best_vq) = (key, c, cov, vq);
        }
    }
    let step = (state.hi - state.lo) * reciprocal(candidates + 1);
    if first_round || beats(best_key, score_key(state.cov, vw, state.vq, f, ns)) {
        state.best_x0 = candidate_x0(state, best_c as u32, candidates);
        state.cov = best_cov;
        state.vq = best_vq;
    }
    state.vw = vw;
    state.lo = (state.best_x0 - step).max(0.0);
    state.hi = (state.best_x0 + step).min(1.0);
    scores
}

/// One round for every group of `x` in the device's order for `tiling`: the correlation of
/// every candidate (`groups × C`, group major), and the states moved to the next round
/// (finished: `best_corr` and `scale` filled in).
pub fn search_round_tiled(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    states: &mut [SearchState],
    spec: &SearchSpec,
    first_round: bool,
    tiling: Tiling,
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
        moments_tiled(
            &x[g * group_len..][..group_len],
            &ranges[g],
            &Ladder::new(x0, k, spec.partition),
            tiling,
        )
    };
    let sums: Vec<Moments> = (0..states.len() * c)
        .into_par_iter()
        .map(|i| score(i / c, i % c))
        .collect();
    let mut corrs = Vec::with_capacity(sums.len());
    for (g, state) in states.iter_mut().enumerate() {
        let scores = select(state, &sums[g * c..][..c], group_len as u64, first_round);
        corrs.extend(scores.iter().map(|p| correlation(p[0], state.vw, p[1])));
        state.finish(range_terms(&ranges[g]).0);
    }
    Ok(corrs)
}

/// [`search_round_tiled`] with [`Tiling::DEFAULT`]; the first round when the states hold no
/// best yet (`best_corr` = −inf).
pub fn search_round(
    x: &[f32],
    group_len: usize,
    ranges: &[GroupRange],
    states: &mut [SearchState],
    spec: &SearchSpec,
) -> Result<Vec<f32>> {
    let first = states
        .first()
        .is_some_and(|s| s.best_corr == f32::NEG_INFINITY);
    search_round_tiled(x, group_len, ranges, states, spec, first, Tiling::DEFAULT)
}

/// The whole search over every group of `group_len` elements in the device's order for
/// `tiling`: the final states and the correlations of the last round, starting from `start`.
pub fn search_tiled(
    x: &[f32],
    group_len: usize,
    spec: &SearchSpec,
    start: SearchState,
    tiling: Tiling,
) -> Result<(Vec<GroupRange>, Vec<SearchState>, Vec<f32>)> {
    let ranges = super::minmax::group_ranges(x, group_len)?;
    let mut states = vec![start; ranges.len()];
    let mut corrs = Vec::new();
    for round in 0..spec.rounds {
        corrs = search_round_tiled(x, group_len, &ranges, &mut states, spec, round == 0, tiling)?;
    }
    Ok((ranges, states, corrs))
}

/// The whole search with [`Tiling::DEFAULT`]: the final states and the last round's
/// correlations.
pub fn search(
    x: &[f32],
    group_len: usize,
    spec: &SearchSpec,
) -> Result<(Vec<SearchState>, Vec<f32>)> {
    let (_, states, corrs) =
        search_tiled(x, group_len, spec, SearchState::INITIAL, Tiling::DEFAULT)?;
    Ok((states, corrs))
}
