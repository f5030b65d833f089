"""Pure-Python twin of the native pipeline (`_pipeline.pyx` + `csrc/pipeline.cpp`): walk, read, parse.

It is the executable specification: the native code must produce byte-identical output and the same
skips, in the same order. Keep it obvious rather than fast.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import stat
from collections.abc import Callable, Collection, Iterator

from jenova_fast.prepare._jsonl_py import format_chat, format_insight
from jenova_fast.prepare.output import write_all
from jenova_fast.prepare.pyjson import loads
from jenova_fast.prepare.records import DEFAULT_TOPIC, DEFAULT_USER, NOT_INSIGHTS, Insight
from jenova_fast.prepare.report import ScanStats, Skip, SkipReason

_BOM = b"\xef\xbb\xbf"
_MASK64 = (1 << 64) - 1


__all__ = [
    "Insight",
    "ScanStats",
    "count_files",
    "format_chat",
    "format_insight",
    "held_out",
    "parse_insight",
    "run",
    "scan",
    "scan_roots",
]


def parse_insight(data: bytes) -> tuple[str, str, str, str | None, str | None] | SkipReason:
    """(topic, content, user, cortex_id, timestamp) of one insight file's bytes, or why it is not a record;
    cortex_id and timestamp are None unless they are strings. A UTF-8 byte order mark is allowed (as
    `json.loads` of the file's bytes allows it)."""
    if data.startswith(_BOM):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return SkipReason.INVALID_UTF8
    try:
        obj = loads(text)
    except ValueError:  # JSONDecodeError, JSONRejected
        return SkipReason.INVALID_JSON
    if not isinstance(obj, dict):
        return SkipReason.NOT_OBJECT
    content = obj.get("content")
    if content is None or content == "":
        return SkipReason.NO_CONTENT
    topic = obj.get("topic")
    topic = DEFAULT_TOPIC if topic is None else topic
    user = obj.get("user")
    user = DEFAULT_USER if user is None else user
    if not (isinstance(content, str) and isinstance(topic, str) and isinstance(user, str)):
        return SkipReason.WRONG_TYPE
    cortex_id, timestamp = obj.get("cortex_id"), obj.get("timestamp")
    return (
        topic,
        content,
        user,
        cortex_id if isinstance(cortex_id, str) else None,
        timestamp if isinstance(timestamp, str) else None,
    )


def relative_path(path: str, root: str) -> str:
    """`path` relative to the store root it was found under (its identity when it has no cortex_id)."""
    return path[len(root) :].lstrip("/")


def identity(insight: Insight, root: str) -> bytes:
    """What --eval-fraction hashes: the cortex_id (as the native parser holds it), else the path relative to
    the store (its bytes on disk)."""
    if insight.cortex_id:
        return insight.cortex_id.encode("utf-8", "surrogatepass")
    return os.fsencode(relative_path(insight.path, root))


def held_out(identity: bytes, fraction: float) -> bool:
    """Twin of `held_out` in csrc/pipeline.h: FNV-1a 64 of the identity's bytes, murmur3's fmix64, the top
    53 bits as a fraction in [0, 1) below `fraction`."""
    h = 0xCBF29CE484222325
    for byte in identity:
        h = ((h ^ byte) * 0x100000001B3) & _MASK64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return (h >> 11) / 9007199254740992.0 < fraction


def _os_error_reason(exc: OSError) -> SkipReason:
    if exc.errno == errno.ENOENT:
        return SkipReason.VANISHED
    if exc.errno == errno.ELOOP:
        return SkipReason.SYMLINK
    return SkipReason.UNREADABLE


def _read_file(dir_fd: int, name: str, max_bytes: int, follow_symlinks: bool) -> bytes | SkipReason:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        return _os_error_reason(exc)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return SkipReason.NOT_REGULAR
        if st.st_size > max_bytes:
            return SkipReason.TOO_LARGE
        chunks, total = [], 0
        while total <= max_bytes:  # read to EOF: the file may have grown since fstat
            chunk = os.read(fd, max(st.st_size - total, 0) + 65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            return SkipReason.TOO_LARGE
        return b"".join(chunks)
    except OSError as exc:
        return _os_error_reason(exc)
    finally:
        os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def raise_open_file_limit() -> int:
    """Twin of the native pipeline's: the soft limit on open files raised to the hard one (as Go's runtime
    does), since the walk holds one fd per directory level. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class _Level:
    """One open directory of the walk: its fd, its path, its sorted names and the next one to visit."""

    def __init__(self, fd: int, path: str, names: list[str], dev_ino: tuple[int, int]) -> None:
        self.fd, self.path, self.names, self.next, self.dev_ino = fd, path, names, 0, dev_ino


class _Walker:
    """Depth first with an explicit stack (no recursion limit on nesting), every name opened relative to
    its directory's fd (no PATH_MAX on a path's length), as the native walker does."""

    def __init__(self, max_bytes: int, follow_symlinks: bool) -> None:
        self.max_bytes = max_bytes
        self.follow = follow_symlinks
        self.stats = ScanStats()
        raise_open_file_limit()

    @staticmethod
    def _open(parent_fd: int | None, name: str, path: str, follow: bool) -> _Level | Skip:
        """A directory opened and listed (sorted by bytes, hidden names left out), or the Skip naming it."""
        flags = _DIR_FLAGS | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(name, flags, dir_fd=parent_fd)
        except OSError as exc:
            return Skip(path, _os_error_reason(exc), exc.strerror or "")
        try:
            st = os.fstat(fd)
            names = sorted((n for n in os.listdir(fd) if not n.startswith(".")), key=os.fsencode)
        except OSError as exc:
            os.close(fd)
            return Skip(path, _os_error_reason(exc), exc.strerror or "")
        return _Level(fd, path, names, (st.st_dev, st.st_ino))

    def walk(self, root: str) -> Iterator[Insight | Skip]:
        first = self._open(None, root, root, True)
        if isinstance(first, Skip):
            yield first
            return
        stack = [first]
        try:
            while stack:
                level = stack[-1]
                if level.next >= len(level.names):
                    os.close(stack.pop().fd)
                    continue
                name = level.names[level.next]
                level.next += 1
                full = os.path.join(level.path, name)
                is_json = name.endswith(".json")
                try:
                    kind = os.stat(name, dir_fd=level.fd, follow_symlinks=False).st_mode
                    follow = False
                    if stat.S_ISLNK(kind):
                        try:
                            target: os.stat_result | None = os.stat(name, dir_fd=level.fd)
                        except OSError as exc:
                            target, error = None, exc
                        if not self.follow:
                            if is_json or (target is not None and stat.S_ISDIR(target.st_mode)):
                                yield Skip(full, SkipReason.SYMLINK)
                            continue
                        if target is None:
                            if is_json:
                                yield Skip(full, _os_error_reason(error), error.strerror or "")
                            continue
                        kind, follow = target.st_mode, True
                        if stat.S_ISDIR(kind) and any(
                            (target.st_dev, target.st_ino) == a.dev_ino for a in stack
                        ):
                            yield Skip(full, SkipReason.SYMLINK_LOOP)
                            continue
                except OSError as exc:
                    if is_json:
                        yield Skip(full, _os_error_reason(exc), exc.strerror or "")
                    continue
                if stat.S_ISDIR(kind):
                    child = self._open(level.fd, name, full, follow)
                    if isinstance(child, Skip):
                        yield child
                    else:
                        stack.append(child)
                elif is_json:
                    yield from self._file(level.fd, full, name, kind)
        finally:
            for level in stack:
                os.close(level.fd)

    def _file(self, dir_fd: int, path: str, name: str, mode: int) -> Iterator[Insight | Skip]:
        if name in NOT_INSIGHTS:
            self.stats.ignored += 1
            return
        self.stats.files_seen += 1
        if not stat.S_ISREG(mode):
            yield Skip(path, SkipReason.NOT_REGULAR)
            return
        data = _read_file(dir_fd, name, self.max_bytes, self.follow)
        if isinstance(data, SkipReason):
            yield Skip(path, data)
            return
        self.stats.bytes_read += len(data)
        if not data:
            yield Skip(path, SkipReason.EMPTY_FILE)
            return
        parsed = parse_insight(data)
        if isinstance(parsed, SkipReason):
            yield Skip(path, parsed)
        else:
            yield Insight(path, *parsed)


def scan(roots: list[str], max_bytes: int, follow_symlinks: bool) -> tuple[Iterator[Insight | Skip], ScanStats]:
    """Insights and skips of every root, in sorted path order, plus the counters they update."""
    events, stats = scan_roots(roots, max_bytes, follow_symlinks)
    return (event for _, event in events), stats


def scan_roots(
    roots: list[str], max_bytes: int, follow_symlinks: bool
) -> tuple[Iterator[tuple[str, Insight | Skip]], ScanStats]:
    """As `scan`, each event with the root it was found under."""
    walker = _Walker(max_bytes, follow_symlinks)

    def events() -> Iterator[tuple[str, Insight | Skip]]:
        for root in roots:
            for event in walker.walk(root):
                yield root, event

    return events(), walker.stats


def run(
    roots: list[str],
    *,
    max_bytes: int,
    follow_symlinks: bool,
    threads: int,
    write: Callable[[bytes], object] | int,
    on_skip: Callable[[Skip], object],
    progress: Callable[[int, int, int | None], object],
    count_total: bool = False,
    topics: list[str] | None = None,
    fmt: str = "messages",
    metadata: bool = False,
    eval_fraction: float = 0.0,
    write_eval: Callable[[bytes], object] | None = None,
    fields: list[tuple[str, str, str]] | None = None,
    drop: Collection[str] | None = None,
) -> tuple[int, ScanStats]:
    """Write every insight's record through `write` (a callable or a file descriptor); returns (records,
    stats). `threads` is ignored.

    With a `topics` list, each record's topic is appended to it before the chunk holding the record is
    written (one per line, in order): what `--balance-topics` filters on. `fmt` and `metadata` choose the
    record's form; with `eval_fraction` > 0 the held-out records go to `write_eval` instead. With a `fields`
    list nothing is written: each valid insight's (path, timestamp or "", content) is appended to it (what
    `--dedup` decides on). Valid insights whose path is in `drop` are counted in `stats.dropped` only."""
    del threads
    if isinstance(write, int):
        write = functools.partial(write_all, write)
    total = count_files(roots, follow_symlinks) if count_total else None
    events, stats = scan_roots(roots, max_bytes, follow_symlinks)
    records, pending, pending_eval = 0, [], []
    for root, event in events:
        if isinstance(event, Skip):
            on_skip(event)
            continue
        if drop and event.path in drop:
            stats.dropped += 1
            continue
        records += 1
        if fields is not None:
            fields.append((event.path, event.timestamp or "", event.content))
            continue
        meta = ("insights", relative_path(event.path, root), event.timestamp) if metadata else None
        line = format_insight(event.topic, event.content, event.user, fmt, meta)
        if eval_fraction > 0 and held_out(identity(event, root), eval_fraction):
            pending_eval.append(line)
            stats.eval_records += 1
        else:
            pending.append(line)
            if topics is not None:
                topics.append(event.topic)
        if len(pending) + len(pending_eval) >= 4096:
            if pending_eval:
                assert write_eval is not None
                write_eval(b"".join(pending_eval))
                pending_eval.clear()
            write(b"".join(pending))
            pending.clear()
            progress(stats.files_seen, stats.bytes_read, total)
    if pending_eval:
        assert write_eval is not None
        write_eval(b"".join(pending_eval))
    if pending:
        write(b"".join(pending))
    progress(stats.files_seen, stats.bytes_read, stats.files_seen)  # done: the total is now known
    return records, stats


def count_files(roots: list[str], follow_symlinks: bool) -> int:
    """How many insight files a run will see, for the progress bar's ETA (names only, nothing read)."""
    total, stack, seen = 0, list(reversed(roots)), set()
    while stack:
        try:
            directory = stack.pop()
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop when following symlinks
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
                    except OSError:
                        continue
                    if is_dir:
                        stack.append(entry.path)
                    elif entry.name.endswith(".json") and entry.name not in NOT_INSIGHTS:
                        total += 1
        except OSError:
            continue
    return total
