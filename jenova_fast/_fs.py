"""Files and environment, shared by every package: crash-safe writes, the leftovers of killed writers, the
jenova home, the machine's cores, user names as path components and private folders.

Every file the project writes goes through `atomic_write` (or `temporary` for writers that need a path):
a temp file beside the target, named `.<target>.<start ns>.<pid>.jenova-tmp` and flock-ed while its
writer lives, then fsync, rename, fsync of the directory. A `kill -9` leaves the temp file behind but
not its lock, so the next write of the same target can tell it is dead and remove it (`sweep`), and a
second live writer of the same target can be told apart from a dead one. Under an entry point (`_signals`),
a Ctrl-C or SIGTERM never lands between a temp file's creation and the arming of its removal, nor inside it.

Light on purpose (no numpy, no numba): prepare, cpa and finetune all import it at start-up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import getpass
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from jenova_fast._signals import deferred, on_interrupt

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".jenova-tmp"
# Temp names of releases before the lock existed: removed once untouched for this long.
_LEGACY_AGE_S = 3600.0
# A lockable temp file younger than this may be a writer between its create and its flock.
_CREATE_GRACE_S = 60.0


def jenova_home() -> Path:
    return Path.home() / ".jenova-ai"


def cache_home() -> Path:
    """What can be rebuilt (the engine, working copies of models): `$JENOVA_FAST_CACHE`, else
    `$XDG_CACHE_HOME/jenova-fast`, else `~/.cache/jenova-fast`. Never beside a base that may be read-only."""
    if os.environ.get("JENOVA_FAST_CACHE"):
        return Path(os.environ["JENOVA_FAST_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "jenova-fast"


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "user"


def available_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count): more threads than that make
    ggml's spinning threads 30-60x slower and prepare's readers contend."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class BusyError(OSError):
    """Another live process is writing the same target; the message names it and the fix."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class Leftovers:
    files: int = 0
    bytes: int = 0

    def __add__(self, other: Leftovers) -> Leftovers:
        return Leftovers(self.files + other.files, self.bytes + other.bytes)

    def __str__(self) -> str:
        return f"{self.files} leftover temp file{'s' * (self.files != 1)} of killed runs ({_size(self.bytes)})"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def _temp_pattern(name: str) -> re.Pattern[str]:
    legacy = r"\.[0-9a-f]{12}\.tmp|\.[\w]{8}\.tmp|\.tmp\d+|\.new\d+|\.prev\d+|\.cur\d+"
    return re.compile(rf"\.{re.escape(name)}(?:\.(\d+)\.(\d+){re.escape(TEMP_SUFFIX)}|(?:{legacy}))")


def _temps(target: Path) -> Iterator[tuple[Path, int | None, int | None]]:
    """(path, start ns, pid) of every temp file of `target`; start and pid are None for legacy names."""
    pattern = _temp_pattern(target.name)
    try:
        entries = list(os.scandir(target.parent if str(target.parent) else "."))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m:
            start, pid = m.group(1), m.group(2)
            yield Path(entry.path), (int(start) if start else None), (int(pid) if pid else None)


