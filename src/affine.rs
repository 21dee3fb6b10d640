//! The affine quantizer's numerics and segment record, shared by both backends
//! (ALGORITHMS.md §1; mirrored in `shaders/affine.wgsl`).
//!
//! `q = clamp(round(x / s) + z, qmin, qmax)`, `x̂ = (q − z)·s`, rounding half to even.

use crate::error::{Error, Result};

/// One tensor (or chunk of a tensor) in a batched affine kernel: where its input and output
/// start, how its elements group onto (scale, zero point) pairs and its integer range.
/// Mirrored field for field by `AffineSegment` in `shaders/affine.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AffineSegment {
    /// First input element (or packed word) of the segment.
    pub src: u32,
    /// First output element (or packed word) of the segment.
    pub dst: u32,
    /// Number of elements.
    pub len: u32,
    /// Consecutive elements sharing one (scale, zero point): the whole tensor, a row, a group.
    pub group_len: u32,
    /// Position of element 0 inside its group (non-zero only for a chunk that starts mid-group).
    pub group_phase: u32,
    /// Index of element 0's group in the scale and zero-point arrays.
    pub param: u32,
    /// Smallest code.
    pub qmin: i32,
    /// Largest code.
    pub qmax: i32,
    /// Code width in bits, for packing (stored codes are `q − qmin`, in `[0, 2^bits)`).
    pub bits: u32,
}
const _: () = assert!(std::mem::size_of::<AffineSegment>() == 36);

impl AffineSegment {
    /// Group (index into scale/zero) of element `i` of the segment.
    #[inline]
    pub fn group_of(&self, i: usize) -> usize {
        self.param as usize + (self.group_phase as usize + i) / self.group_len as usize
    }

    /// Number of (scale, zero) groups the segment touches.
    pub fn groups(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        (self.group_phase as usize + self.len as usize - 1) / self.group_len as usize + 1
    }

    /// The single segment of a whole tensor of `numel` elements for the codebook kernels:
    /// groups of `group_len` elements, unsigned `bits`-bit codes.
    pub fn codebook(numel: usize, group_len: usize, bits: u32) -> Self {
        Self {
            src: 0,
            dst: 0,
            len: numel as u32,
            group_len: group_len as u32,
            group_phase: 0,
            param: 0,
            qmin: 0,
            qmax: ((1u32 << bits) - 1) as i32,
            bits,
        }
    }

    /// Number of u32 words holding the segment's packed codes.
    pub fn packed_words(&self) -> usize {
        (self.len as usize * self.bits as usize).div_ceil(32)
    }

    /// Checks the fields a kernel relies on.
    pub fn validate(&self, op: &str) -> Result<()> {
        if self.group_len == 0 {
            return Err(Error::param(op, "group length 0"));
        }
        if !(1..=16).contains(&self.bits) {
            return Err(Error::param(
                op,
                format!("bits {} outside 1..=16", self.bits),
            ));
        }
        if self.qmin > self.qmax || i64::from(self.qmax) - i64::from(self.qmin) >= 1i64 << self.bits
        {
            return Err(Error::param(
                op,
                format!(
                    "range [{}, {}] does not fit {} bits",
                    self.qmin, self.qmax, self.bits
                ),
            ));
        }
        Ok(())
    }
}

/// How the integer range sits around zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffineMode {
    /// Signed codes in `[−2^(b−1), 2^(b−1)−1]`, zero point 0 (weights).
    Symmetric,
    /// Signed codes in `[−(2^(b−1)−1), 2^(b−1)−1]`, zero point 0 (TFLite's int8 convention).
    SymmetricRestricted,
    /// Unsigned codes in `[0, 2^b−1]` with a zero point making real 0 exact (activations).
    Asymmetric,
}

/// An affine scheme: a bit width and a mode. Gives the integer range and turns a calibrated
/// range into (scale, zero point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AffineScheme {
    /// Bits per code, 1 to 16.
    pub bits: u32,
    /// Placement of the range.
    pub mode: AffineMode,
}

