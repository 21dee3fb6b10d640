//! What both twins of `shaders/discretize.wgsl` read: the partition, the search settings and
//! the per-group search record.

use crate::error::{Error, Result};

/// How the levels partition `[x0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Equal steps: `r_k = x0 + (k−1)·d`.
    Linear,
    /// Geometric steps: `r_k = x0·α^(k−1)`.
    Exponential,
}

impl Partition {
    /// The value the WGSL reads (`partition` in `DiscretizeParams`).
    pub fn id(self) -> u32 {
        match self {
            Partition::Linear => 0,
            Partition::Exponential => 1,
        }
    }

    /// "lin" or "exp", as in the CLI's scheme names.
    pub fn short(self) -> &'static str {
        match self {
            Partition::Linear => "lin",
            Partition::Exponential => "exp",
        }
    }
}

/// The search of one group; mirrors `SearchState` in discretize.wgsl (32 bytes).
///
/// The device moves `lo`, `hi`, `best_x0` and the best candidate's raw sums `cov`, `vw`, `vq`
/// (exactly rounded f32 arithmetic only, so both backends write the same bits); `best_corr`
/// and `scale` need a square root and a division and are filled in on the host by
/// [`SearchState::finish`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SearchState {
    /// The interval the next round's candidates lie in (exclusive).
    pub lo: f32,
    /// Its upper end.
    pub hi: f32,
    /// The best x0 so far.
    pub best_x0: f32,
    /// Its correlation (−inf before the first round); host-computed from `cov, vw, vq`.
    pub best_corr: f32,
    /// The factor turning normalized levels into weights with the group's variance;
    /// host-computed.
    pub scale: f32,
    /// The best candidate's `n·Σwq − Σw·Σq`.
    pub cov: f32,
    /// The group's `n·Σw² − (Σw)²` (the same for every candidate).
    pub vw: f32,
    /// The best candidate's `n·Σq² − (Σq)²`.
    pub vq: f32,
}
const _: () = assert!(std::mem::size_of::<SearchState>() == 32);

impl SearchState {
    /// Before the first round: candidates over (0, 1).
    pub const INITIAL: Self = Self {
        lo: 0.0,
        hi: 1.0,
        best_x0: 0.5,
        best_corr: f32::NEG_INFINITY,
        scale: 0.0,
        cov: 0.0,
        vw: 0.0,
        vq: 0.0,
    };

    /// Fills `best_corr` and `scale` from the best candidate's sums (host f32, correctly
    /// rounded sqrt and division); `m = max|w|` is the scale of a constant group.
    pub fn finish(&mut self, m: f32) {
        self.best_corr = correlation(self.cov, self.vw, self.vq);
        self.scale = if self.vw > 0.0 && self.vq > 0.0 {
            self.vw.sqrt() / self.vq.sqrt()
        } else {
            m
        };
    }
}

/// Pearson correlation from `n²·cov, n²·var_w, n²·var_q`; 0 when either variance is not
/// positive. Host only (sqrt and division).
pub fn correlation(cov: f32, vw: f32, vq: f32) -> f32 {
    if vw > 0.0 && vq > 0.0 {
        cov / (vw.sqrt() * vq.sqrt())
    } else {
        0.0
    }
}

/// The correlations of a round from the device's `(cov, vq)` pairs (`groups × C × 2`, group
/// major) and each group's `vw` (in its state).
pub fn correlations(scores: &[f32], states: &[SearchState], candidates: u32) -> Vec<f32> {
    let c = candidates as usize;
    scores
        .chunks_exact(2)
        .enumerate()
        .map(|(i, p)| correlation(p[0], states[i / c.max(1)].vw, p[1]))
        .collect()
}

/// `1/n` rounded once on the host: the device multiplies by it instead of dividing (WGSL
/// division is only within 2.5 ULP).
pub fn reciprocal(n: u32) -> f32 {
    1.0 / n.max(1) as f32
}

/// `2^(−2·⌈log2 n⌉)`: brings `n·Σq² − (Σq)² ≤ n²` to at most 1 before the select pass
/// cross-multiplies scores (an exact power of two, so the comparison is unchanged).
pub fn n_scale(n: u64) -> f32 {
    let e = 64 - n.max(1).saturating_sub(1).leading_zeros() as i32; // ⌈log2 n⌉
    f32::from_bits(((127 - 2 * e) as u32) << 23)
}

/// Largest tile of the moments pass and of the record reductions: 256 lanes of
/// [`LANE_WORK`] elements.
pub const MAX_TILE: u64 = 256 * LANE_WORK;

/// Elements per lane: on a CPU-emulated device (llvmpipe) a workgroup barrier costs about as
/// much as 70 ns per invocation, so a lane needs on the order of a hundred elements (each one
/// a few ns) before the reduction's two barriers stop dominating.
pub const LANE_WORK: u64 = 128;

/// How a search partitions its sums into tiles, lanes and record reductions: what fixes the
/// f32 summation order. The GPU lowers the tiles when a binding holds fewer elements; the
/// CPU twin takes the same [`Tiling`] to write the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Largest tile of input elements.
    pub value_tile: u64,
    /// Largest tile of 32-byte partial sums.
    pub record_tile: u64,
}

impl Tiling {
    /// The tiling of a device whose bindings hold at least 1 MiB.
    pub const DEFAULT: Self = Self {
        value_tile: MAX_TILE,
        record_tile: MAX_TILE,
    };

    /// `(tile_len, lanes, tiles)` for `len` elements reduced with tiles of at most
    /// `max_tile`; the same arithmetic as `TilePlan::with_lane_work(.., LANE_WORK)`.
    pub fn split(len: u64, max_tile: u64) -> (u64, u32, u64) {
        let tile_len = len.min(max_tile.max(1)).max(1);
        let lanes = tile_len.div_ceil(LANE_WORK).next_power_of_two().min(256) as u32;
        (tile_len, lanes, len.div_ceil(tile_len))
    }
}

/// What a search does: the partition, `K` and the candidate grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchSpec {
    /// Linear or exponential levels.
    pub partition: Partition,
    /// Bits b (2..=8); `K = 2^(b−1) − 1` positive levels.
    pub bits: u32,
    /// Candidates per round, C.
    pub candidates: u32,
    /// Rounds: the first over (0, 1), each later one around the best so far.
    pub rounds: u32,
}

impl SearchSpec {
    /// Positive levels K.
    pub fn half_levels(&self) -> u32 {
        (1 << (self.bits - 1)) - 1
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.bits) {
            return Err(Error::param(
                "discretize",
                format!("bits {} outside 2..=8", self.bits),
            ));
        }
        if self.candidates == 0 || self.rounds == 0 {
            return Err(Error::param(
                "discretize",
                "the search needs at least one candidate and one round",
            ));
        }
        Ok(())
    }
}
