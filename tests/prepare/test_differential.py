"""Points 1 and 6: native and pure agree byte for byte on arbitrary input (hypothesis), and round-trip
arbitrary unicode fields exactly."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jenova_fast.prepare import _jsonl, _jsonl_py, _pipeline, _pipeline_py
from jenova_fast.prepare.records import insight_messages

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_both(files: dict[str, bytes], **options) -> tuple[bytes, list]:
    """Run both implementations on a fresh store of `files`; assert they agree; return the output."""
    root = Path(tempfile.mkdtemp(prefix="jf-diff-"))
    try:
        for name, data in files.items():
            (root / name).write_bytes(data)
        results = []
        for module in (_pipeline, _pipeline_py):
            chunks: list[bytes] = []
            skips: list = []
            records, stats = module.run(
                [str(root)],
                max_bytes=options.get("max_bytes", 1 << 20),
                follow_symlinks=False,
                threads=options.get("threads", 2),
                write=chunks.append,
                on_skip=skips.append,
                progress=lambda *a: None,
            )
            results.append((b"".join(chunks), skips, records, stats.files_seen, stats.bytes_read))
        native, pure = results
        assert native == pure
        return native[0], native[1]
    finally:
        shutil.rmtree(root)


fields = st.text(max_size=60)
insight = st.fixed_dictionaries(
    {"content": st.text(min_size=1, max_size=200)},
    optional={"topic": fields, "user": fields, "timestamp": fields, "cortex_id": st.uuids().map(str)},
)


@SETTINGS
@given(st.lists(st.tuples(insight, st.booleans(), st.sampled_from([None, 4])), min_size=1, max_size=12))
def test_unicode_fields_round_trip_exactly(docs):
    files = {
        f"insight_{i:03d}.json": json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
        for i, (doc, ascii_only, indent) in enumerate(docs)
    }
    output, skips = run_both(files)
    assert skips == []
    lines = output.decode("utf-8").split("\n")
    assert lines[-1] == ""
    expected = [
        insight_messages(doc.get("topic", "general"), doc["content"], doc.get("user", "user")) for doc, _, _ in docs
    ]
    assert [json.loads(line) for line in lines[:-1]] == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
documents = (
    st.dictionaries(st.sampled_from(["content", "topic", "user", "timestamp", "x"]), json_values, max_size=5)
    | json_values
)


@SETTINGS
@given(st.lists(documents, min_size=1, max_size=10))
def test_any_json_document_gets_the_same_verdict(docs):
    files = {f"d{i:03d}.json": json.dumps(doc).encode() for i, doc in enumerate(docs)}
    run_both(files)


MUTATION_BYTES = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"',
        b",",
        b":",
        b"\\",
        b"\\u",
        b"\\ud83d",
        b"\\udc00",
        b"0",
        b"-",
        b"e",
        b"1e999",
        b"\x00",
        b"\x1f",
        b"\x7f",
        b"\x80",
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98\x80",
        b"\xef\xbb\xbf",
        b" ",
        b"\n",
        b"null",
        b"true",
        b"NaN",
    ]
)


@SETTINGS
@given(
    st.lists(
        st.tuples(insight, st.lists(st.tuples(st.integers(0, 10_000), MUTATION_BYTES, st.booleans()), max_size=4)),
        min_size=1,
        max_size=10,
    )
)
def test_damaged_files_get_the_same_verdict(docs):
    files = {}
    for i, (doc, mutations) in enumerate(docs):
        data = bytearray(json.dumps(doc, indent=4, ensure_ascii=bool(i % 2)).encode())
        for position, chunk, replace in mutations:
            at = position % (len(data) + 1)
            data[at : at + (len(chunk) if replace else 0)] = chunk
        files[f"d{i:03d}.json"] = bytes(data)
    run_both(files)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_get_the_same_verdict(data):
    run_both({"x.json": data, "y.json": b'{"content": ' + data + b"}"})


@SETTINGS
@given(st.text(max_size=300))
def test_escaping_matches_json_dumps(text):
    assert _jsonl.escape(text.encode()) == _jsonl_py.escape(text.encode())
    assert _jsonl.format_chat(text, text[::-1]) == _jsonl_py.format_chat(text, text[::-1])
    assert _jsonl.format_insight(text, text, text) == _jsonl_py.format_insight(text, text, text)


def test_threads_do_not_change_the_output(demo_store):
    root, _ = demo_store
    files = {}
    for path in sorted(root.rglob("*.json"))[:600]:
        files[str(path.relative_to(root)).replace("/", "_")] = path.read_bytes()
    outputs = {run_both(files, threads=threads)[0] for threads in (1, 2, 3, 8)}
    assert len(outputs) == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | documents.map(lambda d: json.dumps(d).encode()))
def test_parse_kernels_agree(data):
    assert _pipeline.parse_insight(data) == _pipeline_py.parse_insight(data)


def test_walk_kernels_agree(demo_store):
    root, manifest = demo_store
    for follow in (False, True):
        assert _pipeline.count_files([str(root)], follow) == _pipeline_py.count_files([str(root)], follow)
    assert _pipeline.count_files([str(root)], False) == manifest.insights