impl AffineScheme {
    /// A scheme after checking its bit width (1–16; restricted needs at least 2).
    pub fn new(bits: u32, mode: AffineMode) -> Result<Self> {
        if !(1..=16).contains(&bits) {
            return Err(Error::param(
                "affine",
                format!("bits {bits} outside 1..=16"),
            ));
        }
        if mode == AffineMode::SymmetricRestricted && bits < 2 {
            return Err(Error::param(
                "affine",
                "restricted range needs at least 2 bits",
            ));
        }
        Ok(Self { bits, mode })
    }

    /// Smallest code.
    pub fn qmin(&self) -> i32 {
        match self.mode {
            AffineMode::Symmetric => -(1 << (self.bits - 1)),
            AffineMode::SymmetricRestricted => -((1 << (self.bits - 1)) - 1),
            AffineMode::Asymmetric => 0,
        }
    }

    /// Largest code.
    pub fn qmax(&self) -> i32 {
        match self.mode {
            AffineMode::Symmetric | AffineMode::SymmetricRestricted => (1 << (self.bits - 1)) - 1,
            AffineMode::Asymmetric => (1 << self.bits) - 1,
        }
    }

    /// Whether the zero point is always 0.
    pub fn is_symmetric(&self) -> bool {
        self.mode != AffineMode::Asymmetric
    }

    /// (scale, zero point) for a calibrated range `[lo, hi]`; mirrored by
    /// `affine_from_range` in `shaders/affine_params.wgsl`.
    ///
    /// Symmetric: `s = max(|lo|, |hi|) / ((qmax − qmin)/2)`, PyTorch's symmetric observer, which
    /// for the restricted int8 range is TFLite's `absmax/127`. Asymmetric: the range is widened
    /// to contain 0, `s = (hi − lo)/(qmax − qmin)`, `z = clamp(round(qmin − lo/s), qmin, qmax)`
    /// so that real 0 is exact. An empty range (all zeros) gets `s = 1`.
    pub fn params_from_range(&self, lo: f32, hi: f32) -> (f32, i32) {
        affine_from_range(lo, hi, self.qmin(), self.qmax(), self.is_symmetric())
    }
}

/// See [`AffineScheme::params_from_range`].
#[inline]
pub fn affine_from_range(lo: f32, hi: f32, qmin: i32, qmax: i32, symmetric: bool) -> (f32, i32) {
    let levels = (qmax - qmin) as f32;
    if symmetric {
        let a = lo.abs().max(hi.abs());
        // Symmetric codes reach |q| = −qmin.
        (positive_scale(a / (levels * 0.5), (-qmin) as u32), 0)
    } else {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        // hi − lo overflows f32 past half its range: divide first there.
        let wide = hi > f32::MAX / 2.0 || lo < -f32::MAX / 2.0;
        let s = if wide {
            hi / levels - lo / levels
        } else {
            (hi - lo) / levels
        };
        // Asymmetric codes reach |q − z| = qmax − qmin.
        let s = positive_scale(s, (qmax - qmin) as u32);
        let z = (qmin as f32 - lo / s).round_ties_even();
        (s, z.clamp(qmin as f32, qmax as f32) as i32)
    }
}

/// A usable scale: `s` when it is a positive normal number, else 1 (an all-zero range); at
/// most `f32::MAX / 2^⌈log2 reach⌉`, so that `(q − z)·s` stays finite for every code pair,
/// `reach` being the largest `|q − z|` the scheme allows. It binds only for ranges past ~1e37,
/// where the decoded extremes then fall short of the range (finite, never Inf).
#[inline]
fn positive_scale(s: f32, reach: u32) -> f32 {
    if s >= f32::MIN_POSITIVE && s.is_finite() {
        s.min(f32::MAX / reach.max(1).next_power_of_two() as f32)
    } else {
        1.0
    }
}

/// `q = clamp(round(x / s) + z, qmin, qmax)`, half to even (the plain reference form).
#[inline]
pub fn quantize_code(x: f32, s: f32, z: i32, qmin: i32, qmax: i32) -> i32 {
    ((x / s).round_ties_even() + z as f32).clamp(qmin as f32, qmax as f32) as i32
}

