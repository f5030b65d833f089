"""Fixtures for the fine-tuning tests: tiny models made on the spot, chat data, one shared training run.

Everything is real: GGUF files written by the `gguf` package, quantized by gguf (Q8_0) or by llama.cpp
itself (Q4_K_M, which gguf cannot produce in Python), trained by libllama through llama-cpp-python.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

TOPICS = ["sleep", "coffee", "running", "python", "gardening", "music", "reading", "budget", "cooking", "travel"]
EFFECTS = ["helps", "hurts", "improves", "changes", "shapes"]
OBJECTS = ["my focus", "my mood", "my energy", "my evenings", "my mornings", "my work"]


def chat_records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Short insight-like conversations with a learnable structure (so held-out loss can fall)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        topic, effect, obj = rng.choice(TOPICS), rng.choice(EFFECTS), rng.choice(OBJECTS)
        records.append({"messages": [
            {"role": "user", "content": f"What have you learned about {topic}?"},
            {"role": "assistant", "content": f"I learned that {topic} {effect} {obj}."},
        ]})
    return records


def write_jsonl(path: Path, records: list[Any], extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


N_RECORDS = 120  # about 12k tokens: 85 steps per epoch at n_ctx 256
TRAIN_SETTINGS = {"n_ctx": 256, "lr": 2e-3, "epochs": 2, "eval_fraction": 0.1}


@pytest.fixture(scope="session", autouse=True)
def ft_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's folder; working copies go to a cache inside it ($XDG_CACHE_HOME), never the user's, which
    lends it only the patched engine it built (`jenova-fast engine build`), if any."""
    import os

    from jenova_fast import _fs

    root = tmp_path_factory.mktemp("finetune")
    engine = _fs.cache_home() / "engine"
    before = {key: os.environ.get(key) for key in ("XDG_CACHE_HOME", "JENOVA_FAST_CACHE")}
    os.environ.pop("JENOVA_FAST_CACHE", None)
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    if engine.is_dir():
        (root / "cache" / "jenova-fast").mkdir(parents=True)
        (root / "cache" / "jenova-fast" / "engine").symlink_to(engine)
    yield root
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_base(ft_root: Path) -> Path:
    from jenova_fast.finetune.tiny_model import write_tiny_model

    return write_tiny_model(ft_root / "bases" / "tiny-base.gguf")


@pytest.fixture(scope="session")
def chat_jsonl(ft_root: Path) -> Path:
    return write_jsonl(ft_root / "data" / "train.jsonl", chat_records(N_RECORDS))


@pytest.fixture(scope="session")
def small_chat_jsonl(ft_root: Path) -> Path:
    """About 30 steps per epoch: enough to see a quantized base learn."""
    return write_jsonl(ft_root / "data" / "small.jsonl", chat_records(40, seed=2))


@pytest.fixture(scope="session")
def q8_base(ft_root: Path, tiny_base: Path) -> Path:
    """The tiny model with every weight matrix in Q8_0 (quantized by the gguf package)."""
    import gguf
    import numpy as np

    from jenova_fast.finetune.metadata import rewrite_gguf

    q8 = gguf.GGMLQuantizationType.Q8_0

    def quantize(name: str, ggml_type: Any, data: np.ndarray) -> tuple[Any, Any, Any, Any]:
        if data.ndim == 2:
            packed = gguf.quantize(data, q8)
            return packed.shape, np.uint8, lambda: packed, q8
        return data.shape, data.dtype, lambda: data, None

    file_type = (int(gguf.LlamaFileType.MOSTLY_Q8_0), gguf.GGUFValueType.UINT32)
    return rewrite_gguf(tiny_base, ft_root / "bases" / "tiny-q8_0.gguf", tensor_rewrite=quantize,
                        set_from={"general.file_type": file_type})


@pytest.fixture(scope="session")
def q4k_base(ft_root: Path) -> Path:
    """A Q4_K_M model, quantized by llama.cpp (gguf can dequantize Q4_K but not produce it); rows of 256
    so the K-quants apply, like the seed's phi-2.Q4_K_M.gguf."""
    import llama_cpp.llama_cpp as lc

    from jenova_fast.finetune.tiny_model import write_tiny_model

    f32 = write_tiny_model(ft_root / "bases" / "tiny256.gguf", n_embd=256, n_ff=256, n_layer=1, n_head=4)
    out = ft_root / "bases" / "tiny256-Q4_K_M.gguf"
    params = lc.llama_model_quantize_default_params()
    params.ftype = lc.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    assert lc.llama_model_quantize(str(f32).encode(), str(out).encode(), params) == 0
    return out


@pytest.fixture(scope="session")
def trained(ft_root: Path, tiny_base: Path, chat_jsonl: Path) -> Any:
    """One real training run of the tiny model, shared by the tests that inspect its result."""
    from jenova_fast.finetune import FinetuneConfig, finetune

    progress: list[Any] = []
    work = ft_root / "run"
    report = finetune(
        FinetuneConfig(base=tiny_base, data=chat_jsonl, out=work / "models" / "jenova.gguf",
                       models_dir=work / "models", report=work / "report.json", **TRAIN_SETTINGS),
        progress=progress.append,
    )
    return report, progress
