"""prepare: an insight store into `finetune/train.jsonl` (walk → read → parse → write)."""

from jenova_fast.prepare.api import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_OUTPUT,
    Progress,
    iter_insights,
    iter_records,
    prepare,
)
from jenova_fast.prepare.output import OutputError
from jenova_fast.prepare.records import Insight
from jenova_fast.prepare.report import PrepareReport, Skip, SkipReason
from jenova_fast.prepare.stores import StoreNotFoundError, resolve_roots

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
    "iter_insights",
    "iter_records",
    "prepare",
    "resolve_roots",
]
