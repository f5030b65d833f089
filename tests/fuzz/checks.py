"""The differential checks the fuzz harnesses run on each input, and the corpus replay test runs on each
seed (no atheris needed here).

Each check drives the real entry points on real files and asserts that the native code, its pure twin and
an independent oracle built on Python's `json` agree: the same record bytes, or the same skip reason. An
AssertionError (or any other exception, or a crash of the native code) is a finding.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast.prepare import _jsonl, _jsonl_py, _pipeline, _pipeline_py
from jenova_fast.prepare.records import (
    FORMATS,
    INT_MAX_DIGITS,
    MAX_DEPTH,
    chat_record,
    insight_answer,
    insight_question,
)
from jenova_fast.prepare.report import SkipReason

CORPUS = Path(__file__).resolve().parent / "corpus"
BOM = b"\xef\xbb\xbf"
WRITER_FORMATS = FORMATS[:4]  # `text` needs a GGUF model's template: not a writer format
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")

Parsed = tuple[str, str, str, "str | None", "str | None"]


def scratch_dir(prefix: str) -> Path:
    """A private directory for the files a check writes, in memory (/dev/shm) where there is one."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def writer_options(data: bytes) -> tuple[str, bool]:
    """The record format and metadata flag an input is written with: from its CRC, so a corpus file is the
    file as it is on disk, with no header, and every format still gets fuzzed."""
    crc = zlib.crc32(data)
    return WRITER_FORMATS[crc % len(WRITER_FORMATS)], bool(crc & 4)


# File names an insight is stored under (picked by the input's CRC): what --with-metadata writes as its path.
NAMES = (
    b"insight.json",
    b"insight_20250701_120000.json",
    "caf\u00e9 \u65e5\u672c \U0001f600.json".encode(),
    b'q"uo\\te\x01\x1f\x7f\n\t.json',
    b"not_utf8_\xff\xfe\xed\xa0\x80.json",
    b"\xe2\x80\xa8line separator.json",
)


def store_options(data: bytes) -> tuple[bytes, int]:
    """The file's name and the run's max_bytes: the input's size, or one byte less (too_large) when its CRC
    says so."""
    crc = zlib.crc32(data)
    return NAMES[(crc >> 3) % len(NAMES)], len(data) - 1 if crc & 0x40 and data else 1 << 20


# --- the oracle: Python's json and the README's rules, restated without the pure twin's code ---


def nesting(text: str) -> int:
    """Deepest [ / { nesting of a valid JSON text (strings taken out first)."""
    deepest = depth = 0
    for ch in _STRINGS.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def oracle_loads(text: str) -> Any:
    """`json.loads` with the two limits the README fixes: integers of at most INT_MAX_DIGITS digits (Python's
    default, which makes json.loads fail) and nesting of at most MAX_DEPTH. Raises ValueError."""
    assert sys.get_int_max_str_digits() == INT_MAX_DIGITS, "the oracle needs Python's default int limit"
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise ValueError("nested too deeply for Python") from exc
    if nesting(text) > MAX_DEPTH:
        raise ValueError("nested more deeply than MAX_DEPTH")
    return value


def oracle_insight(data: bytes) -> Parsed | SkipReason:
    """What parse_insight must give for one file's bytes (README, "Every file Python's json.load reads")."""
    if data.startswith(BOM):  # one BOM, as json.loads of the file's bytes skips it
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return SkipReason.INVALID_UTF8
    try:
        obj = oracle_loads(text)
    except ValueError:
        return SkipReason.INVALID_JSON
    if not isinstance(obj, dict):
        return SkipReason.NOT_OBJECT
    content = obj.get("content")
    if content is None or content == "":
        return SkipReason.NO_CONTENT
    topic = "general" if obj.get("topic") is None else obj["topic"]
    user = "user" if obj.get("user") is None else obj["user"]
    if not all(isinstance(s, str) for s in (content, topic, user)):
        return SkipReason.WRONG_TYPE
    cortex_id, timestamp = obj.get("cortex_id"), obj.get("timestamp")
    return (
        topic,
        content,
        user,
        cortex_id if isinstance(cortex_id, str) else None,
        timestamp if isinstance(timestamp, str) else None,
    )


