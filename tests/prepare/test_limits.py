"""Limits (issue 10, item 6), native and pure: deep nesting, long paths, wide directories under a low
open-file limit, JSON nested 100,000 deep, history lines too long to hold. Each is read, or skipped with a
named reason, never a crash, a hang or a traceback. The full-size cases (1M files, a 1 GB history, a 2 GB
line) are in benchmarks/limits.py."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jenova_fast.prepare.history import bounded_lines, iter_history_pairs
from jenova_fast.prepare.report import Skip, SkipReason
from tests.conftest import run_cli

DEEP_JSON = b'{"content": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _insight(content: str, topic: str = "t") -> str:
    return json.dumps({"content": content, "topic": topic})


def _nest(root: Path, names: list[str], file_every: int | None = None) -> list[str]:
    """Directories `names[0]/names[1]/...` under `root`, made relative to each parent's fd (the whole path
    may be longer than PATH_MAX); an insight at the bottom, and every `file_every` levels. Returns the
    contents written, in the order prepare writes them."""
    contents = []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth, name in enumerate(names, 1):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if depth == len(names) or (file_every and depth % file_every == 0):
                # "a.json" sorts before every directory name used here: written before the levels below
                text = f"level {depth}"
                out = os.open("a.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, _insight(text).encode())
                os.close(out)
                contents.append(text)
    finally:
        os.close(fd)
    return contents


@pytest.fixture
def deep_store(tmp_path: Path) -> Iterator[Path]:
    """An empty store removed with rm -rf afterwards: pytest's own cleanup (shutil.rmtree) recurses once per
    level and fails at 2,000 deep."""
    store = tmp_path / "store"
    store.mkdir()
    yield store
    subprocess.run(["rm", "-rf", "--", str(store)], check=True)


def _records(path: Path) -> list[str]:
    """Each record's answer: the insight's content (after the reference's wording), or a history ai_message."""
    answers = [json.loads(line)["messages"][1]["content"] for line in path.read_text(encoding="utf-8").splitlines()]
    return [a.rpartition("My understanding is that: ")[2] for a in answers]


def _prepare(store: Path, out: Path, *args: str, **kwargs: object):
    proc = run_cli("prepare", "--insights-dir", store, "--output", out, "--report", out.with_suffix(".report.json"),
                   "--quiet", *args, **kwargs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(out.with_suffix(".report.json").read_text(encoding="utf-8"))


def _open_file_limit(soft: int):
    """preexec_fn: the child runs under a soft limit of `soft` open files (the hard limit as it is)."""
    def apply() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def test_directories_nested_2000_deep(impl, tmp_path, deep_store):
    store = deep_store
    expected = _nest(store, ["d"] * 2000, file_every=500)
    proc, report = _prepare(store, tmp_path / "out.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == expected and report["skipped"] == {}


@pytest.mark.skipif(resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096,
                    reason="needs a hard open-file limit of 4,096 or more")
def test_2000_deep_under_the_common_soft_limit_of_1024_open_files(impl, tmp_path, deep_store):
    """The walk holds a directory fd per level: the soft limit is raised to the hard one first."""
    store = deep_store
    expected = _nest(store, ["d"] * 2000)
    proc, report = _prepare(store, tmp_path / "out.jsonl", preexec_fn=_open_file_limit(1024))
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == expected and report["skipped"] == {}


def test_many_directories_under_a_low_open_file_limit(impl, tmp_path):
    """A store of many one-file directories put a directory fd in each batch item in flight: under a soft
    limit of 1,024 (hard as well) the native walk lost most of 30,000 such files as `unreadable`."""
    store = tmp_path / "store"
    for i in range(3000):
        (store / f"t{i:04d}").mkdir(parents=True)
        (store / f"t{i:04d}" / "insight.json").write_text(_insight(f"c{i}"), encoding="utf-8")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    proc, report = _prepare(store, tmp_path / "out.jsonl", "--threads", "2", preexec_fn=low_limit)
    assert proc.returncode == 0, proc.stderr
    assert report["skipped"] == {}
    assert _records(tmp_path / "out.jsonl") == [f"c{i}" for i in range(3000)]


@pytest.mark.parametrize("length", [4000, 9000])
def test_long_paths(impl, tmp_path, length):
    """A 4,000-byte path, and one over PATH_MAX (4,096): every name is opened relative to its directory.
    The pure twin used whole paths: past PATH_MAX it dropped the directories below without a word."""
    store = tmp_path / "store"
    store.mkdir()
    per_level = 200
    levels = (length - len(str(store))) // (per_level + 1)
    names = [f"z{i:03d}" + "n" * (per_level - 4) for i in range(levels)]  # after "a.json"
    expected = _nest(store, names, file_every=1)
    proc, report = _prepare(store, tmp_path / "out.jsonl", "--with-metadata")
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == expected and report["skipped"] == {}
    deepest = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert len(str(store)) + 1 + len(deepest["metadata"]["path"]) >= length - per_level


def test_many_files_in_one_directory(impl, tmp_path):
    """Small-scale twin of benchmarks/limits.py's 1M-file directory: sorted, all read."""
    store = tmp_path / "store"
    store.mkdir()
    for i in range(20_000):
        (store / f"{i:05d}.json").write_text(_insight(f"c{i}"), encoding="utf-8")
    proc, report = _prepare(store, tmp_path / "out.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert report["records"] == 20_000 and report["skipped"] == {}
    assert _records(tmp_path / "out.jsonl") == [f"c{i}" for i in range(20_000)]


def test_json_nested_100000_deep_is_invalid_json(impl, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text(_insight("before"), encoding="utf-8")
    (store / "b.json").write_bytes(DEEP_JSON)
    (store / "c.json").write_bytes(b'{"content": "deep object", "x": ' + b'{"k": ' * 100_000 + b"1" + b"}" * 100_000
                                   + b"}")
    (store / "d.json").write_text(_insight("after"), encoding="utf-8")
    proc, report = _prepare(store, tmp_path / "out.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == ["before", "after"]
    assert {s["path"]: s["reason"] for s in report["skips"]} == {
        str(store / "b.json"): "invalid_json", str(store / "c.json"): "invalid_json"}


def _history(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _pair(n: int) -> bytes:
    return json.dumps({"user_message": f"q{n}", "ai_message": f"a{n}"}).encode()


def test_history_line_nested_100000_deep(impl, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    history = _history(tmp_path / "h.jsonl", [_pair(1), b'{"user_message": ' + b"[" * 100_000 + b"]" * 100_000
                                              + b', "ai_message": "x"}', _pair(3)])
    proc, report = _prepare(store, tmp_path / "out.jsonl", "--include-history", history)
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == ["a1", "a3"]
    assert [(s["path"], s["reason"]) for s in report["skips"]] == [(f"{history}:2", "invalid_json")]


def test_history_line_over_the_limit_is_too_large_and_never_held(impl, tmp_path):
    """A line longer than --max-file-bytes is skipped as too_large (read past in 1 MiB steps, so a 2 GB line
    costs no more memory than the limit); the line numbers after it stay right."""
    store = tmp_path / "store"
    store.mkdir()
    limit = 100_000
    at_limit = b'{"user_message": "q2", "ai_message": "' + b"a" * (limit - 40) + b'"}'
    assert len(at_limit) == limit
    over = b'{"user_message": "q3", "ai_message": "' + b"b" * (5 << 20) + b'"}'
    history = _history(tmp_path / "h.jsonl", [_pair(1), at_limit, over, _pair(4)])
    proc, report = _prepare(store, tmp_path / "out.jsonl", "--include-history", history,
                            "--max-file-bytes", str(limit))
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == ["a1", "a" * (limit - 40), "a4"]
    assert [(s["path"], s["reason"]) for s in report["skips"]] == [(f"{history}:3", "too_large")]
    assert "--max-file-bytes" in report["skips"][0]["detail"]


def test_bounded_lines(tmp_path):
    path = tmp_path / "lines"
    path.write_bytes(b"12345\n123456\n\n1234567890123\nabc")
    with open(path, "rb") as f:
        assert list(bounded_lines(f, 5)) == [(1, b"12345\n"), (2, None), (3, b"\n"), (4, None), (5, b"abc")]
    path.write_bytes(b"123456")  # an over-long last line without its newline
    with open(path, "rb") as f:
        assert list(bounded_lines(f, 5)) == [(1, None)]
    history = _history(tmp_path / "h.jsonl", [_pair(1), b"x" * 49, _pair(3)])
    items = list(iter_history_pairs(history, 48))
    assert items[1] == Skip(f"{history}:2", SkipReason.TOO_LARGE,
                            "a line of more than 48 bytes; split it, or raise --max-file-bytes")
    assert [i[2] for i in items if not isinstance(i, Skip)] == [f"{history}:1", f"{history}:3"]


def test_a_history_of_many_bad_lines_names_the_first_of_each_reason_and_counts_them_all(impl, tmp_path):
    """30,000 bad lines: the counts are exact, the report names the first SKIP_EXAMPLES of each reason (in
    line order), so it stays kilobytes, and so does the listing on stderr."""
    from jenova_fast.prepare.report import SKIP_EXAMPLES

    store = tmp_path / "store"
    store.mkdir()
    lines = []
    for i in range(1, 30_001):
        lines.append(b"{not json" if i % 3 else b'{"user_message": "q"}')
        if i % 10_000 == 0:
            lines.append(_pair(i))
    history = _history(tmp_path / "h.jsonl", lines)
    proc, report = _prepare(store, tmp_path / "out.jsonl", "--include-history", history)
    assert proc.returncode == 0, proc.stderr
    assert _records(tmp_path / "out.jsonl") == ["a10000", "a20000", "a30000"]
    assert report["skipped"] == {"incomplete_pair": 10_000, "invalid_json": 20_000}
    assert report["skips_not_named"] == {"incomplete_pair": 10_000 - SKIP_EXAMPLES,
                                         "invalid_json": 20_000 - SKIP_EXAMPLES}
    named = [(s["path"], s["reason"]) for s in report["skips"]]
    invalid = [n for n in range(1, 1000) if n % 3][:SKIP_EXAMPLES]
    incomplete = [n for n in range(1, 1000) if n % 3 == 0][:SKIP_EXAMPLES]
    assert named == [(f"{history}:{n}", "incomplete_pair" if n % 3 == 0 else "invalid_json")
                     for n in sorted(invalid + incomplete)]
    assert tmp_path.joinpath("out.report.json").stat().st_size < 64_000
    listed = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "out.jsonl", "--include-history",
                     history).stderr.splitlines()
    assert len(listed) == 2 * SKIP_EXAMPLES + 2, listed[-3:]
    assert "skipped 19,900 more: invalid_json (the first 100 are named above)" in listed
