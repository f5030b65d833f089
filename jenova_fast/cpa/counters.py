"""Bounded counters (count-min sketch + top-k heavy hitters) and the switch between kernels and twins."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jenova_fast._implementation import pure_requested
from jenova_fast.cpa import jit_cache, kernels_py, unicode_tables
from jenova_fast.cpa.config import QUERY_BATCH
from jenova_fast.cpa.kernels import (
    COUNT,
    DF,
    DF_ERR,
    DOCS,
    ERR,
    META_SIZE,
    REP_END,
    REP_START,
    SESS,
    SESSION_ID,
    SLOT_FIELDS,
    TOTAL,
    USED,
)


class Counted(NamedTuple):
    """One heavy hitter: the true count lies in [count - err, count]; err == 0 means exact."""

    text: str
    count: int  # type: ignore[assignment]  # the field shadows tuple.count, as it has since the first release
    err: int


@dataclass(frozen=True)
class Pattern:
    """A tracked n-gram with its document frequency: the true count lies in [count - err, count], the
    true number of queries holding it in [df - df_err, df]; sessions it was seen in while tracked (a
    lower bound)."""

    text: str
    count: int
    err: int
    df: int
    df_err: int
    sessions: int


class HeavyHitters:
    """Count-min sketch (conservative update) for every item, top-k for the heaviest.

    While the top-k has never turned an item away, every count in it is exact (err == 0). After that, a
    newcomer enters with its sketch estimate as an upper bound and its possible overcount in `err`.
    A tracked item also counts the documents that hold it (once per document; `df` with its own bound
    `df_err`) and the sessions it was seen in while tracked.
    """

    ARRAYS = ("sketch", "hashes", "slots", "keys", "heap", "meta")

    def __init__(self, k: int, depth: int, width: int) -> None:
        if width & (width - 1) or k < 1:
            raise ValueError("sketch width must be a power of two and k positive")
        self.sketch = np.zeros((depth, width), dtype=np.uint32)
        self.hashes = np.zeros(k, dtype=np.uint64)
        self.slots = _aligned_zeros(k, SLOT_FIELDS)
        self.keys = np.zeros(k, dtype=np.int64)  # the lazy heap's keys (a count, possibly stale)
        self.heap = np.zeros(k, dtype=np.int64)
        self.meta = np.zeros(META_SIZE, dtype=np.int64)
        self.texts: list[str] = [""] * k
        self._index: np.ndarray | None = None
        self._py_index: dict[int, int] | None = None

    @property
    def used(self) -> int:
        return int(self.meta[USED])

    @property
    def total(self) -> int:
        return int(self.meta[TOTAL])

    @property
    def docs(self) -> int:
        """Documents counted (for query n-grams: queries, a NUL inside one splitting it)."""
        return int(self.meta[DOCS])

    def native_index(self) -> np.ndarray:
        """Open-addressing hash -> slot table for the kernels, rebuilt after a load or a pure-twin run."""
        self._py_index = None
        if self._index is None:
            size = 1 << max(4, (2 * self.hashes.size - 1).bit_length())
            index = np.full(size, -1, dtype=np.int64)
            mask = size - 1
            for s in range(self.used):
                i = int(self.hashes[s]) & mask
                while index[i] >= 0:
                    i = (i + 1) & mask
                index[i] = s
            self._index = index
        return self._index

    @property
    def py_index(self) -> dict[int, int]:
        self._index = None
        if self._py_index is None:
            self._py_index = {int(h): s for s, h in enumerate(self.hashes[: self.used])}
        return self._py_index

    def top(self, n: int | None = None) -> list[Counted]:
        rows = [Counted(self.texts[s], int(self.slots[s, COUNT]), int(self.slots[s, ERR])) for s in range(self.used)]
        rows.sort(key=lambda c: (-c.count, c.text))
        return rows if n is None else rows[:n]

    def patterns(self) -> list[Pattern]:
        """Every tracked entry with its document frequency and sessions, in slot order."""
        rows = self.slots[: self.used].tolist()
        return [Pattern(self.texts[s], r[COUNT], r[ERR], r[DF], r[DF_ERR], r[SESS]) for s, r in enumerate(rows)]

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{name}": getattr(self, name) for name in self.ARRAYS}
        out.update(pack_strings(f"{prefix}.texts", self.texts))
        return out

    @classmethod
    def from_arrays(cls, prefix: str, z) -> HeavyHitters:
        sketch, hashes = z[f"{prefix}.sketch"], z[f"{prefix}.hashes"]
        self = cls(hashes.size, *sketch.shape)
        for name in cls.ARRAYS:
            arr = z[f"{prefix}.{name}"]
            want = getattr(self, name)
            if arr.shape != want.shape or arr.dtype != want.dtype:
                raise ValueError(f"array {prefix}.{name} has shape {arr.shape} {arr.dtype}, expected "
                                 f"{want.shape} {want.dtype}")
            if name == "slots":
                self.slots[...] = arr  # into the 64-byte-aligned table
            else:
                setattr(self, name, np.ascontiguousarray(arr))
        texts = unpack_strings(f"{prefix}.texts", z)
        if len(texts) != hashes.size or not 0 <= self.used <= hashes.size:
            raise ValueError(f"{prefix}: {len(texts)} texts for {hashes.size} slots, {self.used} used")
        self.texts = texts
        return self


def _aligned_zeros(k: int, fields: int) -> np.ndarray:
    """int64[k, fields] zeros starting on a 64-byte boundary: with 8 fields a slot is one cache line."""
    raw = np.zeros(k * fields + 8, dtype=np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip: skip + k * fields].reshape(k, fields)


def pack_strings(name: str, strings: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as one UTF-8 blob plus end offsets: loadable with allow_pickle=False."""
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64) if encoded else np.zeros(0, np.int64)
    return {f"{name}.blob": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{name}.ends": ends}


def unpack_strings(name: str, z) -> list[str]:
    blob = z[f"{name}.blob"].tobytes()
    ends = z[f"{name}.ends"].tolist()
    if ends and (ends[-1] != len(blob) or any(b < a for a, b in zip([0, *ends], ends, strict=False))):
        raise ValueError(f"string table {name} is inconsistent")
    starts = [0, *ends[:-1]] if ends else []
    return [blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends, strict=True)]


