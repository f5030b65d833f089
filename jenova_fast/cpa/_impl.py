"""The one switch between the CPA's native counting and its pure twin, and the interface both keep.

mypy checks both modules against `Counting`, so neither can drift from it. The choice is made at each
call from JENOVA_FAST_PURE, so one process can run both (the differential tests do).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from jenova_fast._implementation import pure_requested
from jenova_fast.cpa.counters import HeavyHitters


class Counting(Protocol):
    def count_queries(self, hh: HeavyHitters, texts: Sequence[str], state_dir: Path | None = None,
                      sessions: np.ndarray | int | None = None) -> int:
        """Count word unigrams and bigrams of each query, and each query's n-grams once in their document
        frequency; returns the number of words. `sessions`: each query's session id (one for all,
        default the current session)."""

    def item_hashes(self, keys: Sequence[str], state_dir: Path | None = None) -> np.ndarray:
        """The hash of each key's UTF-8 bytes (keys must not contain NUL)."""

    def pair_hashes(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """kernels.pair_hash over arrays (uint64 wraps like the kernel)."""

    def count_items(self, hh: HeavyHitters, hashes: np.ndarray, texts: Sequence[str],
                    state_dir: Path | None = None) -> None:
        """One occurrence per (hash, text), in order; each its own document."""


def counting() -> Counting:
    if pure_requested():
        from jenova_fast.cpa import counting_py

        return counting_py
    from jenova_fast.cpa import counting as native

    return native


if TYPE_CHECKING:  # both twins keep the interface
    from jenova_fast.cpa import counting as _native
    from jenova_fast.cpa import counting_py as _pure

    _checked: tuple[Counting, Counting] = (_native, _pure)
