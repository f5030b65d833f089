"""Crash-safe writes: a killed writer's temp file is removed by the next write of the same target, a live
writer's is not, and a second live writer of one target is refused (real processes, real SIGKILLs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jenova_fast import _fs

# A writer that writes `size` bytes into the temp file of argv[1], says so, then waits to be killed.
WRITER = """
import sys, time
from jenova_fast import _fs
with _fs.atomic_write(sys.argv[1], exclusive="--output") as f:
    f.write(b"x" * int(sys.argv[2]))
    print("writing", flush=True)
    time.sleep(600)
"""


def start_writer(target: Path, size: int = 4096) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(size)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline() == "writing\n"
    return child


def extra_files(directory: Path, *expected: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in expected)


def test_killed_writers_leftovers_are_removed_by_the_next_write(tmp_path, caplog):
    target = tmp_path / "train.jsonl"
    target.write_bytes(b"previous\n")
    child = start_writer(target, 30_000)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert target.read_bytes() == b"previous\n"
    assert len(extra_files(tmp_path, "train.jsonl")) == 1
    with caplog.at_level("WARNING", logger="jenova_fast._fs"), _fs.atomic_write(target) as f:
        f.write(b"new\n")
    assert target.read_bytes() == b"new\n"
    assert extra_files(tmp_path, "train.jsonl") == []
    assert "removed 1 leftover temp file of killed runs (30.0 KB)" in caplog.text


def test_a_live_writer_is_neither_removed_nor_raced(tmp_path):
    target = tmp_path / "train.jsonl"
    child = start_writer(target)
    try:
        assert _fs.sweep(target) == _fs.Leftovers()
        with pytest.raises(_fs.BusyError, match=rf"another run \(pid {child.pid}, since .*\) is writing it; wait for "
                                                "it to finish or choose another --output"):
            with _fs.atomic_write(target, exclusive="--output"):
                pass
        assert len(extra_files(tmp_path)) == 1  # the refused writer left nothing
        with _fs.atomic_write(tmp_path / "other.jsonl", exclusive="--output") as f:  # another target is free
            f.write(b"ok\n")
    finally:
        child.kill()
        child.communicate()
    with _fs.atomic_write(target, exclusive="--output") as f:
        f.write(b"after\n")
    assert extra_files(tmp_path, "train.jsonl", "other.jsonl") == []


def test_two_prepares_on_one_output_the_second_is_told(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text('{"topic": "t", "content": "c", "user": "u"}', encoding="utf-8")
    out = tmp_path / "out" / "train.jsonl"
    child = start_writer(out)
    try:
        run = subprocess.run([sys.executable, "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--output",
                              str(out), "--quiet"], capture_output=True, text=True)
    finally:
        child.kill()
        child.communicate()
    assert run.returncode == 2
    assert f"another run (pid {child.pid}" in run.stderr and "choose another --output" in run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


def test_temp_names_of_older_releases_are_removed_once_stale(tmp_path):
    target = tmp_path / "jenova.gguf"
    stale = [tmp_path / n for n in (".jenova.gguf.0123456789ab.tmp", ".jenova.gguf.tmp42", ".jenova.gguf.new42")]
    fresh = tmp_path / ".jenova.gguf.prev43"
    unrelated = tmp_path / ".other.gguf.tmp42"
    for p in (*stale, fresh, unrelated):
        p.write_bytes(b"12345")
    hour_ago = time.time() - 2 * 3600
    for p in (*stale, unrelated):
        os.utime(p, (hour_ago, hour_ago))
    assert _fs.sweep(target) == _fs.Leftovers(3, 15)
    assert extra_files(tmp_path) == sorted([fresh.name, unrelated.name])


def test_an_error_inside_leaves_the_target_and_no_temp_file(tmp_path):
    target = tmp_path / "state.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), _fs.atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"old" and extra_files(tmp_path, "state.npz") == []


def test_new_files_keep_the_previous_mode_or_follow_the_umask(tmp_path):
    kept = tmp_path / "kept"
    kept.write_bytes(b"")
    kept.chmod(0o640)
    _fs.write_bytes_via(kept, lambda f: f.write(b"x"))
    assert kept.stat().st_mode & 0o777 == 0o640
    kept.chmod(0o666)  # someone made it writable by every user: the replacement is not
    _fs.write_bytes_via(kept, lambda f: f.write(b"y"))
    assert kept.stat().st_mode & 0o777 == 0o664
    private = tmp_path / "private"
    _fs.write_bytes_via(private, lambda f: f.write(b"x"))
    assert private.stat().st_mode & 0o777 == 0o600
    public = tmp_path / "public"
    old = os.umask(0o022)
    try:
        with _fs.atomic_write(public) as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert public.stat().st_mode & 0o777 == 0o644
