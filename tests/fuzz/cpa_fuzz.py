"""atheris harness: queries of random Unicode text through the CPA's Numba tokenizer and counters and their
pure twins, against a Counter reference. Run: python -m tests.fuzz.cpa_fuzz -max_total_time=300"""

from __future__ import annotations

import atheris

from jenova_fast.cpa import kernels  # noqa: F401  (Numba compiles these from their bytecode: not instrumented)

with atheris.instrument_imports(include=["jenova_fast", "tests.fuzz.checks", "tests.cpa.reference"]):
    from jenova_fast.cpa import counting, counting_py, kernels_py  # noqa: F401
    from tests.cpa import reference  # noqa: F401
    from tests.fuzz import checks


def test_one_input(data: bytes) -> None:
    checks.check_queries(data)


if __name__ == "__main__":
    from tests.fuzz.harness import fuzz

    checks.check_queries(b"warm up: compile the kernels before the clock starts")
    fuzz("cpa", test_one_input, dictionary=False)
