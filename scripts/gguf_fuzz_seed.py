#!/usr/bin/env python3
"""Writes tests/fuzz_corpus/gguf/all_value_types.gguf: a GGUF v3 file with one metadata pair of
each of the 13 value types, an array of arrays, a custom general.alignment of 64 and two
tensors (Q4_K and F32). Stdlib only; the layout follows ggml's gguf.cpp."""
import struct, sys

def s(b): return struct.pack('<Q', len(b)) + b
def kv(key, ty, payload): return s(key.encode()) + struct.pack('<I', ty) + payload
pairs = [
    kv('general.architecture', 8, s(b'llama')),
    kv('t.u8', 0, struct.pack('<B', 7)), kv('t.i8', 1, struct.pack('<b', -7)),
    kv('t.u16', 2, struct.pack('<H', 700)), kv('t.i16', 3, struct.pack('<h', -700)),
    kv('t.u32', 4, struct.pack('<I', 70000)), kv('t.i32', 5, struct.pack('<i', -70000)),
    kv('t.f32', 6, struct.pack('<f', 1.5)), kv('t.bool', 7, b'\x01'),
    kv('t.u64', 10, struct.pack('<Q', 1 << 40)), kv('t.i64', 11, struct.pack('<q', -(1 << 40))),
    kv('t.f64', 12, struct.pack('<d', -2.25)),
    kv('t.strings', 9, struct.pack('<IQ', 8, 2) + s(b'a') + s(b'bc')),
    kv('t.nested', 9, struct.pack('<IQ', 9, 2) + struct.pack('<IQ', 4, 1) + struct.pack('<I', 1)
       + struct.pack('<IQ', 6, 2) + struct.pack('<ff', 0.5, -0.5)),
    kv('general.alignment', 4, struct.pack('<I', 64)),
]
tensors = [(b'blk.0.ffn_down.weight', [256, 2], 12, 0), (b'output_norm.weight', [256], 0, 320)]
out = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(pairs)) + b''.join(pairs)
for name, dims, ty, off in tensors:  # dims innermost first
    out += s(name) + struct.pack('<I', len(dims)) + b''.join(struct.pack('<Q', d) for d in dims)
    out += struct.pack('<IQ', ty, off)
out += b'\0' * (-len(out) % 64)
out += bytes(range(256)) * 2 + b'\1' * 32 + b'\0' * 32 + b'\2' * 1024  # Q4_K: 2*144; F32: 1024
open(sys.argv[1] if len(sys.argv) > 1 else 'tests/fuzz_corpus/gguf/all_value_types.gguf', 'wb').write(out)
