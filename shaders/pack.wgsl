// Building one word of a segment's packed bitstream (layout in src/format/pack.rs): the
// codes overlapping bits [32w, 32w + 32), each from `code_of(seg, c)`, which the including
// kernel defines. Used by quantize_pack and codebook_assign.

// Word w of the segment's stream; the caller checks w is inside it.
fn pack_word(seg: AffineSegment, w: u32) -> u32 {
    let bit0 = w * 32u;
    let first = bit0 / seg.bits;
    let end = min(seg.len, (bit0 + 32u + seg.bits - 1u) / seg.bits);
    var word = 0u;
    for (var c = first; c < end; c++) {
        let code = code_of(seg, c);
        let pos = i32(c * seg.bits) - i32(bit0);
        if (pos >= 0) {
            word |= code << u32(pos);
        } else {
            word |= code >> u32(-pos);
        }
    }
    return word;
}

// Words in a segment's stream.
fn packed_words(seg: AffineSegment) -> u32 {
    return (seg.len * seg.bits + 31u) / 32u;
}
