"""Pure-Python twins of `kernels.py`: the same counts from `str.casefold`, per-character word tests,
Python integers and a dict index. Slow and obviously correct; `JENOVA_FAST_PURE=1` selects them.

Three things make them 2.2x faster on a big history (docs/reliability.md) without changing a rule: words are
cut only where `\\W` matches and `is_word_char` refuses (every `\\w` character is a word character,
tests/cpa/test_counting.py checks all of them); a word's and a pair's hash are remembered (bounded LRU
caches of pure functions); and the counters' arrays are read and written through memoryviews, as Python
ints, not numpy scalars.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

from jenova_fast.cpa.kernels import (
    COUNT,
    DF,
    DF_ERR,
    DOCS,
    ERR,
    LAST_DOC,
    OVERFLOWED,
    SESS,
    SESSION_ID,
    SESSION_START,
    TOTAL,
    USED,
)

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_WORD_CATEGORIES = frozenset(("Mn", "Mc", "Me", "Pc"))


def is_word_char(ch: str) -> bool:
    """Unicode word characters as in UTS #18 `\\w`: letters, digits, numbers, marks, connector punctuation."""
    return ch.isalnum() or unicodedata.category(ch) in _WORD_CATEGORIES


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def pair_hash(a: int, b: int) -> int:
    return mix64(((a * 0x9E3779B97F4A7C15) & MASK64) ^ b)


