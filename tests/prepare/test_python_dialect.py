"""Every file Python's `json.load` reads gives the reference's record: NaN, Infinity, 1e400, integers of
any size, lone surrogate escapes, duplicate keys. Native (simdjson, then the Python-dialect parser for
what simdjson rejects) and pure agree byte for byte, and both equal the reference script."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jenova_fast
from jenova_fast.prepare import _jsonl, _jsonl_py, _pipeline, _pipeline_py
from jenova_fast.prepare.records import INT_MAX_DIGITS, MAX_DEPTH, insight_messages
from tests.prepare.reference import canonical, read_lines, reference_records

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = "1" * INT_MAX_DIGITS

# name -> file bytes; every one is a record for the reference (checked below, not assumed).
EDGE_RECORDS: dict[str, bytes] = {
    "nan.json": b'{"content": "c", "score": NaN}',
    "infinities.json": b'{"content": "c", "a": Infinity, "b": -Infinity, "c": [NaN, {"d": -Infinity}]}',
    "overflow.json": b'{"content": "c", "x": 1e400, "y": -1E+400, "z": 1.5e-400}',
    "bigint.json": b'{"content": "c", "n": 123456789012345678901234567890, "m": -99999999999999999999}',
    "bigint_limit.json": b'{"content": "c", "n": ' + BIG.encode() + b', "m": -' + BIG.encode() + b"}",
    "bigfloat.json": b'{"content": "c", "n": ' + BIG.encode() + b'1.0, "m": ' + BIG.encode() + b"1e3}",
    "lone_high.json": b'{"content": "before \\ud800 after", "topic": "t"}',
    "lone_low.json": b'{"content": "\\udc00", "user": "u\\udfff"}',
    "reversed_pair.json": b'{"content": "\\ude00\\ud83d", "topic": "\\ud800\\u0041"}',
    "pair_and_lone.json": b'{"content": "\\ud83d\\ude00\\ud83d", "x": "\\udbff"}',
    "surrogate_key.json": b'{"\\ud800": 1, "content": "k"}',
    "duplicates.json": b'{"content": "first", "topic": NaN, "content": "second", "\\u0074opic": "b"}',
    "duplicate_surrogate.json": b'{"content": "\\ud800", "content": "plain", "topic": "\\udead"}',
    "escaped_key.json": b'{"c\\u006fntent": "via escape", "x": Infinity}',
    "all_escapes.json": b'{"content": "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u0000", "n": 0, "f": -0.5e-3}',
    "whitespace.json": b' \t\r\n{ "content" : "ws" , "n" : NaN } \n',
}

# name -> (file bytes, the skip reason); the reference skips each too.
EDGE_SKIPS: dict[str, tuple[bytes, str]] = {
    "int_over_limit.json": (b'{"content": "c", "n": ' + BIG.encode() + b"1}", "invalid_json"),
    "neg_int_over_limit.json": (b'{"content": "c", "n": -' + BIG.encode() + b"1}", "invalid_json"),
    "nan_content.json": (b'{"content": NaN}', "wrong_type"),
    "minus_nan.json": (b'{"content": "c", "n": -NaN}', "invalid_json"),
    "lower_nan.json": (b'{"content": "c", "n": nan}', "invalid_json"),
    "short_inf.json": (b'{"content": "c", "n": Infinit}', "invalid_json"),
    "plus.json": (b'{"content": "c", "n": +1}', "invalid_json"),
    "dot.json": (b'{"content": "c", "n": 1.}', "invalid_json"),
    "leading_dot.json": (b'{"content": "c", "n": .5}', "invalid_json"),
    "leading_zero.json": (b'{"content": "c", "n": 01}', "invalid_json"),
    "bare_exponent.json": (b'{"content": "c", "n": 1e}', "invalid_json"),
    "signed_exponent.json": (b'{"content": "c", "n": 1e+}', "invalid_json"),
    "bad_hex.json": (b'{"content": "\\ud800\\u00zz"}', "invalid_json"),
    "short_escape.json": (b'{"content": "\\ud80"}', "invalid_json"),
    "bad_escape.json": (b'{"content": "\\x41"}', "invalid_json"),
    "control.json": (b'{"content": "a\x1fb", "n": NaN}', "invalid_json"),
    "trailing_comma.json": (b'{"content": "c", "n": NaN,}', "invalid_json"),
    "array_comma.json": (b'{"content": "c", "n": [Infinity,]}', "invalid_json"),
    "extra.json": (b'{"content": "c", "n": NaN} x', "invalid_json"),
    "single_quotes.json": (b"{'content': 'c'}", "invalid_json"),
    "two_boms.json": (b"\xef\xbb\xbf\xef\xbb\xbf" + b'{"content": "c"}', "invalid_json"),
    "nan_array.json": (b"[NaN]", "not_object"),
    "infinity.json": (b"-Infinity", "not_object"),
    "big_scalar.json": (b"1" * 40, "not_object"),
    "encoded_surrogate.json": (b'{"content": "\xed\xa0\x80", "n": NaN}', "invalid_utf8"),
}


def write_store(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def run_module(module, root: Path) -> tuple[bytes, list[tuple[str, str]], int]:
    chunks: list[bytes] = []
    skips: list = []
    records, _ = module.run(
        [str(root)],
        max_bytes=1 << 20,
        follow_symlinks=False,
        threads=2,
        write=chunks.append,
        on_skip=skips.append,
        progress=lambda *a: None,
    )
    return b"".join(chunks), [(Path(s.path).name, s.reason.value) for s in skips], records


def lines_of(output: bytes) -> list[dict]:
    text = output.decode("utf-8")  # valid UTF-8, lone surrogates included
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_edge_files_are_the_reference_records(impl, tmp_path):
    store = write_store(tmp_path / "s", {**EDGE_RECORDS, **{n: d for n, (d, _) in EDGE_SKIPS.items()}})
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(store, out)
    reference = reference_records(store)
    assert len(reference) == len(EDGE_RECORDS)
    assert canonical(read_lines(out)) == canonical(reference)
    assert {Path(s.path).name: s.reason.value for s in report.skips} == {n: r for n, (_, r) in EDGE_SKIPS.items()}


def test_native_and_pure_agree_on_the_edge_files(tmp_path):
    store = write_store(tmp_path / "s", {**EDGE_RECORDS, **{n: d for n, (d, _) in EDGE_SKIPS.items()}})
    native, pure = run_module(_pipeline, store), run_module(_pipeline_py, store)
    assert native == pure
    for data in [*EDGE_RECORDS.values(), *(d for d, _ in EDGE_SKIPS.values())]:
        assert _pipeline.parse_insight(data) == _pipeline_py.parse_insight(data)


def test_lone_surrogates_are_written_as_escapes(impl, tmp_path):
    store = write_store(tmp_path / "s", {"i.json": b'{"content": "a\\ud800b\\uDFFFc", "topic": "\\udbff"}'})
    out = tmp_path / "o.jsonl"
    jenova_fast.prepare(store, out)
    data = out.read_bytes()
    data.decode("utf-8")  # valid UTF-8
    assert data == (
        b'{"messages":[{"role":"user","content":"Hey Jenova, I\'ve been thinking about our conversations on '
        b"'\\udbff'. Can you synthesize your understanding of this for me? What have you learned about my "
        b'perspective on it?"},{"role":"assistant","content":"Of course, user. Based on our discussions, '
        b"I've developed an insight regarding '\\udbff'. My understanding is that: a\\ud800b\\udfffc\"}]}\n"
    )
    assert json.loads(data) == insight_messages("\udbff", "a\ud800b\udfffc", "user")


@pytest.mark.parametrize("module", [_jsonl, _jsonl_py], ids=["native", "pure"])
def test_writers_escape_lone_surrogates_the_same(module):
    text = "x\ud800\U0001f600\udfff\u00e9\ud7ff\ue000"
    expected = _jsonl_py.format_chat(text, text)
    assert module.format_chat(text, text) == expected
    assert module.format_insight(text, text, text) == _jsonl_py.format_insight(text, text, text)
    assert expected.count(b"x\\ud800\xf0\x9f\x98\x80\\udfff\xc3\xa9\xed\x9f\xbf\xee\x80\x80") == 2


def test_utf8_bom_is_read_though_the_reference_loses_the_file(impl, tmp_path):
    """Decided: a UTF-8 byte order mark is skipped before parsing, as `json.loads(path.read_bytes())`
    does; the reference's text-mode `json.load` rejects it and loses the record (README)."""
    good = b'{"content": "with bom", "n": NaN}'
    store = write_store(tmp_path / "s", {"bom.json": b"\xef\xbb\xbf" + good})
    out = tmp_path / "o.jsonl"
    assert jenova_fast.prepare(store, out).records == 1
    assert read_lines(out) == [insight_messages("general", "with bom", "user")]
    assert json.loads(b"\xef\xbb\xbf" + good)["content"] == "with bom"
    assert reference_records(store) == []


