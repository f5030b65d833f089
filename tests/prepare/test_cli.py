"""Every way a user runs prepare, their exit codes and what they print (points 3, 7, 8, 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jenova_fast
from jenova_fast import __version__
from jenova_fast.prepare import OutputError
from tests.conftest import run_cli
from tests.prepare.reference import read_lines

REPO = Path(__file__).resolve().parents[2]


def small_store(root: Path, bad: bool = False) -> Path:
    (root / "topic").mkdir(parents=True)
    (root / "topic" / "insight_1.json").write_text(json.dumps({"topic": "t", "content": "c"}, indent=4))
    if bad:
        (root / "topic" / "insight_2.json").write_text("{")
    return root


def test_python_m_prepare_defaults_to_the_current_users_store(impl, tmp_path):
    home = tmp_path / "home"
    small_store(home / ".jenova-ai" / "users" / "someone" / "insights")
    env = {"HOME": str(home), "USER": "someone", "LOGNAME": "someone"}
    proc = subprocess.run(
        [sys.executable, "-m", "jenova_fast.prepare"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_lines(tmp_path / "finetune" / "train.jsonl")) == 1
    assert "prepared 1 records" in proc.stdout


def test_finetune_prepare_data_script_takes_the_same_options(impl, tmp_path):
    store = small_store(tmp_path / "s")
    out = tmp_path / "o.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "finetune" / "prepare_data.py"),
            "--insights-dir",
            str(store),
            "--output-file",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_lines(out)) == 1


def test_console_script_help_and_version(impl):
    scripts = Path(sys.executable).parent
    proc = subprocess.run([str(scripts / "jenova-fast"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("prepare", "demo", "cpa", "finetune", "install-model"):
        assert f"  {command}" in proc.stdout
    assert run_cli("--version").stdout.strip() == f"jenova-fast {__version__}"
    assert run_cli("prepare", "--version").stdout.strip().endswith(__version__)
    assert "--insights-dir" in run_cli("prepare", "--help").stdout


def test_skips_are_listed_and_strict_exits_1(impl, tmp_path):
    store = small_store(tmp_path / "s", bad=True)
    report = tmp_path / "r.json"
    proc = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl", "--report", report)
    assert proc.returncode == 0
    bad = store / "topic" / "insight_2.json"
    assert f"skipped {bad}: invalid_json" in proc.stderr
    assert "skipped 1 (1 invalid_json)" in proc.stdout
    data = json.loads(report.read_text())
    assert data["skips"] == [{"path": str(bad), "reason": "invalid_json", "detail": ""}]
    assert data["records"] == 1 and data["skipped"] == {"invalid_json": 1}
    strict = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl", "--strict", "--quiet")
    assert strict.returncode == 1 and strict.stdout == ""
    assert "1 inputs skipped" in strict.stderr


def test_missing_store_and_unwritable_output_exit_2_with_one_line(impl, tmp_path):
    proc = run_cli("prepare", "--insights-dir", tmp_path / "nope", "--output", tmp_path / "o.jsonl")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(tmp_path / "nope") in proc.stderr and "--insights-dir" in proc.stderr
    store = small_store(tmp_path / "s")
    (tmp_path / "file").write_text("")
    proc = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "file" / "o.jsonl")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--output" in proc.stderr
    home = tmp_path / "home"
    home.mkdir()
    proc = run_cli("prepare", "--user", "ghost", env={"HOME": str(home)})
    assert proc.returncode == 2 and "ghost" in proc.stderr and "jenova-fast demo" in proc.stderr


def test_quiet_prints_nothing_and_non_tty_progress_is_plain(impl, tmp_path):
    store = small_store(tmp_path / "s")
    quiet = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    loud = run_cli("prepare", "--insights-dir", store, "--output", tmp_path / "o.jsonl")
    assert "\r" not in loud.stderr and "\x1b" not in loud.stderr
    assert loud.stdout.count("\n") == 1 and loud.stdout.startswith("prepared 1 records")


def test_progress_bar_on_a_terminal(impl, tmp_path):
    import pty

    store = tmp_path / "store"
    from jenova_fast.demo import write_store

    write_store(store, 3000, seed=1)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jenova_fast.prepare",
            "--insights-dir",
            str(store),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--threads",
            "1",
        ],
        stdout=child_fd,
        stderr=child_fd,
    )
    os.close(child_fd)
    screen = b""
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:
            break
        if not data:
            break
        screen += data
    proc.wait(timeout=60)
    os.close(main_fd)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "\r\x1b[2Kprepare [########################] 3,000/3,000 files 100.0%" in text
    assert "files/s" in text and "ETA 0:00:00" in text
    assert "prepared 2,985 records" in text


def test_demo_writes_a_store_and_prepares_it(impl, tmp_path):
    proc = run_cli("demo", "--insights", "400", "--dir", tmp_path / "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = read_lines(tmp_path / "finetune" / "train.jsonl")
    assert len(records) == 394 and "6 deliberately corrupt" in proc.stdout
    store = tmp_path / "demo"
    assert (store / "insights").is_dir() and (store / "users").is_dir()
    assert list(store.rglob("concerns.json"))
    again = run_cli("demo", "--insights", "400", "--dir", tmp_path / "demo", cwd=tmp_path)
    assert again.returncode == 0  # reuses its own store
    clash = run_cli("demo", "--insights", "500", "--dir", tmp_path / "demo", cwd=tmp_path)
    assert clash.returncode == 2 and "--dir" in clash.stderr


# --- issue 10: output paths that ended in a traceback or an unclear error ----------------------------------


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("jenova-fast prepare: error: cannot write ")
    return proc.stderr


def test_output_naming_a_directory_is_a_one_line_error(impl, tmp_path):
    store = small_store(tmp_path / "s")
    out = tmp_path / "out"
    out.mkdir()
    err = one_line_error(run_cli("prepare", "--insights-dir", store, "--output", out, "--quiet"))
    assert f"{out}: it is a directory" in err and f"--output a file's path, e.g. {out / 'train.jsonl'}" in err
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "s"]
    with pytest.raises(OutputError, match="it is a directory"):
        jenova_fast.prepare(store, out)


def test_report_names_a_skipped_file_that_is_not_utf8(impl, tmp_path):
    store = small_store(tmp_path / "s")
    bad_name = os.fsencode(store / "topic") + b"/bad\xff\xfe.json"
    with open(bad_name, "wb") as f:
        f.write(b"{")
    out, report = tmp_path / "o.jsonl", tmp_path / "r.json"
    out.write_bytes(b"old\n")
    proc = run_cli("prepare", "--insights-dir", store, "--output", out, "--report", report)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(read_lines(out)) == 1
    data = report.read_bytes()
    assert b'/bad\\udcff\\udcfe.json"' in data  # escaped as the records' metadata escapes a bytes name
    skips = json.loads(data.decode("utf-8"))["skips"]
    assert [(os.fsencode(s["path"]), s["reason"]) for s in skips] == [(bad_name, "invalid_json")]


def test_a_report_that_cannot_be_written_leaves_the_output_as_it_was(impl, tmp_path):
    store = small_store(tmp_path / "s", bad=True)
    out = tmp_path / "o.jsonl"
    out.write_bytes(b"old\n")
    (tmp_path / "a_file").write_text("")
    report = tmp_path / "a_file" / "r.json"
    err = one_line_error(run_cli("prepare", "--insights-dir", store, "--output", out, "--report", report))
    assert f"cannot write {report}: {tmp_path / 'a_file'} is not a directory; choose another --report" in err
    assert out.read_bytes() == b"old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "o.jsonl", "s"]
    (tmp_path / "reports").mkdir()
    err = one_line_error(run_cli("prepare", "--insights-dir", store, "--output", out, "--report", tmp_path / "reports"))
    assert f"--report a file's path, e.g. {tmp_path / 'reports' / 'report.json'}" in err
    assert out.read_bytes() == b"old\n" and list((tmp_path / "reports").iterdir()) == []


def test_dangling_symlinked_output_directory_names_the_link(impl, tmp_path):
    store = small_store(tmp_path / "s")
    link, missing = tmp_path / "finetune", tmp_path / "gone" / "finetune"
    link.symlink_to(missing)
    for out in (link / "train.jsonl", link / "sub" / "train.jsonl"):
        err = one_line_error(run_cli("prepare", "--insights-dir", store, "--output", out))
        assert "File exists" not in err
        assert f"{link} is a symlink to {missing}, which does not exist; create the directory {missing}" in err
        assert "or choose another --output" in err
    relative = tmp_path / "rel"
    relative.symlink_to("nowhere")
    err = one_line_error(run_cli("prepare", "--insights-dir", store, "--output", relative / "train.jsonl"))
    assert f"{relative} is a symlink to nowhere, which does not exist; " in err
    assert f"create the directory {tmp_path / 'nowhere'} or remove the link" in err
    assert not missing.parent.exists() and not (tmp_path / "nowhere").exists()
