"""Point 3: every kind of bad input is a counted, named skip; good records around it are kept."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import jenova_fast
from jenova_fast.prepare import SkipReason
from tests.prepare.reference import read_lines

GOOD = json.dumps({"topic": "t", "content": "good", "user": "u"}, indent=4).encode()

BAD_FILES: dict[str, tuple[bytes, SkipReason]] = {
    "truncated.json": (GOOD[:-3], SkipReason.INVALID_JSON),
    "garbage.json": (b"\x00\x01binary", SkipReason.INVALID_JSON),
    "whitespace.json": (b"  \n", SkipReason.INVALID_JSON),
    # NaN, 1e400, huge integers and lone surrogate escapes are Python's JSON: test_python_dialect.py
    "nan.json": (b'{"content": NaN}', SkipReason.WRONG_TYPE),
    "lowercase_nan.json": (b'{"content": "x", "n": nan}', SkipReason.INVALID_JSON),
    "int_over_python_limit.json": (b'{"content": "x", "n": ' + b"9" * 4301 + b"}", SkipReason.INVALID_JSON),
    "bad_surrogate_escape.json": (b'{"content": "\\ud800\\u12"}', SkipReason.INVALID_JSON),
    "control_char.json": (b'{"content": "a\x01b"}', SkipReason.INVALID_JSON),
    "trailing.json": (b'{"content": "x"} {}', SkipReason.INVALID_JSON),
    "deep.json": (b'{"content": "x", "d": ' + b"[" * 600 + b"]" * 600 + b"}", SkipReason.INVALID_JSON),
    "bad_utf8.json": (b'{"content": "caf\xe9"}', SkipReason.INVALID_UTF8),
    "encoded_surrogate.json": (b'{"content": "\xed\xa0\x80"}', SkipReason.INVALID_UTF8),
    "empty.json": (b"", SkipReason.EMPTY_FILE),
    "array.json": (b"[" + GOOD + b"]", SkipReason.NOT_OBJECT),
    "string.json": (b'"content"', SkipReason.NOT_OBJECT),
    "no_content.json": (b'{"topic": "t"}', SkipReason.NO_CONTENT),
    "null_content.json": (b'{"content": null}', SkipReason.NO_CONTENT),
    "empty_content.json": (b'{"content": ""}', SkipReason.NO_CONTENT),
    "number_content.json": (b'{"content": 42}', SkipReason.WRONG_TYPE),
    "false_content.json": (b'{"content": false}', SkipReason.WRONG_TYPE),
    "list_content.json": (b'{"content": ["a"]}', SkipReason.WRONG_TYPE),
    "number_topic.json": (b'{"content": "x", "topic": 3}', SkipReason.WRONG_TYPE),
    "object_user.json": (b'{"content": "x", "user": {}}', SkipReason.WRONG_TYPE),
}


def make_store(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a_good.json").write_bytes(GOOD)
    for name, (data, _) in BAD_FILES.items():
        (root / name).write_bytes(data)
    (root / "z_good.json").write_bytes(GOOD)
    return root


def skips_of(report) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason.value for s in report.skips}


def test_each_bad_file_is_skipped_with_its_reason(impl, tmp_path):
    store = make_store(tmp_path / "store")
    out = tmp_path / "o.jsonl"
    report = jenova_fast.prepare(store, out)
    assert skips_of(report) == {name: reason.value for name, (_, reason) in BAD_FILES.items()}
    assert report.records == 2 and len(read_lines(out)) == 2
    assert report.files_seen == len(BAD_FILES) + 2


def test_nesting_limit_is_the_same_in_both_implementations(impl, tmp_path):
    from jenova_fast.prepare.records import MAX_DEPTH

    store = tmp_path / "s"
    store.mkdir()
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1):  # the object itself is one level
        nested = b"[" * (depth - 1) + b"]" * (depth - 1)
        (store / f"d{depth}.json").write_bytes(b'{"content": "x", "d": ' + nested + b"}")
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl")
    assert skips_of(report) == {f"d{MAX_DEPTH + 1}.json": "invalid_json"}


def test_utf8_bom_is_accepted(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "bom.json").write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert jenova_fast.prepare(store, tmp_path / "o.jsonl").records == 1


def test_too_large_files_are_skipped(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "small.json").write_bytes(GOOD)
    (store / "big.json").write_bytes(json.dumps({"content": "x" * 5000}).encode())
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl", max_file_bytes=1000)
    assert skips_of(report) == {"big.json": "too_large"} and report.records == 1
    assert report.bytes_read == len(GOOD)  # the big file was never read


def test_fifo_socket_and_directory_named_json(impl, tmp_path):
    store = tmp_path / "s"
    (store / "dir.json").mkdir(parents=True)
    (store / "dir.json" / "inside.json").write_bytes(GOOD)
    os.mkfifo(store / "pipe.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(store / "sock.json"))
    try:
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=jenova_fast.prepare(store, tmp_path / "o.jsonl")))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "a FIFO named *.json blocked the run"
    finally:
        sock.close()
    report = result["r"]
    assert skips_of(report) == {"pipe.json": "not_regular", "sock.json": "not_regular"}
    assert report.records == 1


def test_symlinks_are_not_followed_unless_asked(impl, tmp_path):
    store = tmp_path / "s"
    (store / "real").mkdir(parents=True)
    (store / "real" / "a.json").write_bytes(GOOD)
    (store / "link.json").symlink_to(store / "real" / "a.json")
    (store / "linkdir").symlink_to(store / "real")
    (store / "real" / "loop").symlink_to(store)
    (store / "dangling.json").symlink_to(store / "nowhere.json")
    report = jenova_fast.prepare(store, tmp_path / "o.jsonl")
    assert report.records == 1
    assert skips_of(report) == {
        "dangling.json": "symlink_not_followed",
        "link.json": "symlink_not_followed",
        "linkdir": "symlink_not_followed",
        "loop": "symlink_not_followed",
    }
    followed = jenova_fast.prepare(store, tmp_path / "f.jsonl", follow_symlinks=True)
    assert followed.records == 3  # link.json, linkdir/a.json, real/a.json
    assert skips_of(followed) == {"dangling.json": "vanished", "loop": "symlink_loop"}


def _without_permission_override() -> None:
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that even
    root is refused by file permissions after exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_files_and_directories_are_skipped(impl, tmp_path):
    store = tmp_path / "store"
    (store / "locked_dir").mkdir(parents=True)
    (store / "locked_dir" / "x.json").write_bytes(GOOD)
    (store / "ok.json").write_bytes(GOOD)
    (store / "secret.json").write_bytes(GOOD)
    (store / "secret.json").chmod(0)
    (store / "locked_dir").chmod(0)
    code = (
        "import jenova_fast, json, sys; r = jenova_fast.prepare(sys.argv[1], sys.argv[2]); "
        "print(json.dumps({s.path.rsplit('/', 1)[1]: s.reason.value for s in r.skips}), r.records)"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(store), str(tmp_path / "o.jsonl")],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_without_permission_override if os.geteuid() == 0 else None,
        )
    finally:
        (store / "locked_dir").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    skips, records = proc.stdout.rsplit(" ", 1)
    assert json.loads(skips) == {"locked_dir": "unreadable", "secret.json": "unreadable"}
    assert records.strip() == "1"


def test_files_vanishing_mid_run_are_counted_not_fatal(impl, tmp_path):
    store = tmp_path / "s"
    for d in range(20):
        (store / f"d{d:02d}").mkdir(parents=True)
        for i in range(300):
            (store / f"d{d:02d}" / f"i{i:03d}.json").write_bytes(GOOD)
    stop = threading.Event()
    removed: list[Path] = []

    def remove() -> None:
        for path in sorted(store.rglob("*.json"), reverse=True):
            if stop.is_set():
                return
            path.unlink()
            removed.append(path)

    remover = threading.Thread(target=remove)
    remover.start()
    try:
        report = jenova_fast.prepare(store, tmp_path / "o.jsonl", threads=2)
    finally:
        stop.set()
        remover.join()
    skipped = {s.path for s in report.skips}
    assert {s.reason.value for s in report.skips} <= {"vanished"}
    assert skipped <= {str(p) for p in removed}
    assert report.records >= 6000 - len(removed)  # every file that stayed became a record
    assert report.records + len(skipped) <= 6000
    assert len(read_lines(tmp_path / "o.jsonl")) == report.records
