//! Relative-index sparse storage of a pruned tensor (Deep Compression, Han, Mao, Dally 2016
//! §2, Fig. 2): the kept elements in flat order, each stored as its code and the number of
//! pruned elements since the previous kept one (the gap), in a fixed width of `index_bits`.
//!
//! A gap wider than the field is split with filler entries, the paper's "filler zero": the
//! largest field value `M = 2^index_bits − 1` is reserved for fillers, and a filler skips `M`
//! pruned positions and carries no code (the paper's filler also stores a zero weight; the
//! reserved value makes that slot unnecessary). Real entries have gaps in `[0, M − 1]`, so a
//! run of `z` pruned elements before a kept one costs `⌊z / M⌋` fillers and one entry with gap
//! `z mod M`. Pruned elements after the last kept one need no entries: the dense length is
//! stored. Decoding gives the keep-mask and the dense codes (0 at pruned positions).

use super::pack;
use crate::error::{Error, Result};

/// Widest index field: gaps are Huffman-coded over an alphabet of `2^index_bits` symbols.
pub const MAX_INDEX_BITS: u32 = 16;

/// A pruned tensor's kept elements by relative index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseStream {
    /// Elements of the dense tensor.
    pub len: u64,
    /// Width of the gap field.
    pub index_bits: u32,
    /// One gap per entry, below `2^index_bits`; the largest value marks a filler.
    pub gaps: Vec<u32>,
    /// One code per kept element, in order.
    pub codes: Vec<u32>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::param("sparse", msg)
}

/// The reserved gap value of a filler entry for a field of `index_bits`.
pub fn filler(index_bits: u32) -> u32 {
    (1u32 << index_bits) - 1
}

fn check_index_bits(index_bits: u32) -> Result<()> {
    if !(1..=MAX_INDEX_BITS).contains(&index_bits) {
        return Err(err(format!(
            "index width {index_bits} outside 1..={MAX_INDEX_BITS}"
        )));
    }
    Ok(())
}

/// The sparse form of `len` elements with keep-mask `mask` (1 bit per element) and packed
/// `code_bits`-bit codes `codes` (the codes of pruned elements are ignored).
pub fn encode(
    mask: &[u32],
    codes: &[u32],
    len: usize,
    code_bits: u32,
    index_bits: u32,
) -> Result<SparseStream> {
    check_index_bits(index_bits)?;
    if mask.len() != pack::packed_words(len, 1) || codes.len() != pack::packed_words(len, code_bits)
    {
        return Err(err(format!(
            "{} mask words and {} code words for {len} elements of {code_bits} bits",
            mask.len(),
            codes.len()
        )));
    }
    let m = u64::from(filler(index_bits));
    let (mut gaps, mut out) = (Vec::new(), Vec::new());
    let mut cursor = 0u64;
    for (w, &word) in mask.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let pos = w as u64 * 32 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let z = pos - cursor;
            gaps.extend(std::iter::repeat_n(m as u32, (z / m) as usize));
            gaps.push((z % m) as u32);
            out.push(pack::get_code(codes, pos as usize, code_bits));
            cursor = pos + 1;
        }
    }
    Ok(SparseStream {
        len: len as u64,
        index_bits,
        gaps,
        codes: out,
    })
}

/// The keep-mask and dense packed codes (0 where pruned) of a sparse stream, after checking
/// that every entry lands inside the tensor and every kept element has exactly one code.
pub fn decode(s: &SparseStream, code_bits: u32) -> Result<(Vec<u32>, Vec<u32>)> {
    check_index_bits(s.index_bits)?;
    let len = usize::try_from(s.len).map_err(|_| err("length exceeds memory"))?;
    let m = filler(s.index_bits);
    let mut mask = vec![0u32; pack::packed_words(len, 1)];
    let mut codes = vec![0u32; pack::packed_words(len, code_bits)];
    let mut cursor = 0u64;
    let mut next_code = s.codes.iter();
    for &g in &s.gaps {
        if g > m {
            return Err(err(format!("gap {g} does not fit {} bits", s.index_bits)));
        }
        if g == m {
            cursor += u64::from(m);
            continue;
        }
        let pos = cursor + u64::from(g);
        if pos >= s.len {
            return Err(err(format!(
                "an entry lands at {pos}, past {} elements",
                s.len
            )));
        }
        let code = *next_code
            .next()
            .ok_or_else(|| err("fewer codes than entries"))?;
        if code > pack::mask(code_bits) {
            return Err(err(format!("code {code} does not fit {code_bits} bits")));
        }
        pack::put_code(&mut mask, pos as usize, 1, 1);
        pack::put_code(&mut codes, pos as usize, code_bits, code);
        cursor = pos + 1;
    }
    if next_code.next().is_some() {
        return Err(err("more codes than entries"));
    }
    Ok((mask, codes))
}

impl SparseStream {
    /// Filler entries.
    pub fn fillers(&self) -> usize {
        let m = filler(self.index_bits);
        self.gaps.iter().filter(|&&g| g == m).count()
    }

    /// Bits of the fixed-width form: `index_bits` per entry (fillers included) and
    /// `code_bits` per kept element.
    pub fn fixed_width_bits(&self, code_bits: u32) -> u64 {
        self.gaps.len() as u64 * u64::from(self.index_bits)
            + self.codes.len() as u64 * u64::from(code_bits)
    }
}
