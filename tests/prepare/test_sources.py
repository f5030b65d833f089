"""--sources assumptions,cortex and --with-metadata: what else the assistant learned becomes records with
their own wording; bad files and items are counted skips; native and pure agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jenova_fast
from jenova_fast.prepare import records
from tests.conftest import run_cli
from tests.prepare.reference import read_lines

ALL = ("insights", "assumptions", "cortex")


def assumption(content: object, i: int) -> dict:
    return {"content": content, "username": "alice", "timestamp": f"2025-05-0{i}T10:00:00", "cortex_id": f"a-{i}"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A ~/.jenova-ai with two users: alice has every source, bob only insights and a corrupt graph."""
    root = tmp_path / ".jenova-ai"
    for user in ("alice", "bob"):
        topic = root / "users" / user / "insights" / user / "music"
        topic.mkdir(parents=True)
        (topic / "insight_1.json").write_text(json.dumps({"topic": "music", "content": f"{user} likes jazz",
                                                          "user": user}))
    alice = root / "users" / "alice"
    (alice / "assumptions.json").write_text(json.dumps({
        "verified": [assumption("prefers short answers", 1), assumption("", 2), "not an item"],
        "unverified": [assumption("might like tea", 3)],
        "true": [assumption("lives in Lisbon", 4), assumption(5, 5)],
        "false": [assumption("owns a cat", 6)],
    }))
    (alice / "cortex").mkdir()
    (alice / "cortex" / "cognitive_graph.json").write_text(json.dumps({
        "nodes": {
            "n1": {"id": "n1", "type": "document", "content": "a paper on sleep", "user": "alice",
                   "timestamp": "2025-06-01T09:00:00", "metadata": {}},
            "n2": {"id": "n2", "type": "insight", "content": "alice learns by doing", "user": "alice",
                   "timestamp": "2025-06-02T09:00:00", "metadata": {}},
            "n3": {"id": "n3", "type": "concern", "content": "not training material"},
            "n4": {"id": "n4", "type": "insight", "content": None},
        },
        "links": [{"source": "n1", "target": "n2", "relationship": "supports"}],
    }))
    (root / "users" / "bob" / "cortex").mkdir()
    (root / "users" / "bob" / "cortex" / "cognitive_graph.json").write_text("{not json")
    return root


def answers(out: Path) -> list[str]:
    return [r["messages"][1]["content"] for r in read_lines(out)]


def test_every_source_in_order_with_its_own_wording(impl, home, tmp_path):
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(home, out, sources=ALL)
    lines = read_lines(out)
    assert answers(out) == [
        records.insight_answer("music", "alice likes jazz", "alice"),
        records.insight_answer("music", "bob likes jazz", "bob"),
        records.assumption_answer("prefers short answers", "alice"),
        records.assumption_answer("lives in Lisbon", "alice"),
        records.cortex_answer("document", "a paper on sleep", "alice"),
        records.cortex_answer("insight", "alice learns by doing", "alice"),
    ]
    assert lines[2]["messages"][0]["content"] == records.ASSUMPTION_QUESTION
    assert lines[4]["messages"][0]["content"] == records.cortex_question("document")
    assert report.source_records == {"assumptions": 2, "cortex": 2}
    assert report.records == 6 == report.insight_records + 4
    skipped = {(Path(s.path.split("#")[0]).name, s.path.split("#")[-1], s.reason.value) for s in report.skips}
    alice = home / "users" / "alice"
    assert skipped == {
        # a walk over the whole ~/.jenova-ai meets these as *.json files too, as the reference's glob does
        ("assumptions.json", str(alice / "assumptions.json"), "no_content"),
        ("cognitive_graph.json", str(alice / "cortex" / "cognitive_graph.json"), "no_content"),
        ("assumptions.json", "verified/1", "no_content"),
        ("assumptions.json", "verified/2", "not_object"),
        ("assumptions.json", "true/1", "wrong_type"),
        ("cognitive_graph.json", "n4", "no_content"),
        ("cognitive_graph.json", str(home / "users" / "bob" / "cortex" / "cognitive_graph.json"), "invalid_json"),
    }


def test_a_user_store_finds_its_own_user_dir(impl, home, tmp_path):
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(home / "users" / "alice" / "insights", out, sources=("assumptions",))
    assert report.insight_records == 0 and report.source_records == {"assumptions": 2}


def test_metadata_and_split_for_every_source(impl, home, tmp_path):
    out = tmp_path / "o.jsonl"
    history = tmp_path / "h.jsonl"
    history.write_text(json.dumps({"user_message": "hi", "ai_message": "hello", "timestamp": "2025-07-01"}) + "\n")
    jenova_fast.prepare(home, out, sources=(*ALL, "history"), include_history=history, with_metadata=True,
                        eval_fraction=0.5)
    both = read_lines(out) + read_lines(out.with_name("eval.jsonl"))
    meta = {(m["source"], m["path"].split("#")[-1], m["timestamp"]) for m in (r["metadata"] for r in both)}
    assert meta == {
        ("insights", "users/alice/insights/alice/music/insight_1.json", None),
        ("insights", "users/bob/insights/bob/music/insight_1.json", None),
        ("assumptions", "verified/0", "2025-05-01T10:00:00"),
        ("assumptions", "true/0", "2025-05-04T10:00:00"),
        ("cortex", "n1", "2025-06-01T09:00:00"),
        ("cortex", "n2", "2025-06-02T09:00:00"),
        ("history", f"{history}:1", "2025-07-01"),
    }
    assert read_lines(out)[-1]["metadata"]["source"] == "history"  # history always trains


def test_native_and_pure_agree(home, tmp_path, monkeypatch):
    outputs = []
    for pure in ("0", "1"):
        monkeypatch.setenv("JENOVA_FAST_PURE", pure)
        out = tmp_path / pure / "train.jsonl"
        jenova_fast.prepare(home, out, sources=ALL, with_metadata=True, eval_fraction=0.3, fmt="sharegpt")
        outputs.append((out.read_bytes(), out.with_name("eval.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]


def test_cli_sources_and_their_errors(impl, home, tmp_path):
    out = tmp_path / "o.jsonl"
    ok = run_cli("prepare", "--insights-dir", home, "--output", out, "--sources", "insights,cortex", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert len(read_lines(out)) == 4
    unknown = run_cli("prepare", "--insights-dir", home, "--sources", "insights,diary")
    assert unknown.returncode == 2 and "insights,history,assumptions,cortex" in unknown.stderr
    history = run_cli("prepare", "--insights-dir", home, "--sources", "insights,history")
    assert history.returncode == 2 and "--include-history FILE" in history.stderr
