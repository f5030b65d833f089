"""`--balance-topics`: the CPA's theme weights cap a runaway topic; the kept records span its history."""

from __future__ import annotations

import functools
import json
from collections import Counter

import jenova_fast
from jenova_fast.cpa import CPA, topic_caps
from jenova_fast.prepare.balance import TopicBalancer
from tests.conftest import run_cli
from tests.prepare.reference import read_lines


def topic_of(record: dict) -> str:
    return record["messages"][0]["content"].split("'")[2]


def make_store(root):
    for topic, n in (("chess", 60), ("cooking", 6), ("jazz", 5)):
        folder = root / "alice" / topic
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"insight_{i:03d}.json").write_text(json.dumps({"topic": topic, "content": f"{topic} {i}"}))


def test_balance_caps_the_runaway_topic(impl, tmp_path):
    store = tmp_path / "store"
    make_store(store)
    state = tmp_path / "cpa"
    cpa = CPA(state)
    cpa.observe_topics(["chess", "cooking", "cooking", "jazz", "jazz"])
    out = tmp_path / "balanced.jsonl"
    report = jenova_fast.prepare(store, out, topic_caps=functools.partial(topic_caps, state))
    records = read_lines(out)
    counts = Counter(map(topic_of, records))
    assert counts["cooking"] == 6 and counts["jazz"] == 5
    assert counts["chess"] == 3  # capped to its weight (half of the others'), not its 60 files
    assert report.insight_records == len(records) == 71 - report.balanced_out
    chess = [r["messages"][1]["content"].rsplit(" ", 1)[1] for r in records if topic_of(r) == "chess"]
    assert chess == ["19", "39", "59"]  # spread over the topic's whole history
    unbalanced = jenova_fast.prepare(store, tmp_path / "all.jsonl")
    assert unbalanced.records == 71


def test_balance_from_the_cli_is_deterministic(impl, tmp_path):
    store = tmp_path / "store"
    make_store(store)
    CPA(tmp_path / "cpa").observe_topics(["cooking", "jazz", "chess"])
    outputs = []
    for name in ("a", "b"):
        proc = run_cli(
            "prepare",
            "--insights-dir",
            store,
            "--output",
            tmp_path / f"{name}.jsonl",
            "--balance-topics",
            "--cpa-state-dir",
            tmp_path / "cpa",
        )
        assert proc.returncode == 0, proc.stderr
        assert "left out by --balance-topics" in proc.stdout
        outputs.append((tmp_path / f"{name}.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_balancer_keeps_exactly_the_cap_spread_evenly():
    balancer = TopicBalancer({"a": 10, "b": 3}, {"a": 4, "b": 9})
    kept_a = [i for i in range(10) if balancer.keep("a")]
    kept_b = [i for i in range(3) if balancer.keep("b")]
    assert len(kept_a) == 4 and kept_a[0] < 3 and kept_a[-1] == 9
    assert kept_b == [0, 1, 2] and balancer.dropped == 6
