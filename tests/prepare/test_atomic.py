"""Points 2 and 4: repeat runs are byte-identical; an interrupted or failed run leaves the old output."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

import jenova_fast
from jenova_fast.demo import write_store
from jenova_fast.prepare import OutputError, StoreNotFoundError
from tests.conftest import run_cli


def test_repeat_runs_and_thread_counts_give_identical_bytes(impl, demo_store, tmp_path):
    root, _ = demo_store
    outputs = []
    for run, threads in enumerate((1, 2, 2, 7)):
        out = tmp_path / f"run{run}.jsonl"
        jenova_fast.prepare(root, out, threads=threads)
        outputs.append(out.read_bytes())
    assert len(set(outputs)) == 1 and len(outputs[0]) > 100_000


def test_records_are_in_sorted_path_order(impl, tmp_path):
    store = tmp_path / "s"
    names = ["b/x.json", "a b/x.json", "a/z.json", "a/b.json", "é.json", "Z.json", "a/sub/q.json"]
    for name in names:
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_text(f'{{"content": "{name}"}}')
    out = tmp_path / "o.jsonl"
    jenova_fast.prepare(store, out)
    got = [line.rsplit(": ", 1)[1].rstrip('"}]\n') for line in out.read_text().splitlines()]
    expected = sorted(names, key=lambda n: [os.fsencode(part) for part in n.split("/")])
    assert got == expected == ["Z.json", "a/b.json", "a/sub/q.json", "a/z.json", "a b/x.json", "b/x.json", "é.json"]


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("kill") / "store"
    write_store(store, 8_000, seed=3)
    return store


def test_sigkill_mid_run_leaves_the_previous_output_intact(impl, kill_store, tmp_path):
    store = kill_store
    out = tmp_path / "finetune" / "train.jsonl"
    out.parent.mkdir()
    previous = b'{"previous": true}\n'
    out.write_bytes(previous)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jenova_fast.prepare",
            "--insights-dir",
            str(store),
            "--output",
            str(out),
            "--threads",
            "1",
            "--quiet",
        ],
    )
    deadline = time.monotonic() + 60
    temp = []
    while proc.poll() is None and not temp and time.monotonic() < deadline:
        temp = [p for p in out.parent.iterdir() if p.name.startswith(".train.jsonl.")]
    assert temp, "the run never created its temporary file (or finished first)"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == previous


def test_failed_run_leaves_the_previous_output_and_no_temp_file(impl, tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "a.json").write_text('{"content": "x"}')
    out = tmp_path / "train.jsonl"
    out.write_bytes(b"old\n")

    def explode(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jenova_fast.prepare(store, out, progress=explode)
    assert out.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "train.jsonl"]


def _small_file_size_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # writes past it fail with EFBIG


def test_a_full_output_is_a_clear_error_and_keeps_the_previous_output(impl, demo_store, tmp_path):
    root, _ = demo_store
    out = tmp_path / "train.jsonl"
    out.write_bytes(b"old\n")
    proc = run_cli("prepare", "--insights-dir", root, "--output", out, "--quiet", preexec_fn=_small_file_size_limit)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"jenova-fast prepare: error: cannot write {out}: File too large; free space there or " \
        "choose another --output\n"
    assert out.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_no_store_and_unwritable_output_are_clear_errors(impl, tmp_path):
    with pytest.raises(StoreNotFoundError, match="--insights-dir"):
        jenova_fast.prepare(tmp_path / "missing", tmp_path / "o.jsonl")
    store = tmp_path / "s"
    store.mkdir()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match=r"a_file/o\.jsonl.*--output"):
        jenova_fast.prepare(store, tmp_path / "a_file" / "o.jsonl")


def test_cold_cache_run_gives_the_same_bytes(impl, demo_store, tmp_path):
    """Evicting the store from the page cache makes reads block, which starts extra native readers."""
    root, _ = demo_store
    warm = tmp_path / "warm.jsonl"
    jenova_fast.prepare(root, warm)
    os.sync()
    for path in root.rglob("*.json"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    cold = tmp_path / "cold.jsonl"
    jenova_fast.prepare(root, cold, threads=1)
    assert cold.read_bytes() == warm.read_bytes()
