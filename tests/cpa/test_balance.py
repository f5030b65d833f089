"""topic_caps: CPA theme weights cap each topic's share of the training set."""

from __future__ import annotations

import time
from pathlib import Path

from jenova_fast.cpa import CPA, topic_caps


def test_no_state_keeps_everything(tmp_path: Path) -> None:
    counts = {"a": 500, "b": 3, "c": 0}
    assert topic_caps(tmp_path / "missing", counts) == counts
    CPA(tmp_path / "empty").reset()  # a saved state without themes
    assert topic_caps(tmp_path / "empty", counts) == counts


def test_runaway_topic_is_trimmed_to_its_weight(cpa_impl: str, tmp_path: Path) -> None:
    now = time.time()
    cpa = CPA(tmp_path)
    cpa.observe_topics(["Gardening"] * 4 + ["Cooking"] * 2 + ["Chess"] * 2, when=now)
    counts = {"gardening": 40, "Cooking": 20, "chess": 900, "never seen": 50}
    caps = topic_caps(tmp_path, counts)
    # densities (records per weight): 10, 10, 450, 25 (unseen: the smallest seen weight, 2) -> median 10
    assert caps == {"gardening": 40, "Cooking": 20, "chess": 20, "never seen": 20}


def test_decay_shifts_the_caps(cpa_impl: str, tmp_path: Path) -> None:
    now = time.time()
    cpa = CPA(tmp_path)
    cpa.observe_topics([("old", now - 60 * 86400)] * 8 + [("new", now)] * 2)  # two half-lives ago
    caps = topic_caps(tmp_path, {"old": 100, "new": 100})
    # weights 2 and 2 (8 / 4): even caps
    assert caps == {"old": 100, "new": 100}
    cpa.observe_topics([("new", now)] * 2)
    caps = topic_caps(tmp_path, {"old": 100, "new": 100})
    assert caps["new"] == 100 and caps["old"] == 50


def test_unrelated_state_caps_evenly(cpa_impl: str, tmp_path: Path) -> None:
    CPA(tmp_path).observe_topics(["something else"])
    assert topic_caps(tmp_path, {"a": 10, "b": 300, "c": 40}) == {"a": 10, "b": 40, "c": 40}
