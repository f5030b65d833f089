"""Bounded counters: a count-min sketch and top-k heavy hitters with document frequencies, as arrays that
the Numba kernels and their pure twins both update (counting.py, counting_py.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from jenova_fast.cpa.kernels import (
    COUNT,
    DF,
    DF_ERR,
    DOCS,
    ERR,
    LAST_DOC,
    META_SIZE,
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
    lower bound); the last document that held it (-1: unknown, a state migrated from schema 2)."""

    text: str
    count: int
    err: int
    df: int
    df_err: int
    sessions: int
    last_doc: int


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
        return [Pattern(self.texts[s], r[COUNT], r[ERR], r[DF], r[DF_ERR], r[SESS], r[LAST_DOC])
                for s, r in enumerate(rows)]

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


def session_ids(hh: HeavyHitters, sessions: np.ndarray | int | None, n: int) -> np.ndarray:
    """Each of `n` queries' session id: `sessions` (one id for all, or one each), default the current
    session, meta[SESSION_ID]."""
    sessions = int(hh.meta[SESSION_ID]) if sessions is None else sessions
    out = np.full(n, sessions, np.int64) if isinstance(sessions, int) else np.asarray(sessions, np.int64)
    if out.shape != (n,):
        raise ValueError(f"{out.shape[0]} session ids for {n} queries")
    return out
