from __future__ import annotations

from pathlib import Path

import pytest

from jenova_fast.demo import Manifest, write_store


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("demo") / "store"
    return root, write_store(root, 1500, seed=7)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 460 KB llama GGUF with a chat template: the tokenizer and template of --format text/--max-tokens."""
    pytest.importorskip("llama_cpp", reason="the finetune extra (llama-cpp-python) is not installed")
    from jenova_fast.finetune.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
