"""Crash-safe writes: temp file beside the target, fsync, rename, fsync the directory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jenova_fast._fs import write_bytes_via

__all__ = ["write_bytes_via", "write_npz"]


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # the stub types **kwds as allow_pickle's bool; np.savez never pickles plain numeric arrays
    write_bytes_via(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
