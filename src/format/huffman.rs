//! Canonical, length-limited Huffman coding of small-integer symbol streams (Deep Compression's
//! third stage, Han, Mao, Dally 2016 §4), with a decoder that rejects malformed input.
//!
//! Code lengths are optimal under a maximum length ([`MAX_CODE_LEN`]) by package-merge
//! (Larmore & Hirschberg 1990); codes are canonical (Schwartz & Kallick 1964): sorted by
//! (length, symbol), each the previous plus one, shifted left when the length grows. So the
//! lengths alone describe the code. A stream with one distinct symbol gets a 1-bit code.
//!
//! Bitstream: codes are written most significant bit first into a stream whose bit `k` is bit
//! `k mod 32` of word `k / 32` (the `format::pack` convention).
//!
//! Serialized form ([`HuffmanStream::to_bytes`]), all little-endian:
//! `u32 alphabet | u64 symbols | u64 bits | alphabet × u8 code lengths | ⌈bits/32⌉ × u32 words`.

use crate::error::{Error, Result};

/// Longest code: 24 bits holds any alphabet up to 2^16 symbols with room for skew, and keeps
/// a code inside one 32-bit read.
pub const MAX_CODE_LEN: u32 = 24;

/// Largest alphabet: 2^16 symbols (codes of up to 16 bits, gaps of up to 16 bits).
pub const MAX_ALPHABET: usize = 1 << 16;

/// Bytes of the fixed header of the serialized form.
/// Bytes of a serialized stream's header: alphabet (u32), symbols (u64), bits (u64).
pub const HEADER_BYTES: usize = 20;

fn err(msg: impl Into<String>) -> Error {
    Error::param("huffman", msg)
}

/// Optimal code lengths under `max_len` for symbol frequencies `freqs` (0 = unused, length 0),
/// by package-merge. One used symbol gets length 1.
pub fn code_lengths(freqs: &[u64], max_len: u32) -> Result<Vec<u8>> {
    let mut used: Vec<(u64, usize)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, f)| **f > 0)
        .map(|(s, f)| (*f, s))
        .collect();
    let mut lengths = vec![0u8; freqs.len()];
    match used.len() {
        0 => return Ok(lengths),
        1 => {
            lengths[used[0].1] = 1;
            return Ok(lengths);
        }
        n if n as u64 > 1u64 << max_len.min(63) => {
            return Err(err(format!(
                "{n} symbols cannot have codes of at most {max_len} bits"
            )));
        }
        _ => {}
    }
    // Leaves sorted by (frequency, symbol) so the result does not depend on input order.
    used.sort_unstable();
    let n = used.len();
    // Level lists of package-merge, shallowest code length last: each list holds leaves and
    // packages (pairs of the previous list's items) sorted by weight, leaves first on ties.
    // `None` marks a package.
    let mut levels: Vec<Vec<(u64, Option<usize>)>> = Vec::with_capacity(max_len as usize);
    levels.push(used.iter().map(|&(f, s)| (f, Some(s))).collect());
    for _ in 1..max_len {
        let prev = levels.last().map(Vec::as_slice).unwrap_or(&[]);
        let packages = prev
            .chunks_exact(2)
            .map(|p| (p[0].0.saturating_add(p[1].0), None));
        let mut merged = Vec::with_capacity(n + prev.len() / 2);
        let mut leaves = used.iter().map(|&(f, s)| (f, Some(s))).peekable();
        let mut packs = packages.peekable();
        loop {
            let take_leaf = match (leaves.peek(), packs.peek()) {
                (Some(l), Some(p)) => l.0 <= p.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let item = if take_leaf {
                leaves.next()
            } else {
                packs.next()
            };
            merged.extend(item);
        }
        levels.push(merged);
    }
    // The 2n − 2 lightest items of the last list; each leaf among the selected items of every
    // list adds one to its symbol's length, and p selected packages select 2p items below.
    let mut take = 2 * n - 2;
    for list in levels.iter().rev() {
        let mut packages = 0;
        for item in &list[..take.min(list.len())] {
            match item.1 {
                Some(s) => lengths[s] += 1,
                None => packages += 1,
            }
        }
        take = 2 * packages;
    }
    Ok(lengths)
}

