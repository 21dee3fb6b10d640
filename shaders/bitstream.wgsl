// Reading 32 bits from any bit offset of a packed little-endian code stream (layout in
// src/format/pack.rs): a funnel shift of two words. The including kernel defines
// `stream_word(stream, i)`: word i of its stream number `stream`, clamped to that stream (bits
// read past its end only ever meet a zero factor). Used by qmatmul and int8_matmul.

fn stream_bits(stream: u32, bit: u32) -> u32 {
    let i = bit / 32u;
    let sh = bit % 32u;
    let lo = stream_word(stream, i);
    let hi = stream_word(stream, i + 1u);
    return select((lo >> sh) | (hi << (32u - sh)), lo, sh == 0u);
}
