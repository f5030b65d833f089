"""What the three atheris harnesses share: libFuzzer's arguments with a working corpus, the seed corpus and
the JSON dictionary filled in when they are not given."""

from __future__ import annotations

import json.decoder
import json.scanner
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def fuzz(
    kind: str,
    test_one_input: Callable[[bytes], None],
    *,
    dictionary: bool = True,
    mutator: Callable[[bytes, int, int, Callable[[bytes, int], bytes]], bytes] | None = None,
) -> None:
    """Run libFuzzer over `test_one_input`. Without a corpus directory on the command line, new inputs go
    to a fresh directory under /tmp and the seeds in tests/fuzz/corpus/<kind> are read (never written)."""
    import atheris

    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        work = tempfile.mkdtemp(prefix=f"jf-fuzz-{kind}-")
        print(f"fuzz: new inputs go to {work}", file=sys.stderr)
        argv += [work, str(HERE / "corpus" / kind)]
    if dictionary and not any(arg.startswith("-dict=") for arg in argv):
        argv.append(f"-dict={HERE / 'json.dict'}")
    if kind != "cpa":
        # coverage of the JSON grammar for the mutator: the C extensions are not instrumented, but Python's
        # own pure-Python JSON scanner, which checks.grammar_coverage runs on each input, can be
        atheris.instrument_func(json.scanner.py_make_scanner)
        atheris.instrument_func(json.decoder.py_scanstring)
        atheris.instrument_func(json.decoder.JSONObject)
        atheris.instrument_func(json.decoder.JSONArray)
    if mutator is None:
        atheris.Setup(argv, test_one_input)
    else:
        structured = mutator

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            return structured(data, max_size, seed, atheris.Mutate)

        atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
