// Reading one code of a packed bitstream (layout in src/format/pack.rs) from the including
// kernel's `src: array<u32>`. Used by dequantize and codebook_dequantize.

// The b-bit code of element i of a segment whose words start at `first_word`.
fn unpack_code(first_word: u32, i: u32, bits: u32) -> u32 {
    let bit = i * bits;
    let w = first_word + bit / 32u;
    let shift = bit % 32u;
    var code = src[w] >> shift;
    if (shift + bits > 32u) {
        code |= src[w + 1u] << (32u - shift);
    }
    return code & ((1u << bits) - 1u);
}
