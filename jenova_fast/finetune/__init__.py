"""Fine-tune a llama.cpp model on finetune/train.jsonl: render -> train -> evaluate -> install.

Needs the `finetune` extra (`pip install 'jenova-fast[finetune]'`); importing this package does not, so the
error names the fix only when fine-tuning is actually asked for.

- `finetune(FinetuneConfig(...), progress=...) -> FinetuneReport`: the whole loop.
- `install_model(path)` / `rollback()`: atomic install into models/jenova.gguf, previous kept as .prev.
- `write_tiny_model(path)`: a tiny random llama GGUF to try the loop without downloading weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.install import InstallResult, install_model, rollback
from jenova_fast.finetune.pipeline import FinetuneConfig, FinetuneReport, finetune
from jenova_fast.finetune.train_inprocess import Progress

if TYPE_CHECKING:
    from jenova_fast.finetune.tiny_model import write_tiny_model

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneReport",
    "InstallResult",
    "Progress",
    "finetune",
    "install_model",
    "rollback",
    "write_tiny_model",
]


def __getattr__(name: str) -> Any:
    # imported on first use, so `python -m jenova_fast.finetune.tiny_model` does not find it imported already
    if name == "write_tiny_model":
        from jenova_fast.finetune.tiny_model import write_tiny_model

        return write_tiny_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
