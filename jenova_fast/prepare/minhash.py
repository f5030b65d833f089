"""Numba kernels for `--dedup near`: MinHash signatures over word 5-gram shingles and LSH band keys.

Twins of `minhash_py.py`, which states the hashing; results are identical, bit for bit. Compiled on first
use (cached beside this module); the GIL is released inside, and signatures run on every core.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from jenova_fast.prepare.minhash_py import NUM_PERM, SHINGLE_WORDS, permutations

__all__ = ["NUM_PERM", "band_keys", "permutations", "signatures"]

_U = np.uint64
_OFFSET = _U(0xCBF29CE484222325)
_PRIME = _U(0x100000001B3)
_LOW32 = _U(0xFFFFFFFF)
_S32 = _U(32)
_SPACE = np.uint8(32)


@njit(nogil=True, cache=True, fastmath=False, boundscheck=False, parallel=True)
def _signatures(data, starts, a, b, out):  # pragma: no cover - compiled
    k = a.shape[0]
    for i in prange(starts.shape[0] - 1):  # texts are independent: one per thread at a time
        lo, hi = starts[i], starts[i + 1]
        # word hashes of data[lo:hi], split on single spaces (at most one word per byte, plus one)
        words = np.empty(hi - lo + 1, dtype=np.uint64)
        n = 0
        if hi > lo:
            h = _OFFSET
            for p in range(lo, hi + 1):
                if p == hi or data[p] == _SPACE:
                    words[n] = h
                    n += 1
                    h = _OFFSET
                else:
                    h = (h ^ _U(data[p])) * _PRIME
        row = out[i]
        for j in range(k):
            row[j] = np.uint32(0xFFFFFFFF)
        span = min(SHINGLE_WORDS, n)
        for start in range(max(n - SHINGLE_WORDS + 1, 1)):
            h = _OFFSET
            for w in range(start, start + span):
                h = (h ^ words[w]) * _PRIME
            x = (h ^ (h >> _S32)) & _LOW32
            for j in range(k):
                v = np.uint32((a[j] * x + b[j]) >> _S32)
                if v < row[j]:
                    row[j] = v


@njit(nogil=True, cache=True, fastmath=False, boundscheck=False)
def _band_keys(sig, bands, rows, keys):  # pragma: no cover - compiled
    for i in range(sig.shape[0]):
        for band in range(bands):
            h = _OFFSET
            for j in range(band * rows, (band + 1) * rows):
                h = (h ^ _U(sig[i, j])) * _PRIME
            keys[i, band] = h


def signatures(data: bytes, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signature [n, len(a)] (uint32) of each text data[starts[i]:starts[i + 1]]."""
    out = np.empty((len(starts) - 1, len(a)), dtype=np.uint32)
    _signatures(np.frombuffer(data, dtype=np.uint8), starts.astype(np.int64), a, b, out)
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] uint64: FNV-1a over each band's `rows` signature values."""
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    _band_keys(np.ascontiguousarray(sig), bands, rows, keys)
    return keys
