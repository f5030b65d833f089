"""CPA fixtures: both implementations, and one Numba compile per session (in a subprocess whose cache
every later process and this one load)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cpa(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m jenova_fast.cpa ...` in a subprocess with this process's environment."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "jenova_fast.cpa", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_python(code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(params=("native", "pure"))
def cpa_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, compiled_state: Path) -> str:
    if request.param == "pure":
        monkeypatch.setenv("JENOVA_FAST_PURE", "1")
    else:
        monkeypatch.delenv("JENOVA_FAST_PURE", raising=False)
    return request.param


@pytest.fixture(scope="session")
def compiled_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose Numba cache a cold subprocess filled (every kernel compiled once)."""
    state = tmp_path_factory.mktemp("compiled") / ".cpa_state"
    inputs = state.parent
    (inputs / "h.jsonl").write_text('{"user_message": "warm up the kernels"}\n', encoding="utf-8")
    (inputs / "a.jsonl").write_text('{"kind": "semantic", "id": "x", "ts": 1}\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("JENOVA_FAST_PURE", "NUMBA_DISABLE_JIT")}
    proc = subprocess.run([sys.executable, "-m", "jenova_fast.cpa", "observe", "--state-dir", str(state),
                           "--history", str(inputs / "h.jsonl"), "--access-log", str(inputs / "a.jsonl")],
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    # this process loads the same kernels from that cache instead of compiling them again
    from jenova_fast.cpa import jit_cache, kernels

    jit_cache.bind(state)
    for name in kernels.SIGNATURES:
        jit_cache.ensure(name, None)
    return state


@pytest.fixture
def warm_state(compiled_state: Path, tmp_path: Path) -> Path:
    """A fresh state dir with a copy of the compiled cache and its history (so processes warm-start)."""
    state = tmp_path / ".cpa_state"
    state.mkdir()
    shutil.copytree(compiled_state / "numba_cache", state / "numba_cache")
    shutil.copytree(compiled_state / "tables", state / "tables")
    shutil.copy(compiled_state / "compile_history.jsonl", state / "compile_history.jsonl")
    return state