/// Canonical codes for `lengths`: `(code, length)` per symbol (unused symbols get length 0).
/// Fails unless the lengths describe a prefix code (Kraft sum at most 1).
pub fn canonical_codes(lengths: &[u8]) -> Result<Vec<(u32, u8)>> {
    let mut order: Vec<usize> = (0..lengths.len()).filter(|&s| lengths[s] > 0).collect();
    order.sort_by_key(|&s| (lengths[s], s));
    let mut codes = vec![(0u32, 0u8); lengths.len()];
    let mut code: u64 = 0;
    let mut prev_len = 0u8;
    for &s in &order {
        let len = lengths[s];
        if u32::from(len) > MAX_CODE_LEN {
            return Err(err(format!("code length {len} exceeds {MAX_CODE_LEN}")));
        }
        code <<= len - prev_len;
        if code >= 1u64 << len {
            return Err(err("code lengths oversubscribe the code space"));
        }
        codes[s] = (code as u32, len);
        code += 1;
        prev_len = len;
    }
    Ok(codes)
}

/// A Huffman-coded stream of symbols below `alphabet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HuffmanStream {
    /// Symbols are below this.
    pub alphabet: u32,
    /// Number of symbols coded.
    pub symbols: u64,
    /// Bits of the coded stream.
    pub bits: u64,
    /// Code length of every symbol of the alphabet (0 = never used).
    pub lengths: Vec<u8>,
    /// The bitstream.
    pub words: Vec<u32>,
}

/// Appends bits to a `format::pack`-style stream.
struct BitWriter {
    words: Vec<u32>,
    acc: u64,
    fill: u32,
    bits: u64,
}

impl BitWriter {
    /// Appends the low `len` bits of `v`, lowest first.
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= u64::from(v) << self.fill;
        self.fill += len;
        self.bits += u64::from(len);
        if self.fill >= 32 {
            self.words.push(self.acc as u32);
            self.acc >>= 32;
            self.fill -= 32;
        }
    }

    fn finish(mut self) -> (Vec<u32>, u64) {
        if self.fill > 0 {
            self.words.push(self.acc as u32);
        }
        (self.words, self.bits)
    }
}

/// Huffman-codes `symbols` (each below `alphabet`) with a code built from their own
/// frequencies.
pub fn encode(symbols: &[u32], alphabet: usize) -> Result<HuffmanStream> {
    if alphabet == 0 || alphabet > MAX_ALPHABET {
        return Err(err(format!(
            "alphabet of {alphabet} symbols (1..={MAX_ALPHABET})"
        )));
    }
    let mut freqs = vec![0u64; alphabet];
    for &s in symbols {
        *freqs
            .get_mut(s as usize)
            .ok_or_else(|| err(format!("symbol {s} outside an alphabet of {alphabet}")))? += 1;
    }
    let lengths = code_lengths(&freqs, MAX_CODE_LEN)?;
    let codes = canonical_codes(&lengths)?;
    // Codes go most significant bit first into an LSB-first stream: store them bit-reversed.
    let reversed: Vec<u32> = codes
        .iter()
        .map(|&(c, l)| {
            if l == 0 {
                0
            } else {
                c.reverse_bits() >> (32 - u32::from(l))
            }
        })
        .collect();
    let mut w = BitWriter {
        words: Vec::with_capacity(symbols.len() / 8 + 1),
        acc: 0,
        fill: 0,
        bits: 0,
    };
    for &s in symbols {
        w.put(reversed[s as usize], u32::from(codes[s as usize].1));
    }
    let (words, bits) = w.finish();
    Ok(HuffmanStream {
        alphabet: alphabet as u32,
        symbols: symbols.len() as u64,
        bits,
        lengths,
        words,
    })
}

/// Canonical decoding tables: per length, the first code, how many codes, and where its
/// symbols start in the (length, symbol)-sorted symbol list.
struct Decoder {
    first: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
    offset: [u32; MAX_CODE_LEN as usize + 1],
    sorted: Vec<u32>,
}

impl Decoder {
    fn new(lengths: &[u8]) -> Result<Self> {
        // Validates the lengths (Kraft) before building anything from them.
        canonical_codes(lengths)?;
        let mut count = [0u32; MAX_CODE_LEN as usize + 1];
        for &l in lengths.iter().filter(|&&l| l > 0) {
            count[l as usize] += 1;
        }
        let mut sorted: Vec<u32> = (0..lengths.len() as u32)
            .filter(|&s| lengths[s as usize] > 0)
            .collect();
        sorted.sort_by_key(|&s| (lengths[s as usize], s));
        let mut first = [0u32; MAX_CODE_LEN as usize + 1];
        let mut offset = [0u32; MAX_CODE_LEN as usize + 1];
        let (mut code, mut off) = (0u32, 0u32);
        for len in 1..=MAX_CODE_LEN as usize {
            code <<= 1;
            first[len] = code;
            offset[len] = off;
            code += count[len];
            off += count[len];
        }
        Ok(Self {
            first,
            count,
            offset,
            sorted,
        })
    }
}

