"""Regression benchmarks for the CPA kernels (pytest-benchmark): `pytest benchmarks --benchmark-only`.

Kernels load from a Numba cache kept in a session temp state dir; inputs are the seeded queries of
`benchmarks.bench_cpa`. The peer comparison with ratios is `python -m benchmarks.bench_cpa`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_cpa import make_queries
from jenova_fast.cpa import CPA, counters, reference, state
from jenova_fast.cpa._impl import counting


@pytest.fixture(scope="module")
def cpa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench") / ".cpa_state"


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return make_queries(20_000)


@pytest.fixture(scope="module")
def warm(cpa_dir: Path, queries: list[str]) -> CPA:
    cpa = CPA(cpa_dir)
    cpa.observe_queries(queries[:10])  # compile (or load) the kernels once
    cpa.observe_access("semantic", ["a", "b"])
    return cpa


def test_count_queries(benchmark, warm: CPA, queries: list[str]) -> None:
    def run() -> int:
        hh = counters.HeavyHitters(4096, 4, 1 << 14)
        return counting().count_queries(hh, queries, warm.state_dir)

    words = benchmark(run)
    assert words > 10 * len(queries) // 2


def test_count_items(benchmark, warm: CPA) -> None:
    keys = [f"episodic:{i % 5000}" for i in range(100_000)]

    def run() -> int:
        hh = counters.HeavyHitters(2048, 4, 1 << 14)
        counting().count_items(hh, counting().item_hashes(keys, warm.state_dir), keys, warm.state_dir)
        return hh.total

    assert benchmark(run) == len(keys)


def test_state_save(benchmark, warm: CPA, queries: list[str], tmp_path: Path) -> None:
    warm.observe_queries(queries)
    benchmark(state.write, tmp_path / state.STATE_FILE, warm.state)


def test_state_load(benchmark, warm: CPA, tmp_path: Path) -> None:
    path = tmp_path / state.STATE_FILE
    state.write(path, warm.state)
    loaded = benchmark(state.read, path)
    assert np.array_equal(loaded.ngrams.sketch, warm.state.ngrams.sketch)


def test_stats_ranking(benchmark, warm: CPA, queries: list[str]) -> None:
    """`stats()`: every tracked n-gram scored by keyness (reference tables already read), function words
    left out, candidate themes."""
    warm.observe_queries(queries)
    stats = benchmark(warm.stats, 20)
    assert len(stats["queries"]["top"]) == 20 and stats["queries"]["ranked_by"] == "keyness"


@pytest.mark.parametrize("lang", reference.LANGUAGES)
def test_reference_table_load(benchmark, lang: str) -> None:
    """One reference table read and parsed from the package, as the first `stats` of a process does."""
    table = benchmark(reference.table.__wrapped__, lang)
    assert len(table) > 25_000