def hash_bytes(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return mix64(h)


@functools.lru_cache(maxsize=1 << 16)
def word_hash(word: str) -> int:
    return hash_bytes(word.encode("utf-8", "surrogatepass"))


pair_hash_cached = functools.lru_cache(maxsize=1 << 16)(pair_hash)

# Python's `\w` is `isalnum()` and `_`: every such character is a word character, so a word can only end
# at a character `\W` matches, and there only if `is_word_char` refuses it (marks and connectors it keeps).
_NOT_W = re.compile(r"\W")


def words(text: str) -> list[str]:
    """Words of one query segment (no NUL inside), case-folded: the maximal runs of `is_word_char`."""
    folded = text.casefold()
    out: list[str] = []
    start = 0
    for m in _NOT_W.finditer(folded):
        end = m.start()
        if folded[end] >= "\x80" and is_word_char(folded[end]):  # no ASCII \W is a mark or a connector
            continue
        if end > start:
            out.append(folded[start:end])
        start = end + 1
    if start < len(folded):
        out.append(folded[start:])
    return out


def _sketch_add(sketch: np.ndarray, h: int) -> int:
    depth, width = sketch.shape
    h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
    cols = [((h1 + r * h2) & MASK64) & (width - 1) for r in range(depth)]
    est = min(int(sketch[r, c]) for r, c in enumerate(cols)) + 1
    for r, c in enumerate(cols):
        if int(sketch[r, c]) < est:
            sketch[r, c] = est
    return est


def _sift_up(heap: np.ndarray, keys: np.ndarray, pos: int) -> None:
    s = int(heap[pos])
    c = int(keys[s])
    while pos > 0:
        parent = (pos - 1) >> 1
        p = int(heap[parent])
        if keys[p] <= c:
            break
        heap[pos] = p
        pos = parent
    heap[pos] = s


def _sift_down(heap: np.ndarray, keys: np.ndarray, pos: int, n: int) -> None:
    s = int(heap[pos])
    c = int(keys[s])
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and keys[heap[child + 1]] < keys[heap[child]]:
            child += 1
        q = int(heap[child])
        if keys[q] >= c:
            break
        heap[pos] = q
        pos = child
    heap[pos] = s


def _true_min_slot(heap: np.ndarray, keys: np.ndarray, slots: np.ndarray, n: int) -> int:
    while True:
        s = int(heap[0])
        if keys[s] == slots[s, COUNT]:
            return s
        keys[s] = slots[s, COUNT]
        _sift_down(heap, keys, 0, n)


def _sketch_raise(sketch: np.ndarray, h: int, value: int) -> None:
    depth, width = sketch.shape
    h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
    for r in range(depth):
        c = ((h1 + r * h2) & MASK64) & (width - 1)
        if int(sketch[r, c]) < value:
            sketch[r, c] = value


def topk_add(hh, h: int, text: str, doc: int, session_start: int) -> None:
    """One occurrence, in document `doc` of the session that began at document `session_start`, into a
    `HeavyHitters` (sketch + top-k), exactly as kernels.count_hashes."""
    hh.meta[TOTAL] += 1
    s = hh.py_index.get(h)
    if s is not None:  # tracked: the common case, touching only its slot
        slots = hh.slots
        slots[s, COUNT] += 1
        last = slots[s, LAST_DOC]
        if last != doc:
            slots[s, LAST_DOC] = doc
            slots[s, DF] += 1
            if last < session_start:
                slots[s, SESS] += 1
        return
    sketch, hashes, slots, keys, heap, meta = hh.sketch, hh.hashes, hh.slots, hh.keys, hh.heap, hh.meta
    index = hh.py_index
    est = _sketch_add(sketch, h)
    n = int(meta[USED])
    if n < len(hashes):
        s = n
        meta[USED] = n + 1
        if meta[OVERFLOWED]:
            slots[s, COUNT], slots[s, ERR] = est, est - 1
        else:
            slots[s, COUNT], slots[s, ERR] = 1, 0
        keys[s] = slots[s, COUNT]
        heap[n] = s
        _sift_up(heap, keys, n)
    else:
        meta[OVERFLOWED] = 1
        if est <= keys[heap[0]]:
            return
        s = _true_min_slot(heap, keys, slots, n)
        if est <= slots[s, COUNT]:
            return
        _sketch_raise(sketch, int(hashes[s]), int(slots[s, COUNT]))
        del index[int(hashes[s])]
        slots[s, COUNT], slots[s, ERR], keys[s] = est, est - 1, est
        _sift_down(heap, keys, 0, n)
    # DF bounded like the count: at most est - 1 earlier (untracked) documents held it
    slots[s, DF], slots[s, DF_ERR] = slots[s, COUNT], slots[s, ERR]
    slots[s, LAST_DOC], slots[s, SESS] = doc, 1
    hashes[s] = h
    index[h] = s
    hh.texts[s] = text


class _Views:
    """A HeavyHitters whose arrays are memoryviews of the same memory: elements read and written as Python
    ints, at a third of the cost of numpy scalars (paid a few times per word)."""

    def __init__(self, hh) -> None:
        self.sketch, self.hashes, self.slots = memoryview(hh.sketch), memoryview(hh.hashes), memoryview(hh.slots)
        self.keys, self.heap, self.meta = memoryview(hh.keys), memoryview(hh.heap), memoryview(hh.meta)
        self.texts, self.py_index = hh.texts, hh.py_index


def count_queries(hh, texts: Iterable[str], sessions: Iterable[int]) -> int:
    """Each NUL-separated segment of a query is one document (numbered on from meta[DOCS])."""
    n_words = 0
    hh = _Views(hh)
    meta = hh.meta
    for text, session in zip(texts, sessions, strict=True):
        for segment in text.split("\x00"):
            doc = int(meta[DOCS])
            if session != meta[SESSION_ID]:
                meta[SESSION_ID], meta[SESSION_START] = session, doc
            ws = words(segment)
            prev_h = 0
            for j, w in enumerate(ws):
                n_words += 1
                h = word_hash(w)
                topk_add(hh, h, w, doc, int(meta[SESSION_START]))
                if j:
                    topk_add(hh, pair_hash_cached(prev_h, h), f"{ws[j - 1]} {w}", doc, int(meta[SESSION_START]))
                prev_h = h
            hh.meta[DOCS] = doc + 1
    return n_words


def count_items(hh, hashes: Iterable[int], texts: Iterable[str]) -> None:
    """Each occurrence is its own document, all in session 0."""
    hh = _Views(hh)
    meta = hh.meta
    for h, text in zip(hashes, texts, strict=True):
        doc = int(meta[DOCS])
        if meta[SESSION_ID] != 0:
            meta[SESSION_ID], meta[SESSION_START] = 0, doc
        topk_add(hh, int(h), text, doc, int(meta[SESSION_START]))
        meta[DOCS] = doc + 1