/// Adding then subtracting 1.5·2^23 rounds an f32 of magnitude below 2^22 to the nearest
/// integer, ties to even, in the default rounding mode, without a library call.
pub const ROUND_MAGIC: f32 = 12_582_912.0;

/// Largest magnitude the magic rounding handles exactly (2^22).
pub const MAGIC_EXACT: f32 = 4_194_304.0;

/// `x̂ = (q − z)·s`.
#[inline]
pub fn dequantize_code(q: i32, s: f32, z: i32) -> f32 {
    // Wrapping, like WGSL i32 arithmetic.
    q.wrapping_sub(z) as f32 * s
}

/// How one side (input or output) of a segment kernel is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One f32 per element.
    Elements,
    /// Codes packed `bits` to the u32 word (layout of `format::pack`); each segment starts on
    /// a fresh word.
    Packed,
}

impl Layout {
    /// Units (elements or words) that `len` elements of `seg` occupy.
    pub fn span(self, seg: &AffineSegment, len: u64) -> u64 {
        match self {
            Layout::Elements => len,
            Layout::Packed => (len * u64::from(seg.bits)).div_ceil(32),
        }
    }
}

impl AffineSegment {
    /// Half-open unit ranges of the input, the output and the parameters the segment touches.
    pub fn ranges(&self, src: Layout, dst: Layout) -> [(u64, u64); 3] {
        let len = u64::from(self.len);
        let (s, d, p) = (
            u64::from(self.src),
            u64::from(self.dst),
            u64::from(self.param),
        );
        [
            (s, s + src.span(self, len)),
            (d, d + dst.span(self, len)),
            (p, p + self.groups() as u64),
        ]
    }
}

/// Checks a segment table against the lengths (in units) of the input, output and
/// parameter arrays, and that no two segments write the same output.
pub fn check_segments(
    op: &str,
    segments: &[AffineSegment],
    (src_layout, src_len): (Layout, usize),
    (dst_layout, dst_len): (Layout, usize),
    params_len: usize,
) -> Result<()> {
    let mut outputs = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        seg.validate(op)?;
        let [s, d, p] = seg.ranges(src_layout, dst_layout);
        if s.1 > src_len as u64 || d.1 > dst_len as u64 || p.1 > params_len as u64 {
            return Err(Error::shape(
                op,
                format!("segment {i} ({seg:?}) reaches outside its tensors"),
            ));
        }
        if seg.len > 0 {
            outputs.push(d);
        }
    }
    outputs.sort_unstable();
    if outputs.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(Error::param(op, "segments write overlapping outputs"));
    }
    Ok(())
}

/// The calibrated range of one group and how many of its values were not finite (those are
/// left out of the range). Mirrored by `GroupRange` in `shaders/affine.wgsl`; 16 bytes so that
/// windows of an array of them start on an element.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupRange {
    /// Lower end (+inf for a group without finite values).
    pub lo: f32,
    /// Upper end (−inf for a group without finite values).
    pub hi: f32,
    /// Count of NaN and ±Inf values.
    pub nonfinite: u32,
    pub _pad: u32,
}
const _: () = assert!(std::mem::size_of::<GroupRange>() == 16);

impl GroupRange {
    /// The range of no values.
    pub const EMPTY: GroupRange = GroupRange {
        lo: f32::INFINITY,
        hi: f32::NEG_INFINITY,
        nonfinite: 0,
        _pad: 0,
    };

    /// Widened by one value (non-finite values are counted, not ranged).
    #[inline]
    pub fn push(self, x: f32) -> Self {
        if x.is_finite() {
            GroupRange {
                lo: self.lo.min(x),
                hi: self.hi.max(x),
                ..self
            }
        } else {
            GroupRange {
                nonfinite: self.nonfinite + 1,
                ..self
            }
        }
    }

    /// The union of two ranges.
    #[inline]
    pub fn merge(self, o: Self) -> Self {
        GroupRange {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
            nonfinite: self.nonfinite + o.nonfinite,
            _pad: 0,
        }
    }
}
