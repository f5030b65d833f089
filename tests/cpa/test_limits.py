"""Limits (issue 10, item 6) of `cpa observe --history`, native and pure: a line nested 100,000 deep and a
line too long to hold are counted skips, the lines around them observed; no traceback. The full-size cases
(a 1 GB history, a 2 GB line) are in benchmarks/limits.py."""

from __future__ import annotations

import json
from pathlib import Path

from jenova_fast.cpa.observe import MAX_LINE_CHARS, ObserveReport, read_history
from tests.cpa.conftest import run_cpa


def _line(n: int) -> str:
    return json.dumps({"user_message": f"question {n} about tomatoes", "ai_message": "ok"})


def _observe(cpa_impl: str, tmp_path: Path, history: Path) -> dict:
    proc = run_cpa("observe", "--state-dir", tmp_path / "state", "--history", history)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    stats = run_cpa("stats", "--state-dir", tmp_path / "state", "--json")
    assert stats.returncode == 0, stats.stderr
    return json.loads(stats.stdout)


def test_history_line_nested_100000_deep(cpa_impl, tmp_path):
    """json.loads raises RecursionError (not a ValueError) past Python's stack: it was a traceback."""
    history = tmp_path / "h.jsonl"
    deep = '{"user_message": "x", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    history.write_text("\n".join([_line(1), deep, _line(3)]) + "\n", encoding="utf-8")
    report = ObserveReport("query", str(history))
    texts, _ = read_history(history, report)
    assert texts == ["question 1 about tomatoes", "question 3 about tomatoes"]
    assert dict(report.skipped) == {"invalid JSON": 1}
    assert _observe(cpa_impl, tmp_path, history)["queries"]["queries"] == 2


def test_history_line_too_long_is_skipped_and_never_held(cpa_impl, tmp_path):
    """A line longer than MAX_LINE_CHARS (16 Mi characters) is read past in 1 Mi steps: a 2 GB line costs
    no more memory than the limit. The line numbers after it stay right."""
    history = tmp_path / "h.jsonl"
    long_line = '{"user_message": "' + "w " * (MAX_LINE_CHARS // 2) + '"}'
    history.write_text("\n".join([_line(1), long_line, _line(3)]) + "\n", encoding="utf-8")
    report = ObserveReport("query", str(history))
    texts, _ = read_history(history, report)
    assert texts == ["question 1 about tomatoes", "question 3 about tomatoes"]
    assert dict(report.skipped) == {"line too long": 1}
    assert _observe(cpa_impl, tmp_path, history)["queries"]["queries"] == 2


def test_line_numbers_after_a_long_line(tmp_path, caplog):
    history = tmp_path / "h.jsonl"
    history.write_text("\n".join([_line(1), "x" * (MAX_LINE_CHARS + 1), "not json", _line(4)]) + "\n",
                       encoding="utf-8")
    caplog.set_level("INFO", logger="jenova_fast.cpa.observe")
    read_history(history, ObserveReport("query", str(history)))
    assert f"{history}:2: skipped (line too long)" in caplog.text
    assert f"{history}:3: skipped (invalid JSON)" in caplog.text
