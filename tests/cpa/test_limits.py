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


def test_history_in_batches_counts_as_one_call(cpa_impl, tmp_path, monkeypatch):
    """`observe --history` counts a file HISTORY_BATCH queries at a time (a 1 GB history held 900 MB): the
    state after 7-query batches is the state after one batch, sessions and themes included."""
    from jenova_fast.cpa import observe
    from jenova_fast.cpa.accelerator import CPA

    lines = []
    for i in range(120):
        entry = {"user_message": f"how do I water tomatoes {i % 9} in week {i // 10}", "ai_message": "so"}
        if i % 5:  # undated ones too, the first among them; gaps of a day every 13 queries: new sessions
            entry["timestamp"] = 1_700_000_000 + i * 60 + (i // 13) * 86_400
        lines.append(json.dumps(entry))
    history = tmp_path / "h.jsonl"
    history.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = []
    for name, batch in (("one", observe.HISTORY_BATCH), ("many", 7)):
        monkeypatch.setattr(observe, "HISTORY_BATCH", batch)
        cpa = CPA(tmp_path / name)
        cpa.observe_topics([("tomatoes", 1_700_000_000.0)], when=1_700_000_000.0)
        assert cpa.observe_history(history).observed == 120
        stats.append(cpa.stats(top=50))
    for s in stats:
        s.pop("compilation", None)
        s.pop("state_dir")
        for theme in s["themes"]:
            theme.pop("last_seen")  # an undated query's mention is at the time it is counted: its decay too
            theme["weight"] = round(theme["weight"], 3)
    assert stats[0] == stats[1]
