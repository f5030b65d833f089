"""prepare: an insight store into `finetune/train.jsonl` (walk → read → parse → write)."""

import sys
import types
from typing import Any

from jenova_fast.prepare.api import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_OUTPUT,
    Progress,
    insight_topics,
    iter_insights,
    iter_records,
    prepare,
)
from jenova_fast.prepare.output import OutputError
from jenova_fast.prepare.records import Insight
from jenova_fast.prepare.report import PrepareReport, Skip, SkipReason
from jenova_fast.prepare.stores import StoreNotFoundError, insight_time, resolve_roots

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_OUTPUT",
    "Insight",
    "OutputError",
    "PrepareReport",
    "Progress",
    "Skip",
    "SkipReason",
    "StoreNotFoundError",
    "insight_time",
    "insight_topics",
    "iter_insights",
    "iter_records",
    "prepare",
    "resolve_roots",
]


class _Package(types.ModuleType):
    """`jenova_fast.prepare(...)`, the README's one-liner, calls prepare(): the package and the function
    share a name, and once the package is imported it is what `jenova_fast.prepare` names."""

    def __call__(self, *args: Any, **kwargs: Any) -> PrepareReport:
        return prepare(*args, **kwargs)


sys.modules[__name__].__class__ = _Package
