"""The native side of counting: the Numba kernels (kernels.py, compiled through jit_cache) over a
HeavyHitters. Its twin is counting_py.py; `_impl.counting()` picks one."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from jenova_fast.cpa import jit_cache, kernels_py, unicode_tables
from jenova_fast.cpa.config import QUERY_BATCH
from jenova_fast.cpa.counters import HeavyHitters, session_ids
from jenova_fast.cpa.kernels import REP_END, REP_START

_ASCII_WORD = re.compile(r"[a-z0-9_]+")


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch


def _utf8(batch: Sequence[str]) -> np.ndarray:
    return np.frombuffer("\x00".join(batch).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def count_queries(hh: HeavyHitters, texts: Sequence[str], state_dir: Path | None = None,
                  sessions: np.ndarray | int | None = None) -> int:
    """Count word unigrams and bigrams of each query, each query's n-grams once more in its document
    frequency; returns the number of words. `sessions`: each query's session id (one for all, default the
    current session, meta[SESSION_ID]).

    Two cores at once: two helper threads encode and tokenize batches k+1 and k+2 while this thread counts
    batch k. Counting stays in order, so the counts are exactly the sequential ones."""
    query_sessions = session_ids(hh, sessions, len(texts))
    tables = unicode_tables.tables(None if state_dir is None else Path(state_dir) / "tables")
    tokenize = jit_cache.ensure("tokenize_queries", state_dir)
    count = jit_cache.ensure("count_hashes", state_dir)

    # three sets of n-gram arrays, reused in turn (two batches tokenized ahead, one being counted): fresh
    # arrays per batch would cost more in page faults than the tokenizing
    ring: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0, np.uint64), np.empty((3, 0), np.int64))] * 3

    def tokenized(k: int, batch: list[str]) -> tuple[np.ndarray, ...]:
        buf = _utf8(batch)
        ngrams, spans = ring[k % 3]
        if ngrams.size < buf.size + 1:
            ngrams, spans = ring[k % 3] = np.empty(buf.size + 1, np.uint64), np.empty((3, buf.size + 1), np.int64)
        n, words, docs = tokenize(buf, tables.fold_off, tables.fold_cp, tables.is_word, ngrams, spans[0], spans[1],
                                  spans[2])
        batch_sessions = query_sessions[k * QUERY_BATCH: k * QUERY_BATCH + len(batch)]
        if docs != len(batch):  # a NUL inside a query: each of its parts is a document of its session
            batch_sessions = np.repeat(batch_sessions, [q.count("\x00") + 1 for q in batch])
        return buf, ngrams[:n], spans[0, :n], spans[1, :n], spans[2, :docs], batch_sessions, words

    total = 0
    batches = enumerate(_batches(texts, QUERY_BATCH))
    with ThreadPoolExecutor(2, thread_name_prefix="cpa-tokenize") as pool:
        ahead = deque(pool.submit(tokenized, *numbered) for numbered in islice(batches, 2))
        while ahead:
            buf, ngrams, starts, ends, doc_ends, doc_sessions, words = ahead.popleft().result()
            if (numbered := next(batches, None)) is not None:
                ahead.append(pool.submit(tokenized, *numbered))
            total += int(words)
            hh.slots[:, REP_START].fill(-1)
            count(ngrams, starts, ends, doc_ends, doc_sessions, hh.sketch, hh.hashes, hh.slots, hh.keys, hh.heap,
                  hh.native_index(), hh.meta)
            for s in np.flatnonzero(hh.slots[:, REP_START] >= 0).tolist():
                span = buf[hh.slots[s, REP_START]: hh.slots[s, REP_END]].tobytes()
                if span.isascii():  # same words as kernels_py.words for ASCII, without the per-character loop
                    hh.texts[s] = " ".join(_ASCII_WORD.findall(span.decode("ascii").lower()))
                else:
                    hh.texts[s] = " ".join(kernels_py.words(span.decode("utf-8", "surrogatepass")))
    return total


def item_hashes(keys: Sequence[str], state_dir: Path | None = None) -> np.ndarray:
    """Hash of each key's UTF-8 bytes (keys must not contain NUL)."""
    if not keys:
        return np.empty(0, dtype=np.uint64)
    buf = _utf8(keys)
    out = np.empty(len(keys), dtype=np.uint64)
    spans = np.empty((2, len(keys)), dtype=np.int64)
    n = jit_cache.ensure("hash_segments", state_dir)(buf, out, spans[0], spans[1])
    if n != len(keys):
        raise ValueError("a key contains NUL")
    return out


def pair_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """kernels.pair_hash over arrays (uint64 wraps like the kernel)."""
    z = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ b.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def count_items(hh: HeavyHitters, hashes: np.ndarray, texts: Sequence[str], state_dir: Path | None = None) -> None:
    """One occurrence per (hash, text), in order; each its own document."""
    if not len(texts):
        return
    hh.slots[:, REP_START].fill(-1)
    order = np.arange(len(texts), dtype=np.int64)
    jit_cache.ensure("count_hashes", state_dir)(
        np.ascontiguousarray(hashes, dtype=np.uint64), order, order, order + 1, np.zeros(len(texts), np.int64),
        hh.sketch, hh.hashes, hh.slots, hh.keys, hh.heap, hh.native_index(), hh.meta)
    for s in np.flatnonzero(hh.slots[:, REP_START] >= 0).tolist():
        hh.texts[s] = texts[hh.slots[s, REP_START]]