def test_nesting_limit_applies_to_python_dialect_files_too(impl, tmp_path):
    files = {}
    for depth in (MAX_DEPTH, MAX_DEPTH + 1):
        nested = b"[" * (depth - 2) + b"NaN" + b"]" * (depth - 2)
        files[f"d{depth}.json"] = b'{"content": "x", "d": [' + nested + b"]}"
    store = write_store(tmp_path / "s", files)
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl")
    assert [(Path(s.path).name, s.reason.value) for s in report.skips] == [(f"d{MAX_DEPTH + 1}.json", "invalid_json")]


def test_history_lines_in_the_python_dialect(impl, tmp_path):
    store = write_store(tmp_path / "s", {"i.json": b'{"content": "c"}'})
    history = tmp_path / "h.jsonl"
    history.write_bytes(
        b'{"user_message": "hi \\ud800", "ai_message": "yo", "score": NaN}\n'
        b'{"user_message": "big", "ai_message": "n", "n": 1e400, "m": 123456789012345678901234567890}\n'
    )
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(store, out, include_history=history)
    assert report.history_records == 2 and report.skips == []
    records = read_lines(out)
    assert records[1]["messages"][0]["content"] == "hi \ud800"
    assert b"hi \\ud800" in out.read_bytes()


# --- differential: hypothesis documents, written as the assistant writes them --------------------------

