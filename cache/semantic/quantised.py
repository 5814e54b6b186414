"""Int8 codes of embeddings: what the semantic index keeps (384 bytes a vector, not 1,536).

A code is round(x * SCALE) per component, clipped to ±127. all-MiniLM-L6-v2's unit vectors
have components within ±0.32 on the evaluation data, so SCALE = 320 keeps every one of them
unclipped at a step of 1/320. FAISS's QT_8bit_direct_signed stores these codes as they are
and, with METRIC_INNER_PRODUCT, computes the integer product of the query's codes and the
stored ones. The index scores a pair by the cosine of their codes, product / (|a| |b|): the
rounding leaves a code's length off by ~0.2%, and product / SCALE² alone scored pairs a
little high (on the evaluation data it served 2 more wrong GPTCache answers than float32
vectors; the cosine of the codes served none: docs/PERFORMANCE.md). The remaining error is
about 0.001 in cosine, against 0.02 of tie margin and thresholds set to the third decimal.
"""

import faiss
import numpy as np

SCALE = 320.0
COSINE_PER_UNIT = 1.0 / (SCALE * SCALE)
FAISS_TYPE = faiss.ScalarQuantizer.QT_8bit_direct_signed


def codes(vectors: np.ndarray) -> np.ndarray:
    """int8 codes of float vectors (one vector or a (n, dim) array; same shape back)."""
    return np.clip(np.rint(vectors * SCALE), -127, 127).astype(np.int8)


def float_codes(vectors: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The codes of (n, dim) float vectors as float32 whole numbers, written into `out`
    (what FAISS is given; no int8 copy in between)."""
    np.multiply(vectors, SCALE, out=out)
    np.rint(out, out=out)
    return np.clip(out, -127, 127, out=out)


def codes_of_float32_bytes(raw: bytes, dim: int) -> np.ndarray:
    """(n, dim) int8 codes of n float32 vectors stored back to back (as L3 stores them)."""
    return codes(np.frombuffer(raw, dtype=np.float32).reshape(-1, dim))


def to_faiss_bytes(codes: np.ndarray) -> np.ndarray:
    """The bytes QT_8bit_direct_signed stores for int8 codes (code + 128)."""
    return codes.view(np.uint8) ^ np.uint8(0x80)


def from_faiss_bytes(stored: np.ndarray) -> np.ndarray:
    return (stored ^ np.uint8(0x80)).view(np.int8)


def norms(codes: np.ndarray) -> np.ndarray:
    """Lengths of codes ((n, dim) -> (n,)), in code units."""
    as_floats = np.asarray(codes, dtype=np.float32).reshape(-1, codes.shape[-1])
    found: np.ndarray = np.linalg.norm(as_floats, axis=1)
    return found


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine the index computes for two float vectors: that of their codes."""
    ca, cb = codes(a).astype(np.float32), codes(b).astype(np.float32)
    return float(ca @ cb / (np.linalg.norm(ca) * np.linalg.norm(cb)))
