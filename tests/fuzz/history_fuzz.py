"""atheris harness: one history JSONL file through prepare's pair reader and both writers, and through the
CPA's history reader, against Python's json. Run: python -m tests.fuzz.history_fuzz -max_total_time=300"""

from __future__ import annotations

import atexit
import shutil

import atheris

with atheris.instrument_imports(include=["jenova_fast", "tests.fuzz.checks"]):
    from tests.fuzz import checks

DIRECTORY = checks.scratch_dir("jf-fuzz-history-")
atexit.register(shutil.rmtree, DIRECTORY, ignore_errors=True)


def test_one_input(data: bytes) -> None:
    checks.grammar_coverage(data)
    checks.check_history(data, DIRECTORY)


if __name__ == "__main__":
    from tests.fuzz.harness import fuzz
    from tests.fuzz.mutate import custom_line_mutator

    fuzz("history", test_one_input, mutator=custom_line_mutator)
