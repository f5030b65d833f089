"""Shared fixtures: every prepare test runs against the native pipeline and its pure-Python twin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IMPLEMENTATIONS = ("native", "pure")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Selects the implementation for in-process calls and for `run_cli` subprocesses."""
    if request.param == "pure":
        monkeypatch.setenv("JENOVA_FAST_PURE", "1")
    else:
        monkeypatch.delenv("JENOVA_FAST_PURE", raising=False)
        import jenova_fast.prepare._pipeline  # noqa: F401  (the native build must be there)
    return request.param


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    **kwargs: object,
) -> subprocess.CompletedProcess[str]:
    """`python -m jenova_fast ...` in a subprocess, with this process's environment (and implementation)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "jenova_fast", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
