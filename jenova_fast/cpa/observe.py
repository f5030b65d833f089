"""Reading the CPA's file inputs: history JSONL, insight stores, access logs, pstats profiles.

Bad lines and files are counted, logged skips, never a crash; a missing or unreadable file is an
`ObserveError` naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import math
import pstats
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)


class ObserveError(Exception):
    """An input that cannot be read at all."""


@dataclass
class ObserveReport:
    source: str
    path: str
    observed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        log.info("%s: skipped (%s)", where, reason)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        detail = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        return (f"observed {self.observed} {self.source} record(s) from {self.path}"
                f"{f'; skipped {skipped} ({detail})' if skipped else ''} in {self.seconds:.2f}s")


def parse_time(value: object) -> float | None:
    """Unix seconds from a number or a (naive = local) ISO 8601 string; None when absent or invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    return None


def _open_text(path: Path, what: str, fix: str):
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ObserveError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}") from exc


# A line longer than this (in characters) is skipped without being held in memory whole.
MAX_LINE_CHARS = 16 << 20
_DISCARD = 1 << 20


def _lines(f: TextIO, max_chars: int) -> Iterator[tuple[int, str | None]]:
    """(line number, line) of a text file, or (number, None) for a line longer than `max_chars`, read past
    in 1 Mi-character steps: memory stays bounded whatever a line's length."""
    lineno = 0
    while True:
        line = f.readline(max_chars + 1)
        if not line:
            return
        lineno += 1
        if line.endswith("\n") or len(line) <= max_chars:
            yield lineno, line
            continue
        while line and not line.endswith("\n"):
            line = f.readline(_DISCARD)
        yield lineno, None


def _json_lines(path: Path, report: ObserveReport, what: str, fix: str,
                max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[int, dict]]:
    with _open_text(path, what, fix) as f:
        for lineno, line in _lines(f, max_chars):
            where = f"{path}:{lineno}"
            if line is None:
                report.skip("line too long", where)
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack allows
                report.skip("invalid JSON", where)
                continue
            if not isinstance(obj, dict):
                report.skip("not a JSON object", where)
                continue
            yield lineno, obj


# Queries per batch of iter_history: a history of any size is counted in memory bounded by this.
HISTORY_BATCH = 65536


def iter_history(path: Path, report: ObserveReport,
                 batch: int | None = None) -> Iterator[tuple[list[str], list[float | None]]]:
    """User messages (and their timestamps) of a conversation log, `batch` (default HISTORY_BATCH) at a
    time, in file order."""
    batch = batch or HISTORY_BATCH
    texts: list[str] = []
    times: list[float | None] = []
    fix = "pass a JSONL file whose lines carry user_message"
    for lineno, obj in _json_lines(path, report, "history file", fix):
        msg = obj.get("user_message")
        if not isinstance(msg, str) or not msg.strip():
            report.skip("no user_message", f"{path}:{lineno}")
            continue
        texts.append(msg)
        times.append(parse_time(obj.get("timestamp", obj.get("ts"))))
        if len(texts) >= batch:
            yield texts, times
            texts, times = [], []
    if texts:
        yield texts, times


def read_history(path: Path, report: ObserveReport) -> tuple[list[str], list[float | None]]:
    """User messages (and their timestamps) of a conversation log, all at once (iter_history: in batches)."""
    texts: list[str] = []
    times: list[float | None] = []
    for batch_texts, batch_times in iter_history(path, report):
        texts += batch_texts
        times += batch_times
    return texts, times


def read_access_log(path: Path, report: ObserveReport) -> list[tuple[str, str, float | None]]:
    """(kind, id, ts) of each valid line of an access log."""
    out: list[tuple[str, str, float | None]] = []
    fix = 'pass a JSONL file of {"kind", "id", "ts"} lines'
    for lineno, obj in _json_lines(path, report, "access log", fix):
        kind, ident = obj.get("kind"), obj.get("id")
        if not isinstance(kind, str) or not kind.strip():
            report.skip("no kind", f"{path}:{lineno}")
            continue
        if isinstance(ident, bool) or not isinstance(ident, str | int):
            report.skip("no id", f"{path}:{lineno}")
            continue
        out.append((kind.strip(), str(ident), parse_time(obj.get("ts"))))
    return out


def read_profile(path: Path) -> dict[str, tuple[int, float, float]]:
    """function -> (ncalls, tottime, cumtime) of a pstats file (marshal, not pickle)."""
    if not Path(path).is_file():
        raise ObserveError(f"profile {path} does not exist; write one with `python -m cProfile -o FILE ...`")
    try:
        stats = pstats.Stats(str(path))
        return functions_of(stats)
    except (ValueError, EOFError, TypeError, OSError, KeyError, AttributeError) as exc:
        raise ObserveError(f"{path} is not a readable pstats profile ({type(exc).__name__}); write one with "
                           "`python -m cProfile -o FILE ...` or cProfile.Profile.dump_stats") from exc


def functions_of(stats: pstats.Stats) -> dict[str, tuple[int, float, float]]:
    out: dict[str, tuple[int, float, float]] = {}
    for key, value in stats.stats.items():  # type: ignore[attr-defined]
        filename, line, func = key
        _cc, nc, tt, ct = value[:4]
        name = func if filename == "~" else f"{func} ({filename}:{line})"
        out[name] = (int(nc), float(tt), float(ct))
    return out
