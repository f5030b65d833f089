"""Persistence: round trip, no pickle, corrupt files moved aside, migration, newer schema, locking."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jenova_fast.cpa import CPA, StateError, state
from tests.cpa.conftest import ROOT


def _populated(state_dir: Path) -> CPA:
    cpa = CPA(state_dir)
    with cpa.batch():
        cpa.observe_topics(["Python", "python ", ("Gardening", 1_700_000_000.0)])
        cpa.observe_queries(["How do Python decorators work?", "python decorators again"])
        cpa.observe_access("episodic", ["e1", "e2", 3])
        cpa.observe_functions({"f (a.py:1)": (3, 0.5, 1.0)})
    return cpa


def test_round_trip_and_no_pickle(cpa_impl: str, tmp_path: Path) -> None:
    before = _populated(tmp_path).stats(top=50)
    path = tmp_path / state.STATE_FILE
    with np.load(path, allow_pickle=False) as z:  # would raise if any member needed pickle
        assert all(z[name].dtype != object for name in z.files)
        header = json.loads(z["header"].tobytes())
    assert header["format"] == "jenova-fast-cpa" and header["schema"] == state.SCHEMA
    after = CPA(tmp_path).stats(top=50)
    assert after["queries"] == before["queries"] and after["memory"] == before["memory"]
    assert after["themes"] == before["themes"] and after["functions"] == before["functions"]
    assert {t["theme"]: t["mentions"] for t in after["themes"]} == {"python": 4, "gardening": 1}
    assert {c["text"]: c["count"] for c in after["queries"]["top"]}["python decorators"] == 2


def test_state_written_by_one_implementation_loads_in_the_other(compiled_state, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JENOVA_FAST_PURE", "1")
    _populated(tmp_path)
    monkeypatch.delenv("JENOVA_FAST_PURE")
    cpa = CPA(tmp_path)
    cpa.observe_queries(["python decorators"])
    monkeypatch.setenv("JENOVA_FAST_PURE", "1")
    cpa.observe_queries(["python decorators"])
    top = {c["text"]: c["count"] for c in CPA(tmp_path).stats()["queries"]["top"]}
    assert top["python decorators"] == 4 and top["python"] == 4


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-header", "missing-array"])
def test_corrupt_state_moved_aside_with_warning(cpa_impl: str, tmp_path: Path, caplog, damage: str) -> None:
    _populated(tmp_path)
    path = tmp_path / state.STATE_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a zip at all" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path, allow_pickle=False) as z:
            members = {n: z[n] for n in z.files}
        if damage == "wrong-header":
            members["header"] = np.frombuffer(b'{"format": "something else"}', dtype=np.uint8)
        else:
            del members["ngrams.sketch"]
        with open(path, "wb") as f:
            np.savez(f, **members)
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="jenova_fast.cpa.state"):
        cpa = CPA(tmp_path)
    assert "moved it to" in caplog.text and str(path) in caplog.text
    aside = list(tmp_path.glob("state.npz.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # the user's bytes are kept
    assert cpa.stats()["queries"]["queries"] == 0
    cpa.observe_queries(["fresh start"])
    assert CPA(tmp_path).stats()["queries"]["queries"] == 1


def test_newer_schema_is_refused_and_left_alone(cpa_impl: str, tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / state.STATE_FILE
    with np.load(path, allow_pickle=False) as z:
        members = {n: z[n] for n in z.files}
    header = json.loads(members["header"].tobytes())
    members["header"] = np.frombuffer(json.dumps({**header, "schema": state.SCHEMA + 1}).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)
    before = path.read_bytes()
    with pytest.raises(StateError, match="upgrade jenova-fast"):
        CPA(tmp_path)
    assert path.read_bytes() == before


def test_schema_1_is_migrated(cpa_impl: str, tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / state.STATE_FILE
    with np.load(path, allow_pickle=False) as z:
        members = {n: z[n] for n in z.files if not n.startswith(("pairs.", "themes.weight", "themes.time"))}
    # schema 1: raw theme counts, no decay times, no co-access pairs
    members["themes.counts"] = members.pop("themes.count")
    header = json.loads(members["header"].tobytes())
    members["header"] = np.frombuffer(json.dumps({**header, "schema": 1, "saved": time.time()}).encode(),
                                      dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)
    cpa = CPA(tmp_path)
    assert {t["theme"]: t["mentions"] for t in cpa.stats()["themes"]} == {"python": 4, "gardening": 1}
    assert pytest.approx(cpa.theme_weights()["python"], rel=1e-6) == 4.0
    assert cpa.state.pairs.used == 0 and cpa.state.items.used == 3
    cpa.observe_access("semantic", ["a", "b"])
    with zipfile.ZipFile(path) as zf:
        assert "pairs.sketch.npy" in zf.namelist()
    assert json.loads(np.load(path, allow_pickle=False)["header"].tobytes())["schema"] == state.SCHEMA


_WORKER = """
import sys, time
from pathlib import Path
from jenova_fast.cpa import CPA
state_dir, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
cpa = CPA(state_dir)
while not go.exists():
    time.sleep(0.005)
for i in range(n):
    cpa.observe_queries([f"shared words {tag}"], match_themes=False)
    cpa.observe_access("episodic", [tag, "common"])
    cpa.observe_topics([tag])
"""


def test_two_processes_observing_at_once_lose_nothing(warm_state: Path, tmp_path: Path) -> None:
    n = 15
    go = tmp_path / "go"
    env = {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(warm_state), tag, str(n), str(go)],
                              env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
             for tag in ("alpha", "omega")]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    stats = CPA(warm_state).stats(top=100)
    top = {c["text"]: c["count"] for c in stats["queries"]["top"]}
    assert stats["queries"]["queries"] == 2 * n
    assert top["shared words"] == 2 * n and top["words alpha"] == n and top["words omega"] == n
    assert stats["memory"]["kinds"]["episodic"] == 4 * n
    items = {c["text"]: c["count"] for c in stats["memory"]["top_items"]}
    assert items == {"episodic:common": 2 * n, "episodic:alpha": n, "episodic:omega": n}
    assert {t["theme"]: t["mentions"] for t in stats["themes"]} == {"alpha": n, "omega": n}
    assert stats["generation"] == 6 * n
