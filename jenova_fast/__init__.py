"""jenova_fast: the fast, trustworthy path from a Jenova AI insight store to a fine-tuned model.

Public API (typed, never prints; progress goes to a callback, messages to `logging`):

- `prepare(...) -> PrepareReport`: an insight store into `train.jsonl`.
- `iter_records(...)`: the same records as dicts, for pipelines that consume them directly.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jenova_fast.prepare import PrepareReport, iter_records, prepare

__all__ = ["PrepareReport", "__version__", "iter_records", "prepare"]


def __getattr__(name: str) -> Any:
    """Loaded on first use, so that `import jenova_fast.cpa` loads no part of prepare (and vice versa)."""
    if name in ("PrepareReport", "iter_records", "prepare"):
        import jenova_fast.prepare as package  # callable: package(...) is prepare(...)

        return package if name == "prepare" else getattr(package, name)
    raise AttributeError(f"module 'jenova_fast' has no attribute {name!r}")
