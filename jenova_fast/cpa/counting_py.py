"""The pure-Python side of counting: kernels_py.py's reference rules over a HeavyHitters, with the same
signatures as counting.py, whose results it matches exactly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jenova_fast.cpa import kernels_py
from jenova_fast.cpa.counters import HeavyHitters, session_ids


def count_queries(hh: HeavyHitters, texts: Sequence[str], state_dir: Path | None = None,
                  sessions: np.ndarray | int | None = None) -> int:
    return kernels_py.count_queries(hh, texts, session_ids(hh, sessions, len(texts)).tolist())


def item_hashes(keys: Sequence[str], state_dir: Path | None = None) -> np.ndarray:
    return np.array([kernels_py.hash_bytes(k.encode("utf-8", "surrogatepass")) for k in keys], dtype=np.uint64)


def pair_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([kernels_py.pair_hash(int(x), int(y)) for x, y in zip(a, b, strict=True)], dtype=np.uint64)


def count_items(hh: HeavyHitters, hashes: np.ndarray, texts: Sequence[str], state_dir: Path | None = None) -> None:
    kernels_py.count_items(hh, hashes.tolist(), texts)
