"""Pure twin of `minhash.py`: word 5-gram shingles, MinHash signatures and LSH band keys, obviously.

A text (already normalized: NFKC, case folded, single spaces) is split on spaces; each word is hashed with
FNV-1a 64; each run of SHINGLE_WORDS consecutive words (all of them when fewer) folds its word hashes with
FNV-1a's step into one 64-bit value, kept as 32 bits (high xor low). Permutation k maps a shingle x to
((A[k] * x + B[k]) mod 2^64) >> 32 (multiply-add-shift, a 2-universal family); the signature is each
permutation's minimum over the text's shingles.
"""

from __future__ import annotations

import numpy as np

SHINGLE_WORDS = 5
NUM_PERM = 128
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def permutations(num_perm: int = NUM_PERM, seed: int = 0x6A656E6F7661) -> tuple[np.ndarray, np.ndarray]:
    """(A, B): odd 64-bit multipliers and 64-bit offsets from splitmix64, fixed forever by the seed."""
    state, a, b = seed, [], []
    for _ in range(num_perm):
        state, x = _splitmix64(state)
        state, y = _splitmix64(state)
        a.append(x | 1)
        b.append(y)
    return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)


def word_hash(word: bytes) -> int:
    h = FNV_OFFSET
    for byte in word:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def shingles(text: bytes, cache: dict[bytes, int] | None = None) -> list[int]:
    """The 32-bit shingle hashes of a normalized text, in order (repeats kept)."""
    cache = {} if cache is None else cache
    words = text.split(b" ") if text else []
    hashes = []
    for word in words:
        h = cache.get(word)
        if h is None:
            h = cache[word] = word_hash(word)
        hashes.append(h)
    span = min(SHINGLE_WORDS, len(hashes))
    out = []
    for start in range(max(len(hashes) - SHINGLE_WORDS + 1, 1)):
        h = FNV_OFFSET
        for w in hashes[start : start + span]:
            h = ((h ^ w) * FNV_PRIME) & MASK64
        out.append((h ^ (h >> 32)) & 0xFFFFFFFF)
    return out


def signatures(data: bytes, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signature [n, len(a)] (uint32) of each text data[starts[i]:starts[i + 1]]."""
    n = len(starts) - 1
    out = np.empty((n, len(a)), dtype=np.uint32)
    cache: dict[bytes, int] = {}
    for i in range(n):
        x = np.array(shingles(data[starts[i] : starts[i + 1]], cache), dtype=np.uint64)
        with np.errstate(over="ignore"):
            values = (a[None, :] * x[:, None] + b[None, :]) >> np.uint64(32)  # mod 2^64 by wrapping
        out[i] = values.min(axis=0)
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] uint64: FNV-1a over each band's `rows` signature values (as 32-bit words)."""
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for i in range(n):
        for band in range(bands):
            h = FNV_OFFSET
            for value in sig[i, band * rows : (band + 1) * rows]:
                h = ((h ^ int(value)) * FNV_PRIME) & MASK64
            keys[i, band] = h
    return keys
