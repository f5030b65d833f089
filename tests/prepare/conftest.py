from __future__ import annotations

from pathlib import Path

import pytest

from jenova_fast.demo import Manifest, write_store


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("demo") / "store"
    return root, write_store(root, 1500, seed=7)
