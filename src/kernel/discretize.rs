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
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SearchState {
    /// The interval the next round's candidates lie in (exclusive).
    pub lo: f32,
    /// Its upper end.
    pub hi: f32,
    /// The best x0 so far.
    pub best_x0: f32,
    /// Its correlation (−inf before the first round).
    pub best_corr: f32,
    /// The factor turning normalized levels into weights with the group's variance.
    pub scale: f32,
    pub _pad: [u32; 3],
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
        _pad: [0; 3],
    };
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