def oracle_line(record: dict[str, Any]) -> bytes:
    """One output line: compact json.dumps, UTF-8, each lone surrogate as the \\udXXX escape json.dumps
    writes with ensure_ascii."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8") + b"\n"


def assert_line(line: bytes, record: dict[str, Any]) -> None:
    assert line == oracle_line(record), (line, oracle_line(record))
    assert json.loads(line.decode("utf-8")) == record  # valid UTF-8 and JSON that reads back to the record


_py_decoders: list[json.JSONDecoder] = []


def grammar_coverage(data: bytes) -> None:
    """Read `data` with Python's pure-Python JSON scanner, result ignored: the harnesses instrument it, so
    the fuzzer sees which parts of the grammar an input reaches (the C code it tests is not instrumented).
    The decoder is made on the first call, after the harness has instrumented the scanner."""
    if not _py_decoders:
        decoder = json.JSONDecoder()
        decoder.parse_string = json.decoder.py_scanstring  # type: ignore[attr-defined]
        decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
        _py_decoders.append(decoder)
    try:
        _py_decoders[0].decode(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        pass


# --- prepare: parse, escape, write ---


def run_store(
    module: Any, store: Path, fmt: str, metadata: bool, max_bytes: int
) -> tuple[bytes, list[tuple[bytes, str]], int]:
    chunks: list[bytes] = []
    skips: list[Any] = []
    records, stats = module.run(
        [str(store)],
        max_bytes=max_bytes,
        follow_symlinks=False,
        threads=1,
        write=chunks.append,
        on_skip=skips.append,
        progress=lambda *a: None,
        fmt=fmt,
        metadata=metadata,
    )
    assert stats.files_seen == 1
    return b"".join(chunks), [(os.fsencode(os.path.basename(s.path)), s.reason.value) for s in skips], records


def check_insight(data: bytes, store: Path) -> None:
    """One insight file: parse kernels, writers and the whole pipeline, native == pure == oracle."""
    expected = oracle_insight(data)
    native, pure = _pipeline.parse_insight(data), _pipeline_py.parse_insight(data)
    assert native == pure, ("parse_insight: native != pure", native, pure)
    assert pure == expected, ("parse_insight != Python's json", pure, expected)

    fmt, metadata = writer_options(data)
    name, max_bytes = store_options(data)
    for old in os.listdir(store):
        os.unlink(os.path.join(store, old))
    (store / os.fsdecode(name)).write_bytes(data)
    out_native = run_store(_pipeline, store, fmt, metadata, max_bytes)
    out_pure = run_store(_pipeline_py, store, fmt, metadata, max_bytes)
    assert out_native == out_pure, ("run: native != pure", fmt, metadata, out_native, out_pure)
    output, skips, records = out_native
    if len(data) > max_bytes:
        expected = SkipReason.TOO_LARGE
    elif not data:
        expected = SkipReason.EMPTY_FILE
    if isinstance(expected, SkipReason):
        assert (output, skips, records) == (b"", [(name, expected.value)], 0), (out_native, expected)
        return
    topic, content, user, _, timestamp = expected
    meta = ("insights", os.fsdecode(name), timestamp) if metadata else None
    record = chat_record(insight_question(topic), insight_answer(topic, content, user), fmt, meta)
    assert (skips, records) == ([], 1)
    assert_line(output, record)
    for module in (_jsonl, _jsonl_py):
        assert module.format_insight(topic, content, user, fmt, meta) == output
    check_escape(content)


def check_escape(text: str) -> None:
    """The writers' string escape (valid UTF-8 only: the parsers hand it nothing else)."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: written by the surrogate escape path, checked above
        return
    escaped = _jsonl.escape(raw)
    assert escaped == _jsonl_py.escape(raw), (raw, escaped)
    assert escaped == json.dumps(text, ensure_ascii=False)[1:-1].encode("utf-8")


# --- history: prepare's pair reader and writers, the CPA's user_message reader ---


def oracle_history_pairs(data: bytes, name: str, max_line_bytes: int) -> list[Any]:
    """What iter_history_pairs must give: lines split on \\n, one longer than `max_line_bytes` (its newline
    not counted) too_large, blank lines (ASCII whitespace) not entries."""
    out: list[Any] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file ends with a newline: no line after it
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        where = f"{name}:{number}"
        if len(raw) > max_line_bytes:
            out.append((where, SkipReason.TOO_LARGE))
            continue
        if not raw.strip():
            continue
        try:
            obj = oracle_loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append((where, SkipReason.INVALID_UTF8))
            continue
        except ValueError:
            out.append((where, SkipReason.INVALID_JSON))
            continue
        if not isinstance(obj, dict):
            out.append((where, SkipReason.NOT_OBJECT))
            continue
        user, ai = obj.get("user_message"), obj.get("ai_message")
        if user is None or ai is None or user == "" or ai == "":
            out.append((where, SkipReason.INCOMPLETE_PAIR))
        elif not (isinstance(user, str) and isinstance(ai, str)):
            out.append((where, SkipReason.WRONG_TYPE))
        else:
            timestamp = obj.get("timestamp")
            out.append((user, ai, where, timestamp if isinstance(timestamp, str) else None))
    return out