def _is_live(path: Path, start: int | None, pid: int | None) -> bool:
    """A writer holds the lock on `path` (or, alive, created it a moment ago and is about to lock it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno != errno.ENOENT and exc.errno != errno.ELOOP
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    if start is None:  # a legacy name: no lock to hold, so only age tells
        return time.time() - path.lstat().st_mtime < _LEGACY_AGE_S
    return time.time_ns() - start < _CREATE_GRACE_S * 1e9 and pid is not None and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> int:
    try:
        st = path.lstat()
        if path.is_dir() and not path.is_symlink():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(path)
            return size
        path.unlink()
        return st.st_size
    except FileNotFoundError:
        return 0


def sweep(target: str | os.PathLike[str]) -> Leftovers:
    """Remove the temp files (and temp directories) that dead writers of `target` left beside it."""
    found = Leftovers()
    for path, start, pid in _temps(Path(target)):
        try:
            if _is_live(path, start, pid):
                continue
            found += Leftovers(1, _remove(path))
        except OSError as exc:  # not ours to remove (another user's, a read-only folder): leave it
            log.debug("cannot remove %s: %s", path, exc)
    if found.files:
        log.warning("%s: removed %s", target, found)
    return found


def _create(target: Path, directory: bool) -> tuple[Path, int]:
    """A new temp file (or directory) of `target`, locked: (its path, the fd holding the lock)."""
    while True:
        start = time.time_ns()
        path = target.with_name(f".{target.name}.{start}.{os.getpid()}{TEMP_SUFFIX}")
        try:
            if directory:
                os.mkdir(path, 0o700)
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return path, fd


def _check_alone(target: Path, mine: Path, option: str) -> None:
    """Raise BusyError when a live writer of `target` started before this one: of two that start at once,
    the earlier one goes on (both see each other; the order of (start, pid) decides)."""
    me = _order(mine)
    for path, start, pid in _temps(target):
        if path == mine or start is None or (start, pid) > me or not _is_live(path, start, pid):
            continue
        since = time.strftime("%H:%M:%S", time.localtime(start / 1e9))
        raise BusyError(errno.EBUSY, f"{target}: another run (pid {pid}, since {since}) is writing it; wait for "
                                     f"it to finish or choose another {option}")


def _order(path: Path) -> tuple[int, int]:
    start, pid = path.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)[1:]
    return int(start), int(pid)


@contextlib.contextmanager
def temporary(target: str | os.PathLike[str], *, directory: bool = False,
              exclusive: str | None = None) -> Iterator[Path]:
    """A locked temp file (or directory) beside `target` (its folder made if need be), for writers that
    need a path; removed when the block ends unless it was renamed away. Dead writers' leftovers are swept
    first. `exclusive`: the option that chooses another target, when a second live writer of `target`
    must be refused."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target)
    created = None
    try:
        with deferred():  # a Ctrl-C lands once the temp file exists and its removal below is armed
            created = _create(target, directory)
            on_interrupt(created[0], functools.partial(_remove, created[0]))  # ... and `run`'s, if it misses
        path = created[0]
        if exclusive is not None:
            _check_alone(target, path, exclusive)
        yield path
    finally:
        if created is not None:
            with deferred():  # ... and not halfway through the removal
                os.close(created[1])
                with contextlib.suppress(FileNotFoundError):
                    _remove(created[0])
                on_interrupt(created[0], None)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, exclusive: str | None = None,
                new_mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path to write `target` through (a writer that opens files by name: gguf's, numpy's);
    when the block ends without an error it replaces `target` (fsync, rename, fsync of the directory); on
    any error (Ctrl-C included) `target` is as it was and the temp file is gone. Permissions: the previous
    file's, else `new_mode` (default 0666 less the umask)."""
    target = Path(target)
    with temporary(target, exclusive=exclusive) as tmp:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _mode_for(target, new_mode))
        os.replace(tmp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str], *, exclusive: str | None = None,
                 new_mode: int | None = None) -> Iterator[BinaryIO]:
    """atomic_path's temp file, opened as an unbuffered binary file (its temp path is `.name`)."""
    with atomic_path(target, exclusive=exclusive, new_mode=new_mode) as tmp, open(tmp, "r+b", buffering=0) as f:
        yield f


def write_bytes_via(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temp file, then atomically in place of `path` (see atomic_path). A new file is
    private (0600): the CPA state and reports hold what the user said."""
    with atomic_write(path, new_mode=0o600) as f:
        write(f)


def _mode_for(target: Path, new_mode: int | None) -> int:
    try:
        return target.stat().st_mode & 0o775  # never world-writable, even if the previous file was
    except OSError:
        if new_mode is not None:
            return new_mode
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse a directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory if str(directory) else ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- names that become path components, and folders only this user may write in ----
# A user name (--user, CPA(user=...)) is one component of ~/.jenova-ai/users/<user>/: empty, `.`, `..` or a
# `/` would point the run somewhere else. The CPA state dir holds what the user says and a Numba cache that
# Numba loads with pickle: whoever can write in it can run code as the user, so it is created private (0700)
# and refused when another user owns it (or the symlink naming it), or when every user may write in it.


class UnsafePathError(ValueError):
    """A name or directory that would let the run read or write somewhere it was not meant to; the message
    names it and the fix."""


def user_component(name: str, option: str = "--user") -> str:
    """`name`, checked to be a single path component (a user name), else UnsafePathError."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise UnsafePathError(f"{option} {name!r} is not a user name: it would name a folder outside "
                              f"~/.jenova-ai/users; give the bare name (no '/', not '.' or '..')")
    return name


def private_dir(path: str | os.PathLike[str], what: str, option: str) -> Path:
    """Create `path` (mode 0700; its missing parents with the default mode) if need be, and check that no
    other user can write in it: it (or a symlink naming it) must not be owned by another user, and it must
    not be writable by every user. Returns it; raises UnsafePathError naming the problem and the fix."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.geteuid()
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        raise UnsafePathError(f"{what} {path} is a symlink owned by another user (uid {link.st_uid}), who can "
                              f"point it anywhere; remove it, or choose another {option}")
    st = os.stat(path)
    if st.st_uid != me:
        raise UnsafePathError(f"{what} {path} belongs to another user (uid {st.st_uid}); writing there would "
                              f"let them change what this run reads back; choose another {option}")
    if st.st_mode & stat.S_IWOTH:
        raise UnsafePathError(f"{what} {path} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}); "
                              f"run `chmod o-w {path}` (better: chmod 700), or choose another {option}")
    return path
