"""`--include-history`: a JSONL conversation log, one `user_message`/`ai_message` pair per line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from jenova_fast.prepare.pyjson import loads
from jenova_fast.prepare.report import Skip, SkipReason

# A history line longer than this is skipped (too_large) without being held in memory: prepare's
# --max-file-bytes default, and the CPA's limit.
MAX_LINE_BYTES = 16 << 20
_DISCARD = 1 << 20


def bounded_lines(f: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line's bytes) of a binary file, or (number, None) for a line longer than
    `max_bytes`, read past in 1 MiB steps: memory stays bounded whatever a line's length (a 2 GB line
    costs no more than `max_bytes`)."""
    number = 0
    while True:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        number += 1
        if line.endswith(b"\n") or len(line) <= max_bytes:  # at most max_bytes before its newline
            yield number, line
            continue
        while not line.endswith(b"\n"):
            line = f.readline(_DISCARD)
            if not line:
                break
        yield number, None


def iter_history_pairs(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[
        tuple[str, str, str, str | None] | Skip]:
    """Each valid pair as (user_message, ai_message, "FILE:LINE", timestamp or None), or a Skip naming
    `FILE:LINE`; blank lines are not entries, as in the reference. A line longer than `max_line_bytes`
    is skipped as too_large, never read into memory whole."""
    with open(path, "rb") as f:
        for number, raw in bounded_lines(f, max_line_bytes):
            where = f"{path}:{number}"
            if raw is None:
                yield Skip(where, SkipReason.TOO_LARGE,
                           f"a line of more than {max_line_bytes} bytes; split it, or raise --max-file-bytes")
                continue
            if not raw.strip():
                continue
            try:
                obj = loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Skip(where, SkipReason.INVALID_UTF8)
                continue
            except ValueError:
                yield Skip(where, SkipReason.INVALID_JSON)
                continue
            if not isinstance(obj, dict):
                yield Skip(where, SkipReason.NOT_OBJECT)
                continue
            user, ai = obj.get("user_message"), obj.get("ai_message")
            if user is None or ai is None or user == "" or ai == "":
                yield Skip(where, SkipReason.INCOMPLETE_PAIR)
            elif not (isinstance(user, str) and isinstance(ai, str)):
                yield Skip(where, SkipReason.WRONG_TYPE)
            else:
                timestamp = obj.get("timestamp")
                yield user, ai, where, timestamp if isinstance(timestamp, str) else None
