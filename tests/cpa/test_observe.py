"""Observe inputs and the CLI, on real files: history, insight store, access log, pstats, profile()."""

from __future__ import annotations

import cProfile
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jenova_fast.cpa import CPA, ObserveError
from jenova_fast.cpa.cli import main
from jenova_fast.prepare import insight_topics
from tests.cpa.conftest import ROOT, run_cpa, run_python


def _history(tmp_path: Path) -> Path:
    path = tmp_path / "history.jsonl"
    lines = [
        {"user_message": "How do I water tomato plants?", "ai_message": "...", "timestamp": "2025-10-06T14:03:22"},
        {"user_message": "Tomato plants need sun", "ai_message": "..."},
        {"ai_message": "no user message"},
        {"user_message": 42},
    ]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken json\n\n[1]\n"
    path.write_text(text, encoding="utf-8")
    return path


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "insights"
    for user, topic, stamp in [("ann", "Tomato Plants", "20251006_140322"),
                               ("ann", "tomato  plants", "20251007_090000"), ("ann", "Kochen ü", "20251008_100000")]:
        folder = root / user / topic
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"insight_{stamp}.json").write_text(
            json.dumps({"topic": topic, "content": "c", "user": user}, indent=4), encoding="utf-8")
    (root / "concerns.json").write_text('{"Tomato Plants": {"description": "x", "related_concerns": []}}')
    (root / "ann" / "Kochen ü" / "insight_20251009_100000.json").write_text("{not json")
    return root


def _access_log(tmp_path: Path) -> Path:
    path = tmp_path / "access.jsonl"
    rows = [{"kind": "episodic", "id": "e1", "ts": 100}, {"kind": "semantic", "id": 7, "ts": 130},
            {"kind": "episodic", "id": "e1", "ts": 150}, {"kind": "procedural", "id": "p", "ts": 1000},
            {"kind": "semantic", "id": 7, "ts": "1970-01-01T00:16:50+00:00"}, {"kind": "episodic"},
            {"id": "x", "ts": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_history_and_theme_matching(cpa_impl: str, tmp_path: Path) -> None:
    cpa = CPA(tmp_path / "state")
    cpa.observe_topics(["tomato plants"], when=1_000.0)
    report = cpa.observe_history(_history(tmp_path))
    assert report.observed == 2
    assert dict(report.skipped) == {"no user_message": 2, "invalid JSON": 1, "not a JSON object": 1}
    top = {c.text: c.count for c in cpa.state.ngrams.top()}
    assert top["tomato plants"] == 2 and top["tomato"] == 2 and top["water tomato"] == 1
    assert cpa.state.themes["tomato plants"][2] == 3  # one topic + two queries naming it


def test_insight_store_topics(cpa_impl: str, tmp_path: Path) -> None:
    cpa = CPA(tmp_path / "state")
    report = cpa.observe_insights(insight_topics(_store(tmp_path)))
    assert report.observed == 3  # concerns.json and the broken file are not insights
    themes = cpa.state.themes
    assert {k: int(v[2]) for k, v in themes.items()} == {"tomato plants": 2, "kochen ü": 1}
    w = cpa.theme_weights(now=themes["tomato plants"][1])
    assert 1.0 < w["tomato plants"] < 2.0  # the older mention has decayed a little


def test_access_log_groups_and_pairs(cpa_impl: str, tmp_path: Path) -> None:
    cpa = CPA(tmp_path / "state")
    report = cpa.observe_access_log(_access_log(tmp_path))
    assert report.observed == 5 and sum(report.skipped.values()) == 2
    s = cpa.stats()
    assert s["memory"]["kinds"] == {"episodic": 2, "semantic": 2, "procedural": 1}
    assert {c["text"]: c["count"] for c in s["memory"]["top_items"]} == {
        "episodic:e1": 2, "semantic:7": 2, "procedural:p": 1}
    pairs = {frozenset(c["text"].split(" + ")): c["count"] for c in s["memory"]["top_pairs"]}
    assert pairs == {frozenset({"episodic:e1", "semantic:7"}): 1, frozenset({"procedural:p", "semantic:7"}): 1}


def test_profiles(cpa_impl: str, tmp_path: Path) -> None:
    prof_path = tmp_path / "run.prof"
    prof = cProfile.Profile()
    prof.runcall(sorted, range(100))
    prof.dump_stats(prof_path)
    cpa = CPA(tmp_path / "state")
    cpa.observe_profile(prof_path)
    cpa.observe_profile(prof_path)

    def busy() -> int:
        return sum(i * i for i in range(1000))

    with cpa.profile():
        busy()
    funcs = cpa.state.functions
    assert funcs["<built-in method builtins.sorted>"][0] == 2
    assert any(name.startswith("busy (") and rec[0] == 1 for name, rec in funcs.items())
    (tmp_path / "bad.prof").write_bytes(b"\x00garbage")
    with pytest.raises(ObserveError, match=r"bad\.prof"):
        cpa.observe_profile(tmp_path / "bad.prof")


def test_cli_end_to_end(compiled_state, warm_state: Path, tmp_path: Path, capsys) -> None:
    prof = cProfile.Profile()
    prof.runcall(sorted, range(10))
    prof.dump_stats(tmp_path / "p.prof")
    proc = run_cpa("observe", "--state-dir", warm_state, "--history", _history(tmp_path),
                   "--insights", _store(tmp_path), "--access-log", _access_log(tmp_path),
                   "--profile", tmp_path / "p.prof")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("observed ") and proc.stdout.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "jenova_fast", "cpa", "stats", "--state-dir", str(warm_state),
                           "--json", "--plot", str(tmp_path / "stats.png")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["queries"]["queries"] == 2 and stats["memory"]["kinds"]["episodic"] == 2
    assert (tmp_path / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["compilation"]["records"] >= 3
    capsys.readouterr()
    assert main(["stats", "--state-dir", str(warm_state), "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "query patterns" in table and "tomato" in table and "compilation:" in table
    assert main(["reset", "--state-dir", str(warm_state)]) == 0
    capsys.readouterr()
    assert main(["stats", "--state-dir", str(warm_state), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"]["queries"] == 0


def test_cli_errors_name_the_file(compiled_state, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(["observe", "--state-dir", str(tmp_path / "s"), "--history", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "JSONL" in err
    assert main(["observe", "--state-dir", str(tmp_path / "s")]) == 2
    assert "nothing to observe" in capsys.readouterr().err
    assert main(["observe", "--state-dir", str(tmp_path / "s"), "--insights", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_default_state_dir_is_per_user(compiled_state, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["observe", "--user", "ann", "--history", str(_history(tmp_path))]) == 0
    assert (tmp_path / ".jenova-ai" / "users" / "ann" / ".cpa_state" / "state.npz").is_file()


_NO_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # as if the `plot` extra were not installed
from jenova_fast.cpa.cli import main
sys.exit(main(["stats", "--state-dir", sys.argv[1], "--plot", sys.argv[2]]))
"""


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    proc = run_python(_NO_MATPLOTLIB, str(tmp_path / "s"), str(tmp_path / "x.png"), env={"JENOVA_FAST_PURE": "1"})
    assert proc.returncode == 2
    assert "pip install 'jenova-fast[plot]'" in proc.stderr
    assert not (tmp_path / "x.png").exists()
