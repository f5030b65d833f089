"""`--include-history`: a JSONL conversation log, one `user_message`/`ai_message` pair per line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jenova_fast.prepare._pipeline_py import loads
from jenova_fast.prepare.report import Skip, SkipReason


def iter_history_pairs(path: Path) -> Iterator[tuple[str, str, str, str | None] | Skip]:
    """Each valid pair as (user_message, ai_message, "FILE:LINE", timestamp or None), or a Skip naming
    `FILE:LINE`; blank lines are not entries, as in the reference."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
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
