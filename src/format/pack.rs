//! The packed-code layout, defined once here (and mirrored by `shaders/quantize_pack.wgsl`
//! and `shaders/dequantize.wgsl`).
//!
//! A tensor's codes form one little-endian bitstream of u32 words: the b-bit code of element
//! `i` occupies bits `[i·b, i·b + b)`, bit `k` of the stream being bit `k mod 32` of word
//! `k / 32`. A code may straddle two words. Stored codes are unsigned, `u = q − qmin`. The
//! last word's unused high bits are zero. On disk the words are written as little-endian bytes,
//! so for b = 8 the bytes are the codes themselves and for b = 4 element 0 is the low nibble of
//! byte 0.

/// Number of u32 words holding `n` codes of `bits` bits.
pub fn packed_words(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// [`packed_words`] for sizes read from a file: `None` when `n·bits` overflows.
pub fn checked_packed_words(n: usize, bits: u32) -> Option<usize> {
    Some(n.checked_mul(bits as usize)?.div_ceil(32))
}

/// ORs code `code` (already masked to `bits`) of element `i` into `words`, which start at
/// element 0 of the stream.
#[inline]
pub fn put_code(words: &mut [u32], i: usize, bits: u32, code: u32) {
    let bit = i * bits as usize;
    let (w, shift) = (bit / 32, (bit % 32) as u32);
    words[w] |= code << shift;
    if shift + bits > 32 {
        words[w + 1] |= code >> (32 - shift);
    }
}

/// The code of element `i` from `words`, which start at element 0 of the stream.
#[inline]
pub fn get_code(words: &[u32], i: usize, bits: u32) -> u32 {
    let bit = i * bits as usize;
    let (w, shift) = (bit / 32, (bit % 32) as u32);
    let mut code = words[w] >> shift;
    if shift + bits > 32 {
        code |= words[w + 1] << (32 - shift);
    }
    code & mask(bits)
}

/// The low `bits` bits set.
#[inline]
pub fn mask(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    }
}

/// Packs `codes` (each below 2^bits) into a new word vector.
pub fn pack(codes: &[u32], bits: u32) -> Vec<u32> {
    let mut words = vec![0u32; packed_words(codes.len(), bits)];
    for (i, &c) in codes.iter().enumerate() {
        put_code(&mut words, i, bits, c & mask(bits));
    }
    words
}

/// Unpacks `n` codes.
pub fn unpack(words: &[u32], n: usize, bits: u32) -> Vec<u32> {
    (0..n).map(|i| get_code(words, i, bits)).collect()
}

/// The words as little-endian bytes (the on-disk form).
pub fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Words from little-endian bytes; `None` if the length is not a multiple of 4.
pub fn bytes_to_words(bytes: &[u8]) -> Option<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_width() {
        for bits in 1..=16u32 {
            for n in [0usize, 1, 3, 31, 32, 33, 100] {
                let codes: Vec<u32> = (0..n as u32)
                    .map(|i| i.wrapping_mul(2_654_435_761) & mask(bits))
                    .collect();
                let words = pack(&codes, bits);
                assert_eq!(words.len(), packed_words(n, bits));
                assert_eq!(unpack(&words, n, bits), codes, "bits {bits} n {n}");
            }
        }
    }

    #[test]
    fn documented_layout() {
        // 4-bit: element 0 is the low nibble of byte 0.
        let words = pack(&[0x1, 0x2, 0x3], 4);
        assert_eq!(words_to_bytes(&words), vec![0x21, 0x03, 0, 0]);
        // 3-bit: element 10 straddles words 0 and 1 (bits 30..33).
        let mut codes = vec![0u32; 11];
        codes[10] = 0b111;
        let words = pack(&codes, 3);
        assert_eq!(words, vec![0b11 << 30, 0b1]);
    }
}