_ASCII_WORD = re.compile(r"[a-z0-9_]+")


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch


def _utf8(batch: Sequence[str]) -> np.ndarray:
    return np.frombuffer("\x00".join(batch).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def _sessions_of(sessions: np.ndarray | int, n: int) -> np.ndarray:
    out = np.full(n, sessions, np.int64) if isinstance(sessions, int) else np.asarray(sessions, np.int64)
    if out.shape != (n,):
        raise ValueError(f"{out.shape[0]} session ids for {n} queries")
    return out


def count_queries(hh: HeavyHitters, texts: Sequence[str], state_dir: Path | None = None,
                  sessions: np.ndarray | int | None = None) -> int:
    """Count word unigrams and bigrams of each query, each query's n-grams once more in its document
    frequency; returns the number of words. `sessions`: each query's session id (one for all, default the
    current session, meta[SESSION_ID]).

    Two cores at once: two helper threads encode and tokenize batches k+1 and k+2 while this thread counts
    batch k. Counting stays in order, so the counts are exactly the sequential ones."""
    session_ids = _sessions_of(int(hh.meta[SESSION_ID]) if sessions is None else sessions, len(texts))
    if pure_requested():
        return kernels_py.count_queries(hh, texts, session_ids.tolist())
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
        batch_sessions = session_ids[k * QUERY_BATCH: k * QUERY_BATCH + len(batch)]
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
    if pure_requested() or not keys:
        return np.array([kernels_py.hash_bytes(k.encode("utf-8", "surrogatepass")) for k in keys],
                        dtype=np.uint64)
    buf = _utf8(keys)
    out = np.empty(len(keys), dtype=np.uint64)
    spans = np.empty((2, len(keys)), dtype=np.int64)
    n = jit_cache.ensure("hash_segments", state_dir)(buf, out, spans[0], spans[1])
    if n != len(keys):
        raise ValueError("a key contains NUL")
    return out


def pair_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """kernels.pair_hash over arrays (uint64 wraps like the kernel)."""
    if pure_requested():
        return np.array([kernels_py.pair_hash(int(x), int(y)) for x, y in zip(a, b, strict=True)],
                        dtype=np.uint64)
    z = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ b.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def count_items(hh: HeavyHitters, hashes: np.ndarray, texts: Sequence[str], state_dir: Path | None = None) -> None:
    """One occurrence per (hash, text), in order; each its own document."""
    if pure_requested():
        kernels_py.count_items(hh, hashes.tolist(), texts)
        return
    if not len(texts):
        return
    hh.slots[:, REP_START].fill(-1)
    order = np.arange(len(texts), dtype=np.int64)
    jit_cache.ensure("count_hashes", state_dir)(
        np.ascontiguousarray(hashes, dtype=np.uint64), order, order, order + 1, np.zeros(len(texts), np.int64),
        hh.sketch, hh.hashes, hh.slots, hh.keys, hh.heap, hh.native_index(), hh.meta)
    for s in np.flatnonzero(hh.slots[:, REP_START] >= 0).tolist():
        hh.texts[s] = texts[hh.slots[s, REP_START]]
