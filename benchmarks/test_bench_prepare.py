"""Regression benchmarks of prepare's kernels, native against pure: `pytest benchmarks --benchmark-only`.

walk = names only (count_files), parse = one insight's bytes to fields, escape = rendering one record,
pipeline = the whole run over a small store (walk + read + parse + write).
"""

from __future__ import annotations

import json
from pathlib import Path

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
