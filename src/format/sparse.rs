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

/// The kept elements of a sparse stream in order, as `(position, code)`, each checked: gaps
/// fit the field, positions fall inside the tensor, codes fit `code_bits` and every entry has
/// exactly one code. Stops after the first error.
struct Entries<'a> {
    len: u64,
    index_bits: u32,
    code_bits: u32,
    gaps: std::slice::Iter<'a, u32>,
    codes: std::slice::Iter<'a, u32>,
    cursor: u64,
    failed: bool,
}

impl<'a> Entries<'a> {
    fn new(s: &'a SparseStream, code_bits: u32) -> Result<Self> {
        check_index_bits(s.index_bits)?;
        if !(1..=32).contains(&code_bits) {
            return Err(err(format!("code width {code_bits} outside 1..=32")));
        }
        Ok(Self {
            len: s.len,
            index_bits: s.index_bits,
            code_bits,
            gaps: s.gaps.iter(),
            codes: s.codes.iter(),
            cursor: 0,
            failed: false,
        })
    }

    fn entry(&mut self) -> Option<Result<(u64, u32)>> {
        let m = filler(self.index_bits);
        for &g in self.gaps.by_ref() {
            if g > m {
                return Some(Err(err(format!(
                    "gap {g} does not fit {} bits",
                    self.index_bits
                ))));
            }
            if g == m {
                self.cursor += u64::from(m);
                continue;
            }
            let pos = self.cursor + u64::from(g);
            if pos >= self.len {
                return Some(Err(err(format!(
                    "an entry lands at {pos}, past {} elements",
                    self.len
                ))));
            }
            let Some(&code) = self.codes.next() else {
                return Some(Err(err("fewer codes than entries")));
            };
            if code > pack::mask(self.code_bits) {
                return Some(Err(err(format!(
                    "code {code} does not fit {} bits",
                    self.code_bits
                ))));
            }
            self.cursor = pos + 1;
            return Some(Ok((pos, code)));
        }
        if self.codes.next().is_some() {
            return Some(Err(err("more codes than entries")));
        }
        None
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<(u64, u32)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.entry();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Elements `[start, start + len)` of the dense tensor: their keep-mask and packed codes (0
/// where pruned), both packed from element `start` on (`format::pack`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseBlock {
    /// First element.
    pub start: u64,
    /// Elements in the block.
    pub len: usize,
    /// Keep-mask, 1 bit per element.
    pub mask: Vec<u32>,
    /// Codes of `code_bits` bits.
    pub codes: Vec<u32>,
}

/// The dense tensor of a sparse stream in consecutive blocks of `block_len` elements (the
/// last may be shorter), so that a reader holds one block at a time however long the tensor;
/// every entry is checked as for [`decode`], and an error ends the iteration.
pub struct DenseBlocks<'a> {
    entries: std::iter::Peekable<Entries<'a>>,
    len: u64,
    code_bits: u32,
    block_len: usize,
    start: u64,
    finished: bool,
}

impl<'a> DenseBlocks<'a> {
    /// Blocks of `block_len` (at least 1) elements of the stream `s` of `code_bits`-bit codes.
    pub fn new(s: &'a SparseStream, code_bits: u32, block_len: usize) -> Result<Self> {
        if block_len == 0 || pack::checked_packed_words(block_len, 32).is_none() {
            return Err(err(format!("block length {block_len}")));
        }
        Ok(Self {
            entries: Entries::new(s, code_bits)?.peekable(),
            len: s.len,
            code_bits,
            block_len,
            start: 0,
            finished: false,
        })
    }

