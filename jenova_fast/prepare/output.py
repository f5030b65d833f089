"""Atomic output: a temporary file beside the target, fsynced, renamed into place only when complete."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jenova_fast import _fs


class OutputError(OSError):
    """The output cannot be written; the message names the path and the fix."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno N]"


# Errors of the output file itself (not of the store being read) while it is written.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def write_all(fd: int, data: bytes) -> None:
    """`os.write` may write less than asked (a full disk, a signal): go on until all of it is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# What each option's message suggests when it names a directory.
_EXAMPLE_NAMES = {"--output": "train.jsonl", "--report": "report.json"}


@contextlib.contextmanager
def atomic_output(target: Path, option: str = "--output") -> Iterator[BinaryIO]:
    """Yield a binary file; on success it replaces `target`, on any failure `target` is left untouched.
    `option` is what a user changes to write elsewhere: OutputError messages name it. A second live run
    writing the same `target` is refused (BusyError); dead runs' temp files beside it are removed."""
    target = Path(target)
    _check_place(target, option)
    try:
        with _fs.atomic_write(target, exclusive=option) as f:
            yield f
    except _fs.BusyError as exc:
        raise OutputError(exc.errno, str(exc)) from exc
    except IsADirectoryError as exc:  # it became one while we wrote
        raise _is_a_directory(target, option) from exc
    except OSError as exc:
        if not isinstance(exc, (OutputError, _fs.BusyError)) and exc.errno in _WRITE_ERRNOS:
            raise OutputError(
                exc.errno, f"cannot write {target}: {exc.strerror}; free space there or choose another {option}"
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise OutputError(exc.errno, f"cannot write {target}: {exc.strerror}; choose a writable place with "
                                         f"{option}") from exc
        raise


def check_writable(target: Path, option: str = "--output") -> None:
    """Raise the OutputError that `atomic_output(target)` would raise on entry, before any work is done
    (its directory is created, as atomic_output would): e.g. `--report` is checked before the output is
    replaced."""
    _check_place(Path(target), option)
    with _fs.temporary(target):
        pass


def _check_place(target: Path, option: str) -> None:
    """Create `target`'s directory and check a temp file can be made there, or raise an OutputError that
    says why and the fix."""
    directory = target.parent if str(target.parent) else Path(".")
    if os.path.isdir(target) and not os.path.islink(target):  # os.replace would fail only after the work
        raise _is_a_directory(target, option)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        why = _in_the_way(directory, option) or f"{exc.strerror}; choose a writable place with {option}"
        raise OutputError(exc.errno, f"cannot write {target}: {why}") from exc


def _is_a_directory(target: Path, option: str) -> OutputError:
    example = target / _EXAMPLE_NAMES.get(option, "train.jsonl")
    return OutputError(
        errno.EISDIR, f"cannot write {target}: it is a directory; give {option} a file's path, e.g. {example}"
    )


def _in_the_way(directory: Path, option: str) -> str | None:
    """Why `directory` cannot be created, and the fix, when the path itself is at fault: the first of it
    and its parents that exists is a dangling symlink or not a directory."""
    for path in (directory, *directory.parents):
        if not os.path.lexists(path):
            continue
        if os.path.islink(path) and not os.path.exists(path):
            try:
                link = os.readlink(path)
            except OSError:  # replaced meanwhile
                return None
            return (
                f"{path} is a symlink to {link}, which does not exist; create the directory "
                f"{path.parent / link} or remove the link, or choose another {option}"
            )
        if not os.path.isdir(path):
            return f"{path} is not a directory; choose another {option}"
        return None
    return None