text_with_surrogates = st.lists(
    st.characters() | st.characters() | st.integers(0xD800, 0xDFFF).map(chr) | st.sampled_from("\"\\\n\t\x00é😀"),
    max_size=30,
).map("".join)
odd_numbers = (
    st.floats()  # NaN, inf, -inf, subnormals
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([1e308, -0.0, 10**400, -(10**600)])
)
ignored_values = st.recursive(
    st.none() | st.booleans() | odd_numbers | text_with_surrogates,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text_with_surrogates, children, max_size=3),
    max_leaves=8,
)
documents = st.fixed_dictionaries(
    {"content": st.integers(0, 3).flatmap(lambda i: ignored_values if i == 0 else text_with_surrogates)},
    optional={
        "topic": text_with_surrogates,
        "user": text_with_surrogates,
        "timestamp": st.just("2025-10-06T14:03:22.123456"),
        "score": odd_numbers,
        "weight": odd_numbers,
        "related_concerns": st.lists(ignored_values, max_size=3),
        "extra": ignored_values,
    },
)
# Duplicate keys: (key, value) pairs written out by hand; topic and user stay strings (the reference
# would print any other type's repr, which this project skips as wrong_type instead).
pairs = st.lists(
    st.tuples(st.just("content"), text_with_surrogates | odd_numbers)
    | st.tuples(st.sampled_from(["topic", "user"]), text_with_surrogates)
    | st.tuples(text_with_surrogates.filter(lambda k: k not in ("content", "topic", "user")), ignored_values),
    min_size=1,
    max_size=6,
)


