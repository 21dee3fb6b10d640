//! Reading a stored quantized tensor one window of elements at a time: its parts are checked
//! against the record once, then each window becomes a small [`QuantizedTensor`] of its own
//! (codes and mask bits re-based to element 0, parameters of just the groups it touches), so
//! decoding never holds a whole tensor. Sparse (Huffman) storage cannot be cut without
//! decoding its streams, so it is rebuilt densely once ([`super::disk::from_parts`]).

use std::borrow::Cow;
use std::ops::Range;

use super::disk::{self, StoredPart, TensorRecord};
use super::pack;
use super::quantized::{Encoding, Granularity, QuantizedTensor};
use crate::affine::AffineScheme;
use crate::error::{Error, Result};

/// Packed words, still as mapped little-endian bytes or already decoded.
enum Words<'a> {
    Bytes(&'a [u8]),
    Owned(Vec<u32>),
}

impl Words<'_> {
    /// Word `i`, 0 past the end (the stream's unused high bits are zero anyway).
    fn word(&self, i: usize) -> u32 {
        match self {
            Words::Bytes(b) => b
                .get(i * 4..i * 4 + 4)
                .map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Words::Owned(w) => w.get(i).copied().unwrap_or(0),
        }
    }

    /// The `bits`-bit codes of elements `first..first + n` as a stream of their own.
    fn slice(&self, first: usize, n: usize, bits: u32) -> Vec<u32> {
        let start = first * bits as usize;
        let (w0, shift) = (start / 32, (start % 32) as u32);
        let mut out: Vec<u32> = (0..pack::packed_words(n, bits))
            .map(|i| {
                let lo = self.word(w0 + i) >> shift;
                if shift == 0 {
                    lo
                } else {
                    lo | self.word(w0 + i + 1) << (32 - shift)
                }
            })
            .collect();
        // The layout keeps a stream's unused high bits zero.
        let used = (n * bits as usize % 32) as u32;
        if let Some(last) = out.last_mut()
            && used != 0
        {
            *last &= pack::mask(used);
        }
        out
    }

    /// The mapped bytes holding elements `r` (empty when decoded): what may be released.
    fn bytes(&self, r: &Range<usize>, bits: u32) -> &[u8] {
        match self {
            Words::Bytes(b) => {
                let lo = (r.start * bits as usize / 32 * 4).min(b.len());
                let hi = ((r.end * bits as usize).div_ceil(32) * 4).clamp(lo, b.len());
                &b[lo..hi]
            }
            Words::Owned(_) => &[],
        }
    }
}

/// Decoding parameters, still as mapped bytes.
enum Params<'a> {
    Affine {
        scheme: AffineScheme,
        scale: &'a [u8],
        zero: Option<&'a [u8]>,
    },
    Codebook {
        /// Mapped, or rebuilt from a sparse tensor's decoding.
        levels: Cow<'a, [u8]>,
    },
}

/// A stored quantized tensor whose parts were checked against its record, read by window.
pub struct StoredTensor<'a> {
    shape: Vec<usize>,
    numel: usize,
    bits: u32,
    granularity: Granularity,
    group_len: usize,
    codes: Words<'a>,
    mask: Option<Words<'a>>,
    params: Params<'a>,
}

fn f32s_iter(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    f32s_iter(b).collect()
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Checks the parts of `name` against its record without decoding anything (sparse streams:
/// headers only), as `inspect` needs.
pub fn check<'a>(
    name: &str,
    rec: &TensorRecord,
    get: impl Fn(&str) -> Option<StoredPart<'a>>,
) -> Result<()> {
    disk::check_parts(name, rec, get)
}

fn bad(name: &str, msg: String) -> Error {
    Error::param("wgquant record", format!("tensor '{name}': {msg}"))
}

/// The bytes of part `suffix` of `name`, whose presence, dtype and size
/// [`disk::check_parts`] has proven.
fn part<'a>(
    name: &str,
    get: &impl Fn(&str) -> Option<StoredPart<'a>>,
    suffix: &str,
) -> Result<&'a [u8]> {
    get(&format!("{name}{suffix}"))
        .map(|p| p.data)
        .ok_or_else(|| bad(name, format!("part '{name}{suffix}' is missing")))
}

/// Elements, elements per group and groups of a record checked by [`disk::check_parts`].
fn counts(rec: &TensorRecord) -> Result<(usize, usize, usize)> {
    let numel = rec.shape.iter().product::<usize>();
    let group_len = rec.granularity.group_len(&rec.shape)?.max(1);
    Ok((numel, group_len, numel / group_len))
}

