"""The patched engine, as `jenova-fast engine build` left it in the cache (the README's test command builds it
first); without it these tests skip, naming the command."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def patched() -> object:
    pytest.importorskip("llama_cpp", reason="the finetune extra is not installed")
    from jenova_fast.engine import build, load

    if build.find() is None:
        pytest.skip("the patched engine is not built: run `jenova-fast engine build`")
    return load("patched")