ascii_mostly = st.sampled_from([True, True, True, False])  # as older versions wrote (ensure_ascii=True)


def encode(doc: object, ascii_only: bool, indent: int | None) -> bytes:
    # json.dump(ensure_ascii=False) of a lone surrogate cannot be written as UTF-8: such a file holds
    # its surrogatepass bytes at worst, which is invalid UTF-8 for everyone.
    return json.dumps(doc, ensure_ascii=ascii_only, indent=indent, allow_nan=True).encode("utf-8", "surrogatepass")


def encode_pairs(items: list[tuple[str, object]], ascii_only: bool) -> bytes:
    body = ", ".join(
        json.dumps(k, ensure_ascii=ascii_only) + ": " + json.dumps(v, ensure_ascii=ascii_only) for k, v in items
    )
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


def check_store(files: dict[str, bytes]) -> None:
    root = Path(tempfile.mkdtemp(prefix="jf-dialect-"))
    try:
        write_store(root, files)
        native, pure = run_module(_pipeline, root), run_module(_pipeline_py, root)
        assert native == pure
        assert canonical(lines_of(native[0])) == canonical(reference_records(root))
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(st.lists(st.tuples(documents, ascii_mostly, st.sampled_from([None, 4])), min_size=1, max_size=8))
def test_documents_match_the_reference(docs):
    check_store({f"i{i:03d}.json": encode(doc, ascii_only, indent) for i, (doc, ascii_only, indent) in enumerate(docs)})


@SETTINGS
@given(st.lists(st.tuples(pairs, ascii_mostly), min_size=1, max_size=8))
def test_duplicate_keys_match_the_reference(docs):
    check_store({f"i{i:03d}.json": encode_pairs(items, ascii_only) for i, (items, ascii_only) in enumerate(docs)})


@settings(max_examples=300, deadline=None)
@given(
    documents.map(lambda d: encode(d, True, None))
    | pairs.map(lambda p: encode_pairs(p, True))
    | st.lists(st.sampled_from([*EDGE_RECORDS.values(), b"NaN", b"-", b"1e", b"\\ud8", b",", b"]"])).map(b"".join)
)
def test_parse_kernels_agree_on_the_python_dialect(data):
    assert _pipeline.parse_insight(data) == _pipeline_py.parse_insight(data)


# --- issue 10's fuzzing findings: native and pure disagreed in three classes -------------------------------


def _nested(depth: int, bottom: bytes, kind: str) -> bytes:
    """A value `depth` levels deep (arrays or objects) with `bottom` inside the innermost one."""
    if kind == "array":
        return b"[" * depth + bottom + b"]" * depth
    return b'{"k": ' * depth + bottom + b"}" * depth