impl<'a> StoredTensor<'a> {
    /// Opens `name` for windowed reading: dense parts are checked and stay mapped; sparse
    /// streams are decoded here, once, into dense codes and a mask (memory: the whole
    /// tensor's codes, `bits + 1` bits per element).
    pub fn open(
        name: &str,
        rec: &TensorRecord,
        get: impl Fn(&str) -> Option<StoredPart<'a>>,
    ) -> Result<Self> {
        if rec.index_bits.is_none() {
            return Self::open_dense(name, rec, &get);
        }
        let qt = disk::from_parts(name, rec, get)?;
        let (numel, group_len, _) = counts(rec)?;
        let Encoding::Codebook { levels, .. } = qt.encoding else {
            return Err(bad(name, "sparse storage of a non-codebook tensor".into()));
        };
        // Levels are small (2^bits per group): kept as bytes like mapped ones.
        let levels = Cow::Owned(levels.iter().flat_map(|l| l.to_le_bytes()).collect());
        Ok(Self {
            shape: qt.shape,
            numel,
            bits: qt.bits,
            granularity: qt.granularity,
            group_len,
            codes: Words::Owned(qt.codes),
            mask: qt.mask.map(Words::Owned),
            params: Params::Codebook { levels },
        })
    }

    fn open_dense(
        name: &str,
        rec: &TensorRecord,
        get: &impl Fn(&str) -> Option<StoredPart<'a>>,
    ) -> Result<Self> {
        // One check for every reader: sizes, zero points, decoded range (`disk::check_parts`).
        disk::check_parts(name, rec, get)?;
        let (numel, group_len, _) = counts(rec)?;
        let codes = part(name, get, disk::CODES)?;
        let mask = match get(&format!("{name}{}", disk::MASK)) {
            None => None,
            Some(_) => Some(part(name, get, disk::MASK)?),
        };
        let params = match rec.encoding.as_str() {
            "affine" => {
                let mode = rec
                    .mode
                    .ok_or_else(|| bad(name, "affine record without mode".into()))?;
                let scheme = AffineScheme::new(rec.bits, mode)?;
                Params::Affine {
                    scheme,
                    scale: part(name, get, disk::SCALE)?,
                    zero: if scheme.is_symmetric() {
                        None
                    } else {
                        Some(part(name, get, disk::ZERO)?)
                    },
                }
            }
            "codebook" => Params::Codebook {
                levels: Cow::Borrowed(part(name, get, disk::LEVELS)?),
            },
            other => return Err(bad(name, format!("unknown encoding '{other}'"))),
        };
        Ok(Self {
            shape: rec.shape.clone(),
            numel,
            bits: rec.bits,
            granularity: rec.granularity,
            group_len,
            codes: Words::Bytes(codes),
            mask: mask.map(Words::Bytes),
            params,
        })
    }

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Consecutive windows of at most `max_elems` elements covering the tensor, each of whole
    /// parameter groups (a group longer than `max_elems` is cut inside itself), preferring
    /// lengths after which codes end on a word boundary.
    pub fn spans(&self, max_elems: usize) -> Vec<Range<usize>> {
        let (n, g, max) = (self.numel, self.group_len, max_elems.max(1));
        if g <= max {
            let word_groups = 32 / gcd(g * self.bits as usize % 32, 32);
            let unit = if g * word_groups <= max {
                g * word_groups
            } else {
                g
            };
            return steps(0..n, max / unit * unit);
        }
        // Cut each group alone, in word-aligned pieces from its start.
        let piece = (max / 32 * 32).max(1);
        (0..n / g)
            .flat_map(|k| steps(k * g..(k + 1) * g, piece))
            .collect()
    }

