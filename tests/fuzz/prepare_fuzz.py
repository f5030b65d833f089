"""atheris harness: one insight file's bytes through the native parse/escape/write path and the pure twin,
against Python's json (tests/fuzz/checks.py). Run: python -m tests.fuzz.prepare_fuzz -max_total_time=600"""

from __future__ import annotations

import atexit
import shutil

import atheris

with atheris.instrument_imports(include=["jenova_fast", "tests.fuzz.checks"]):
    from tests.fuzz import checks

STORE = checks.scratch_dir("jf-fuzz-store-")
atexit.register(shutil.rmtree, STORE, ignore_errors=True)


def test_one_input(data: bytes) -> None:
    checks.grammar_coverage(data)
    checks.check_insight(data, STORE)


if __name__ == "__main__":
    from tests.fuzz.harness import fuzz
    from tests.fuzz.mutate import custom_mutator

    fuzz("prepare", test_one_input, mutator=custom_mutator)
