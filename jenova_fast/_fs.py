"""Crash-safe writes shared by every package: temp file beside the target, fsync, rename, fsync the directory.

Light on purpose (no numpy, no numba): prepare, cpa and finetune all import it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_bytes_via(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temp file beside `path`, then atomically rename it over `path`; on any error
    (Ctrl-C included) the temp file is removed and `path` is as it was."""
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