def _findings() -> dict[str, tuple[bytes, str | None]]:
    """name -> (file bytes, its skip reason or None for a record)."""
    bom, good = b"\xef\xbb\xbf", b'{"content": "c"}'
    files: dict[str, tuple[bytes, str | None]] = {
        "bom_1.json": (bom + good, None),
        "bom_2.json": (bom * 2 + good, "invalid_json"),
        "bom_3.json": (bom * 3 + good, "invalid_json"),
        "bom_space_bom.json": (bom + b" " + bom + good, "invalid_json"),
        "space_bom.json": (b" " + bom + good, "invalid_json"),
        "bom_2_nan.json": (bom * 2 + b'{"content": "c", "n": NaN}', "invalid_json"),
        "bom_end.json": (bom + good + bom, "invalid_json"),
    }
    # The object is one level: a value nested MAX_DEPTH - 1 deep inside it reaches the limit exactly.
    for bottom in (b"1", b'"s"', b"null", b"true", b"-0.5e3", b"NaN", b"1e400", b'"\\ud800"', BIG.encode()):
        tag = bottom.decode()[:8].strip('"\\')
        for kind in ("array", "object"):
            for depth, reason in ((MAX_DEPTH - 1, None), (MAX_DEPTH, "invalid_json")):
                nested = _nested(depth, bottom, kind)
                files[f"at_{depth + 1}_{kind}_{tag}.json"] = (b'{"content": "c", "d": ' + nested + b"}", reason)
        # A top-level array at the limit is JSON, but not an insight; one level more is not read at all.
        files[f"top_at_limit_{tag}.json"] = (_nested(MAX_DEPTH, bottom, "array"), "not_object")
        files[f"top_over_limit_{tag}.json"] = (_nested(MAX_DEPTH + 1, bottom, "array"), "invalid_json")
    # A duplicate key's earlier value: gone from the dict, but read (and limited) as part of the document.
    for key in ("content", "topic", "extra"):
        later = b'"c"' if key == "content" else b'"t"'
        first = b'{"content": "c", ' if key != "content" else b"{"
        for name, value, reason in (
            ("nan", b"NaN", None),
            ("inf", b"-Infinity", None),
            ("overflow", b"1e400", None),
            ("surrogate", b'"\\udc00"', None),
            ("nested_nan", b'[{"a": NaN}]', None),
            ("at_limit", _nested(MAX_DEPTH - 1, b"1", "array"), None),
            ("over_limit", _nested(MAX_DEPTH, b"1", "array"), "invalid_json"),
            ("over_limit_object", _nested(MAX_DEPTH, b"NaN", "object"), "invalid_json"),
            ("big_int", BIG.encode() + b"1", "invalid_json"),
        ):
            key_bytes = json.dumps(key).encode()
            data = first + key_bytes + b": " + value + b", " + key_bytes + b": " + later + b"}"
            files[f"dup_{key}_{name}.json"] = (data, reason)
    inner_dup = b'{"k": ' + _nested(MAX_DEPTH - 1, b"1", "object") + b', "k": 1}'
    files["dup_inner_over_limit.json"] = (b'{"content": "c", "d": ' + inner_dup + b"}", "invalid_json")
    return files


FINDINGS = _findings()


def test_fuzz_findings_native_and_pure_agree(impl, tmp_path):
    """Repeated BOMs, nesting exactly at the limit with a scalar at the bottom, and a duplicate key whose
    earlier value the twin would have rejected on its own: the same records and skip reasons in both."""
    store = write_store(tmp_path / "s", {name: data for name, (data, _) in FINDINGS.items()})
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(store, out)
    expected_skips = {name: reason for name, (_, reason) in FINDINGS.items() if reason is not None}
    assert {Path(s.path).name: s.reason.value for s in report.skips} == expected_skips
    assert report.records == len(FINDINGS) - len(expected_skips) == len(read_lines(out))


def test_fuzz_findings_follow_python_json(tmp_path):
    """Python's json is the truth: each record is json.loads's object; each skip is a file json.loads rejects,
    or one nested deeper than MAX_DEPTH (the fixed limit, README), or not an object. Both kernels agree."""
    for name, (data, reason) in FINDINGS.items():
        native, pure = _pipeline.parse_insight(data), _pipeline_py.parse_insight(data)
        assert native == pure, name
        try:
            parsed = json.loads(data)
        except ValueError:
            assert reason == "invalid_json", name
            continue
        if reason is None:
            assert native[1] == parsed["content"], name
        elif reason == "not_object":
            assert not isinstance(parsed, dict), name
        else:
            assert reason == "invalid_json", name
            assert b"[" * MAX_DEPTH in data or b'{"k": ' * MAX_DEPTH in data, name
