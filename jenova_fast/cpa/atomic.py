"""Crash-safe writes: temp file beside the target, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def write_bytes_via(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # the stub types **kwds as allow_pickle's bool; np.savez never pickles plain numeric arrays
    write_bytes_via(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
