"""Numba's cache lives in the state dir; a new process loads it and warm-starts before its first observe."""

from __future__ import annotations

import json
from pathlib import Path

from jenova_fast.cpa import jit_cache, kernels
from tests.cpa.conftest import run_python

_FIRST_OBSERVE = """
import json, sys, time
from jenova_fast.cpa import CPA, jit_cache
t0 = time.perf_counter()
cpa = CPA(sys.argv[1])
t1 = time.perf_counter()
lines_before = len(jit_cache.read_history(cpa.state_dir)[0])
cpa.observe_queries(["first observe after start"])
cpa.observe_access("semantic", ["a", "b"])
print(json.dumps({"warmed": cpa.warmed, "lines_before": lines_before,
                  "lines_after": len(jit_cache.read_history(cpa.state_dir)[0])}))
"""


def test_cold_process_compiled_into_the_state_dir(compiled_state: Path) -> None:
    records, skipped = jit_cache.read_history(compiled_state)
    assert skipped == 0
    cold = [r for r in records if r["cache"] == "miss"]
    assert {r["kernel"] for r in cold} == set(kernels.SIGNATURES)
    for r in cold:
        assert r["signature"] == str(kernels.SIGNATURES[r["kernel"]])
        assert r["seconds"] > 0 and r["numba"] and r["cpu"] and r["ts"] > 0
    files = list((compiled_state / "numba_cache").rglob("*.nbi"))
    assert {f.name.split("-")[0].removeprefix("kernels.") for f in files} == set(kernels.SIGNATURES)


def test_second_process_loads_from_cache_before_first_observe(warm_state: Path) -> None:
    proc = run_python(_FIRST_OBSERVE, str(warm_state))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["warmed"] == sorted(kernels.SIGNATURES)
    # every kernel was loaded by CPA(); the observe calls themselves added no compile records
    assert out["lines_after"] == out["lines_before"]
    records, _ = jit_cache.read_history(warm_state)
    new = records[-len(kernels.SIGNATURES):]
    assert {r["kernel"] for r in new} == set(kernels.SIGNATURES)
    assert all(r["cache"] == "hit" for r in new)
    assert len({r["pid"] for r in new}) == 1


def test_unreadable_history_lines_are_skipped(warm_state: Path) -> None:
    with open(warm_state / jit_cache.HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write("not json\n[1, 2]\n")
    records, skipped = jit_cache.read_history(warm_state)
    assert skipped == 2 and records