/// Decodes a stream, checking it against its own header: every code must be complete and
/// known, and the symbols must use exactly `bits` bits.
pub fn decode(stream: &HuffmanStream) -> Result<Vec<u32>> {
    if stream.lengths.len() != stream.alphabet as usize {
        return Err(err(format!(
            "{} code lengths for an alphabet of {}",
            stream.lengths.len(),
            stream.alphabet
        )));
    }
    if stream.words.len() as u64 != stream.bits.div_ceil(32) {
        return Err(err(format!(
            "{} words for {} bits",
            stream.words.len(),
            stream.bits
        )));
    }
    let d = Decoder::new(&stream.lengths)?;
    // Every symbol takes at least one bit, which bounds the allocation by the data present.
    if stream.symbols > stream.bits {
        return Err(err(format!(
            "{} symbols cannot fit in {} bits",
            stream.symbols, stream.bits
        )));
    }
    let mut out = Vec::with_capacity(stream.symbols as usize);
    let mut pos = 0u64;
    let bit_at = |k: u64| (stream.words[(k / 32) as usize] >> (k % 32)) & 1;
    for _ in 0..stream.symbols {
        let mut code = 0u32;
        let mut len = 0usize;
        loop {
            if pos >= stream.bits {
                return Err(err("the bitstream ends inside a code"));
            }
            code = (code << 1) | bit_at(pos);
            pos += 1;
            len += 1;
            if len > MAX_CODE_LEN as usize {
                return Err(err(format!("no code matches at bit {pos}")));
            }
            let k = code.wrapping_sub(d.first[len]);
            if code >= d.first[len] && k < d.count[len] {
                out.push(d.sorted[(d.offset[len] + k) as usize]);
                break;
            }
        }
    }
    if pos != stream.bits {
        return Err(err(format!(
            "{} bits left over after {} symbols",
            stream.bits - pos,
            stream.symbols
        )));
    }
    Ok(out)
}

impl HuffmanStream {
    /// Bytes of the serialized form (header, code lengths, bitstream): what storing it costs.
    pub fn byte_len(&self) -> usize {
        HEADER_BYTES + self.lengths.len() + self.words.len() * 4
    }

    /// The serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        out.extend(self.alphabet.to_le_bytes());
        out.extend(self.symbols.to_le_bytes());
        out.extend(self.bits.to_le_bytes());
        out.extend(&self.lengths);
        out.extend(self.words.iter().flat_map(|w| w.to_le_bytes()));
        out
    }

    /// The length of the serialized stream that starts `bytes`, read from its header (so a
    /// stream padded to whole words can be cut back to its own bytes).
    pub fn byte_len_from_header(bytes: &[u8]) -> Option<usize> {
        let h = bytes.get(..HEADER_BYTES)?;
        let alphabet = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let bits = u64::from_le_bytes(h[12..20].try_into().ok()?);
        usize::try_from(bits.div_ceil(32))
            .ok()?
            .checked_mul(4)?
            .checked_add(HEADER_BYTES + alphabet)
    }

    /// Parses the serialized form, checking every length against the bytes present.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or_else(|| err(format!("{} bytes are too short for a header", bytes.len())))?;
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        let alphabet = u32_at(0);
        let (symbols, bits) = (u64_at(4), u64_at(12));
        if alphabet == 0 || alphabet as usize > MAX_ALPHABET {
            return Err(err(format!("alphabet of {alphabet} symbols")));
        }
        let rest = &bytes[HEADER_BYTES..];
        let words = bits.div_ceil(32);
        let need = alphabet as u64 + words * 4;
        if rest.len() as u64 != need {
            return Err(err(format!(
                "{} bytes after the header, expected {need}",
                rest.len()
            )));
        }
        let (lengths, data) = rest.split_at(alphabet as usize);
        Ok(Self {
            alphabet,
            symbols,
            bits,
            lengths: lengths.to_vec(),
            words: data
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    }
}