    fn block(&mut self) -> Result<Option<DenseBlock>> {
        if self.start >= self.len {
            // Past the end: what is left of the stream must be nothing (or is an error).
            self.finished = true;
            return match self.entries.next() {
                Some(Err(e)) => Err(e),
                _ => Ok(None),
            };
        }
        let left = self.len - self.start;
        let n = usize::try_from(left).map_or(self.block_len, |l| l.min(self.block_len));
        let end = self.start + n as u64;
        let mut mask = vec![0u32; pack::packed_words(n, 1)];
        let mut codes = vec![0u32; pack::packed_words(n, self.code_bits)];
        while let Some(entry) = self
            .entries
            .next_if(|e| e.as_ref().map_or(true, |&(pos, _)| pos < end))
        {
            let (pos, code) = entry?;
            let i = (pos - self.start) as usize;
            pack::put_code(&mut mask, i, 1, 1);
            pack::put_code(&mut codes, i, self.code_bits, code);
        }
        let block = DenseBlock {
            start: self.start,
            len: n,
            mask,
            codes,
        };
        self.start = end;
        Ok(Some(block))
    }
}

impl Iterator for DenseBlocks<'_> {
    type Item = Result<DenseBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = self.block().transpose();
        if matches!(item, Some(Err(_))) {
            self.finished = true;
        }
        item
    }
}

/// The keep-mask and dense packed codes (0 where pruned) of a sparse stream, after checking
/// that every entry lands inside the tensor and every kept element has exactly one code. The
/// dense tensor is allocated whole: a caller bounds `s.len` first, or reads [`DenseBlocks`].
pub fn decode(s: &SparseStream, code_bits: u32) -> Result<(Vec<u32>, Vec<u32>)> {
    let len = usize::try_from(s.len).map_err(|_| err("length exceeds memory"))?;
    let mut blocks = DenseBlocks::new(s, code_bits, len.max(1))?;
    let whole = match blocks.next().transpose()? {
        Some(b) => (b.mask, b.codes),
        None => (Vec::new(), Vec::new()),
    };
    // The one block is the whole tensor; this checks the rest of the stream.
    blocks.next().transpose()?;
    Ok(whole)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pruned tensor of `len` elements keeping every element whose index is a multiple of
    /// `step`, with 3-bit codes.
    fn sample(len: usize, step: usize, index_bits: u32) -> (Vec<u32>, Vec<u32>, SparseStream) {
        let mut mask = vec![0u32; pack::packed_words(len, 1)];
        let mut codes = vec![0u32; pack::packed_words(len, 3)];
        for i in (0..len).step_by(step) {
            pack::put_code(&mut mask, i, 1, 1);
            pack::put_code(&mut codes, i, 3, (i % 7) as u32 + 1);
        }
        let s = encode(&mask, &codes, len, 3, index_bits).unwrap();
        (mask, codes, s)
    }

    #[test]
    fn blocks_join_to_the_whole_decode() {
        for (len, step, index_bits, block) in [(1000, 37, 3, 64), (1757, 5, 2, 33), (33, 1, 4, 7)] {
            let (mask, codes, s) = sample(len, step, index_bits);
            assert_eq!(decode(&s, 3).unwrap(), (mask.clone(), codes.clone()));
            let blocks: Vec<DenseBlock> = DenseBlocks::new(&s, 3, block)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(blocks.len(), len.div_ceil(block));
            for b in &blocks {
                for i in 0..b.len {
                    let at = b.start as usize + i;
                    assert_eq!(pack::get_code(&b.mask, i, 1), pack::get_code(&mask, at, 1));
                    assert_eq!(
                        pack::get_code(&b.codes, i, 3),
                        pack::get_code(&codes, at, 3)
                    );
                }
            }
        }
    }

    #[test]
    fn malformed_streams_are_refused() {
        let (_, _, s) = sample(100, 9, 3);
        let past_end = SparseStream {
            len: 50,
            ..s.clone()
        };
        let extra_code = SparseStream {
            codes: [s.codes.clone(), vec![1]].concat(),
            ..s.clone()
        };
        let wide_code = SparseStream {
            codes: vec![8; s.codes.len()],
            ..s.clone()
        };
        for bad in [past_end, extra_code, wide_code] {
            assert!(decode(&bad, 3).is_err());
            let blocks: Result<Vec<_>> = DenseBlocks::new(&bad, 3, 16).unwrap().collect();
            assert!(blocks.is_err());
        }
    }
}