    /// The tensor of elements `r` (whole groups, or a part of one group), as a shape of its
    /// own: `[groups, group_len]` with the same granularity, or `[1, len]` per channel for a
    /// part of a group; checked like any quantized tensor.
    pub fn window(&self, r: Range<usize>) -> Result<QuantizedTensor> {
        let op = "window";
        let g = self.group_len;
        if r.start >= r.end || r.end > self.numel {
            return Err(Error::shape(
                op,
                format!("elements {r:?} of a tensor of {}", self.numel),
            ));
        }
        let n = r.len();
        let (shape, granularity, groups) = if r.start.is_multiple_of(g) && n.is_multiple_of(g) {
            (vec![n / g, g], self.granularity, r.start / g..r.end / g)
        } else if r.start / g == (r.end - 1) / g {
            // One group's part decodes through that group's parameters alone.
            let k = r.start / g;
            (vec![1, n], Granularity::Channel, k..k + 1)
        } else {
            return Err(Error::shape(
                op,
                format!("elements {r:?} cross a boundary of groups of {g}"),
            ));
        };
        let at = |b: &[u8], per: usize| -> Vec<u8> {
            b[groups.start * per * 4..groups.end * per * 4].to_vec()
        };
        let encoding = match &self.params {
            Params::Affine {
                scheme,
                scale,
                zero,
            } => Encoding::Affine {
                scheme: *scheme,
                scale: f32s(&at(scale, 1)),
                zero_point: zero.map_or_else(|| vec![0; groups.len()], |z| i32s(&at(z, 1))),
            },
            Params::Codebook { levels } => Encoding::Codebook {
                levels: f32s(&at(levels, 1 << self.bits)),
                thresholds: None,
            },
        };
        let qt = QuantizedTensor {
            shape,
            bits: self.bits,
            granularity,
            codes: self.codes.slice(r.start, n, self.bits),
            encoding,
            mask: self.mask.as_ref().map(|m| m.slice(r.start, n, 1)),
        };
        qt.validate()?;
        Ok(qt)
    }

    /// The mapped bytes window `r` read (codes, mask, parameters), for releasing their pages.
    pub fn mapped(&self, r: &Range<usize>) -> Vec<&[u8]> {
        let g = self.group_len;
        let groups = r.start / g..r.end.div_ceil(g);
        let param = |b: &'a [u8], per: usize| group_bytes(b, &groups, per);
        let mut out = vec![self.codes.bytes(r, self.bits)];
        if let Some(m) = &self.mask {
            out.push(m.bytes(r, 1));
        }
        match &self.params {
            Params::Affine { scale, zero, .. } => {
                out.push(param(scale, 1));
                if let Some(z) = zero {
                    out.push(param(z, 1));
                }
            }
            Params::Codebook {
                levels: Cow::Borrowed(levels),
            } => out.push(param(levels, 1 << self.bits)),
            Params::Codebook { .. } => {}
        }
        out
    }
}

/// The bytes of groups `groups` in a part of `per` 4-byte values per group.
fn group_bytes<'b>(b: &'b [u8], groups: &Range<usize>, per: usize) -> &'b [u8] {
    let lo = (groups.start * per * 4).min(b.len());
    &b[lo..(groups.end * per * 4).clamp(lo, b.len())]
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `r` in consecutive steps of `step` (at least 1), the last shorter.
fn steps(r: Range<usize>, step: usize) -> Vec<Range<usize>> {
    let step = step.max(1);
    (r.start..r.end)
        .step_by(step)
        .map(|s| s..(s + step).min(r.end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_rebase_codes_that_straddle_words() {
        let codes: Vec<u32> = (0..100u32).map(|i| (i * 5 + 3) & 7).collect();
        let words = pack::pack(&codes, 3);
        let w = Words::Owned(words.clone());
        let b = pack::words_to_bytes(&words);
        for (first, n) in [(0, 100), (10, 1), (11, 33), (7, 93), (99, 1)] {
            let expect = pack::pack(&codes[first..first + n], 3);
            assert_eq!(w.slice(first, n, 3), expect, "{first}+{n}");
            assert_eq!(Words::Bytes(&b).slice(first, n, 3), expect, "{first}+{n}");
        }
    }

    #[test]
    fn spans_cover_in_whole_groups() {
        let qt = crate::format::QuantizedTensor {
            shape: vec![6, 12],
            bits: 3,
            granularity: Granularity::Group(4),
            codes: vec![0; pack::packed_words(72, 3)],
            encoding: Encoding::Affine {
                scheme: AffineScheme::new(3, crate::affine::AffineMode::Asymmetric).unwrap(),
                scale: vec![1.0; 18],
                zero_point: vec![0; 18],
            },
            mask: None,
        };
        let (rec, parts) = disk::to_parts(
            "w",
            &qt,
            "uniform",
            safetensors::Dtype::F32,
            None,
            disk::Storage::Dense,
        )
        .unwrap();
        let get = |n: &str| {
            parts.iter().find(|p| p.name == n).map(|p| StoredPart {
                dtype: p.dtype,
                shape: p.shape.clone(),
                data: &p.data,
            })
        };
        let st = StoredTensor::open("w", &rec, get).unwrap();
        for max in [1, 3, 4, 5, 9, 40, 100] {
            let spans = st.spans(max);
            assert_eq!(spans.first().map(|r| r.start), Some(0));
            assert_eq!(spans.last().map(|r| r.end), Some(72));
            for w in spans.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            for r in &spans {
                assert!(r.len() <= max.max(1), "{r:?} for {max}");
                st.window(r.clone()).unwrap();
            }
        }
    }
}
