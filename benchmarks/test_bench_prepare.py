"""Regression benchmarks of prepare's kernels, native against pure: `pytest benchmarks --benchmark-only`.

walk = names only (count_files), parse = one insight's bytes to fields, escape = rendering one record,
pipeline = the whole run over a small store (walk + read + parse + write); parse_python_dialect = a file
only Python's json reads; minhash_signatures = --dedup near's kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jenova_fast.demo import write_store
from jenova_fast.prepare import _jsonl, _jsonl_py, _pipeline, _pipeline_py

IMPLEMENTATIONS = {"native": (_pipeline, _jsonl), "pure": (_pipeline_py, _jsonl_py)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "store"
    write_store(root, 5000, seed=11)
    return root


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest):
    return IMPLEMENTATIONS[request.param]


SAMPLE = json.dumps(
    {
        "topic": "café ☕ culture",
        "content": 'The user prefers "quiet" mornings,\n long walks 😀. ' * 6,
        "user": "josé",
        "timestamp": "2025-10-06T14:03:22.123456",
        "related_concerns": [],
        "cortex_id": "0b7e9d1c-8d0e-4a53-9f0e-2f6c1f3e7a11",
    },
    indent=4,
    ensure_ascii=True,
).encode()


def test_walk(benchmark, impl, store):
    pipeline, _ = impl
    assert benchmark(pipeline.count_files, [str(store)], False) == 5000


def test_parse(benchmark, impl):
    pipeline, _ = impl
    topic, content, user, _, _ = benchmark(pipeline.parse_insight, SAMPLE)
    assert (topic, user) == ("café ☕ culture", "josé") and content.endswith("😀. ")


def test_escape_and_render(benchmark, impl):
    _, jsonl = impl
    line = benchmark(jsonl.format_insight, "café ☕ culture", 'The user prefers "quiet" mornings,\n 😀. ' * 6, "josé")
    assert line.endswith(b"\n") and json.loads(line)


def test_pipeline(benchmark, impl, store):
    pipeline, _ = impl

    def run() -> int:
        out: list[bytes] = []
        records, _ = pipeline.run(
            [str(store)],
            max_bytes=1 << 24,
            follow_symlinks=False,
            threads=2,
            write=out.append,
            on_skip=lambda s: None,
            progress=lambda *a: None,
        )
        return records

    assert benchmark(run) == 5000 - 25


PYTHON_DIALECT = SAMPLE.replace(
    b'"related_concerns": []', b'"related_concerns": [NaN, 1e400, 123456789012345678901234567890]'
)


def test_parse_python_dialect(benchmark, impl):
    """A file simdjson rejects: the native side pays simdjson's rejection plus the Python-dialect parser."""
    pipeline, _ = impl
    topic, _, user, _, _ = benchmark(pipeline.parse_insight, PYTHON_DIALECT)
    assert (topic, user) == ("café ☕ culture", "josé")


@pytest.fixture(scope="module")
def texts() -> tuple[bytes, np.ndarray]:
    from jenova_fast.demo import WORDS
    from jenova_fast.prepare.dedup import normalize

    rng = np.random.default_rng(5)
    encoded = [normalize(" ".join(rng.choice(WORDS, size=int(rng.integers(10, 80))))).encode() for _ in range(2000)]
    starts = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in encoded], out=starts[1:])
    return b"".join(encoded), starts


@pytest.mark.parametrize("kernels", ["minhash", "minhash_py"])
def test_minhash_signatures(benchmark, texts, kernels):
    """--dedup near: 128-permutation MinHash signatures of 2,000 texts of 10-80 words (Numba vs its twin)."""
    import importlib

    module = importlib.import_module(f"jenova_fast.prepare.{kernels}")
    from jenova_fast.prepare.minhash_py import permutations

    a, b = permutations()
    data, starts = texts
    module.signatures(data, starts[:2], a, b)  # compiled (or loaded from the cache) before timing
    sig = benchmark(module.signatures, data, starts, a, b)
    assert sig.shape == (2000, 128)
