"""The one switch between prepare's native kernels and their pure-Python twins, and the interfaces both keep.

mypy checks each pair against its Protocol (the native side through its .pyi stub), so a stub cannot drift
from its twin. The choice is made at each call from JENOVA_FAST_PURE, so one process can run both (the
differential tests do); without it the native build is required, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Protocol

from jenova_fast._implementation import pure_requested
from jenova_fast.prepare.report import ScanStats, Skip, SkipReason

Metadata = tuple[str, str, str | None] | None


class Pipeline(Protocol):
    """walk -> read -> parse -> write: `_pipeline` (C++ and Cython) and `_pipeline_py` (the reference)."""

    def run(self, roots: list[str], *, max_bytes: int, follow_symlinks: bool, threads: int,
            write: Callable[[bytes], object] | int, on_skip: Callable[[Skip], object],
            progress: Callable[[int, int, int | None], object], count_total: bool = False,
            topics: list[str] | None = None, fmt: str = "messages", metadata: bool = False,
            eval_fraction: float = 0.0, write_eval: Callable[[bytes], object] | None = None,
            fields: list[tuple[str, str, str]] | None = None,
            drop: Collection[str] | None = None) -> tuple[int, ScanStats]: ...

    def format_insight(self, topic: str, content: str, user: str, fmt: str = "messages",
                       metadata: Metadata = None) -> bytes: ...

    def format_chat(self, user_text: str, assistant_text: str, fmt: str = "messages",
                    metadata: Metadata = None) -> bytes: ...

    def parse_insight(self, data: bytes) -> tuple[str, str, str, str | None, str | None] | SkipReason: ...

    def held_out(self, identity: bytes, fraction: float) -> bool: ...

    def count_files(self, roots: list[str], follow_symlinks: bool) -> int: ...


class MinHash(Protocol):
    """--dedup near's signatures and LSH band keys: `minhash` (Numba) and `minhash_py` (the reference)."""

    def signatures(self, data: bytes, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

    def band_keys(self, sig: np.ndarray, bands: int, rows: int) -> np.ndarray: ...


def pipeline() -> tuple[Pipeline, str]:
    """The pipeline in use and its name: the native one unless JENOVA_FAST_PURE=1."""
    if pure_requested():
        from jenova_fast.prepare import _pipeline_py

        return _pipeline_py, "pure"
    try:
        from jenova_fast.prepare import _pipeline
    except ImportError as exc:
        raise ImportError(
            f"jenova_fast's native extension is not built ({exc}). Reinstall with `pip install .` on a "
            "machine with g++, or set JENOVA_FAST_PURE=1 to use the pure-Python implementation."
        ) from exc
    return _pipeline, "native"


def minhash() -> MinHash:
    if pure_requested():
        from jenova_fast.prepare import minhash_py

        return minhash_py
    from jenova_fast.prepare import minhash as native

    return native


if TYPE_CHECKING:  # every twin keeps its interface (and numpy, for the annotations, costs no start-up)
    import numpy as np

    from jenova_fast.prepare import _pipeline, _pipeline_py, minhash_py
    from jenova_fast.prepare import minhash as _minhash

    _pipelines: tuple[Pipeline, Pipeline] = (_pipeline, _pipeline_py)
    _minhashes: tuple[MinHash, MinHash] = (_minhash, minhash_py)
