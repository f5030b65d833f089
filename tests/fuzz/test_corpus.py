"""The fuzz seed corpus (and every finding saved into it) replayed through the harnesses' differential
checks, without atheris: native == pure == Python's json on each file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import checks


def _seeds(kind: str) -> list[Path]:
    return sorted((checks.CORPUS / kind).iterdir())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("seed", _seeds("prepare"), ids=lambda p: p.name)
def test_prepare_seed(seed: Path, tmp_path: Path) -> None:
    checks.check_insight(seed.read_bytes(), tmp_path)


@pytest.mark.parametrize("seed", _seeds("history"), ids=lambda p: p.name)
def test_history_seed(seed: Path, tmp_path: Path) -> None:
    checks.check_history(seed.read_bytes(), tmp_path)


def test_cpa_seeds() -> None:
    """One test for all of them: the first call compiles the Numba kernels (seconds)."""
    for seed in _seeds("cpa"):
        checks.check_queries(seed.read_bytes())