def oracle_cpa_history(data: bytes) -> tuple[list[str], int, dict[str, int]]:
    """What the CPA's read_history must give: texts, their count of timestamps, skips by reason. The file is
    text (UTF-8, undecodable bytes as surrogate escapes) split at \\r\\n, \\r and \\n; a bad line is a skip."""
    text = data.decode("utf-8", "surrogateescape")
    texts: list[str] = []
    skipped: dict[str, int] = {}
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            skipped["invalid JSON"] = skipped.get("invalid JSON", 0) + 1
            continue
        if not isinstance(obj, dict):
            skipped["not a JSON object"] = skipped.get("not a JSON object", 0) + 1
            continue
        msg = obj.get("user_message")
        if not isinstance(msg, str) or not msg.strip():
            skipped["no user_message"] = skipped.get("no user_message", 0) + 1
            continue
        texts.append(msg)
    return texts, len(texts), skipped


def check_history(data: bytes, directory: Path) -> None:
    """One history file through prepare's reader and both writers, and through the CPA's reader."""
    from jenova_fast.cpa.observe import ObserveReport, read_history
    from jenova_fast.prepare.history import iter_history_pairs
    from jenova_fast.prepare.report import Skip

    path = directory / "history.jsonl"
    path.write_bytes(data)
    crc = zlib.crc32(data)
    max_line_bytes = crc % 97 if crc & 0x80 else 1 << 20  # small limits: where the line reader cuts
    got = [(s.path, s.reason) if isinstance(s, Skip) else s for s in iter_history_pairs(path, max_line_bytes)]
    assert got == oracle_history_pairs(data, str(path), max_line_bytes), (max_line_bytes, got)
    fmt, metadata = writer_options(data)
    for item in got:
        if len(item) == 2:
            continue
        user, ai, where, timestamp = item
        meta = ("history", where, timestamp) if metadata else None
        line = _jsonl.format_chat(user, ai, fmt, meta)
        assert line == _jsonl_py.format_chat(user, ai, fmt, meta)
        assert_line(line, chat_record(user, ai, fmt, meta))

    report = ObserveReport("history", str(path))
    texts, times = read_history(path, report)
    expected_texts, n_times, skipped = oracle_cpa_history(data)
    assert (texts, len(times), dict(report.skipped)) == (expected_texts, n_times, skipped)


# --- CPA: tokenizer and counters ---


def queries_of(data: bytes) -> list[str]:
    """Queries from fuzz bytes, one per line: UTF-8 with undecodable bytes as surrogate escapes (what the
    CPA's history reader hands on), or after a leading 0xff byte UTF-16-LE with lone surrogates kept, so
    that any code point is a two-byte mutation away."""
    if data[:1] == b"\xff":
        body = data[1:]
        text = body[: len(body) & ~1].decode("utf-16-le", "surrogatepass")
    else:
        text = data.decode("utf-8", "surrogateescape")
    return text.split("\n")


def _count(pure: bool, queries: list[str], k: int, width: int) -> tuple[int, Any]:
    """The native twin (Numba kernels, counting.py) or the pure one (counting_py.py) on a fresh counter."""
    from jenova_fast.cpa import counting, counting_py
    from jenova_fast.cpa.counters import HeavyHitters

    hh = HeavyHitters(k, 4, width)
    return (counting_py if pure else counting).count_queries(hh, queries), hh


def check_queries(data: bytes) -> None:
    """Native (Numba) tokenizer and counters vs the pure twin vs a Counter reference. Twice: a top-k small
    enough to overflow (the twins must agree on every array) and one large enough to be exact."""
    from jenova_fast.cpa.kernels import OVERFLOWED, REP_START
    from tests.cpa.reference import document_frequency, ngram_counts

    queries = queries_of(data)
    for k, width in ((8, 64), (4096, 4096)):
        (native_words, a), (pure_words, b) = _count(False, queries, k, width), _count(True, queries, k, width)
        assert native_words == pure_words, (queries, native_words, pure_words)
        assert a.meta.tolist() == b.meta.tolist(), (queries, a.meta, b.meta)
        for name in ("sketch", "hashes", "heap"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{name} of {queries!r}")
        np.testing.assert_array_equal(a.slots[:, :REP_START], b.slots[:, :REP_START], err_msg=repr(queries))
        assert a.patterns() == b.patterns(), queries
        if not a.meta[OVERFLOWED]:
            counts, df = ngram_counts(queries), document_frequency(queries)
            got = {p.text: (p.count, p.err, p.df, p.df_err) for p in a.patterns()}
            assert got == {t: (n, 0, df[t], 0) for t, n in counts.items()}, queries
