#!/usr/bin/env python3
"""Writes tests/data/gguf_vectors.json: inputs and the reference `gguf` package's block bytes
for F16, Q8_0 and Q4_0, so wgquant's GGUF export is tested for byte identity without Python.

    pip install gguf==0.19.0 numpy && python3 scripts/gguf_vectors.py
"""
import json
import pathlib

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants


def cases():
    rng = np.random.default_rng(20261122)
    yield "normal", rng.standard_normal((4, 64)).astype(np.float32)
    yield "laplace", rng.laplace(size=(3, 96)).astype(np.float32)
    # Every block of a kind that stresses the rounding and the scale: zeros, ties, one huge
    # value, negative maxima, tiny and huge magnitudes.
    b = np.zeros((8, 32), np.float32)
    b[1] = np.arange(32) - 16  # exact ties for Q8_0's round half away from zero
    b[2, 5] = 1e30
    b[3] = -np.linspace(0.0, 7.0, 32)  # negative maximum magnitude (Q4_0 keeps its sign)
    b[4] = 1e-30 * (np.arange(32) - 15.5)
    b[5] = np.float32(0.5) * (np.arange(32) % 3 - 1)
    b[6] = np.where(np.arange(32) % 2 == 0, 3.0, -3.0)  # equal |max| at several places
    b[7] = rng.standard_normal(32) * 1e4
    yield "edges", b.reshape(2, 128)


out = {"gguf_version": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0", "cases": []}
for name, x in cases():
    entry = {"name": name, "shape": list(x.shape), "values_f32_hex": x.astype("<f4").tobytes().hex()}
    for qtype, key in [(T.F16, "f16"), (T.Q8_0, "q8_0"), (T.Q4_0, "q4_0")]:
        entry[key] = np.asarray(quants.quantize(x, qtype)).tobytes().hex()
    out["cases"].append(entry)

path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "gguf_vectors.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
