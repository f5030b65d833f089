"""Limits at full size (issue 10, item 6): each case built on disk, run by `prepare` (native and pure) and,
for history, by `cpa observe` (native and pure), each run in its own child process; the table gives each
run's outcome, its peak RSS (`os.wait4` of that child) and its seconds.

    python -m benchmarks.limits [--cases files_1m,deep_2000,...] [--workdir DIR] [--timeout S] [--json]

Cases: files_1m (1,000,000 insight files in one directory), deep_2000 (directories nested 2,000 deep),
path_4000 (a 4,000-byte path) and path_9000 (past PATH_MAX), json_100k (an insight nested 100,000 deep),
history_1g (a 1 GB history of valid lines), line_2g (a history whose second line is 2 GB). Each case's
files are removed after it (the largest need ~4.5 GB of disk for 1M files, 2 GB for the line). The small
versions of each are tests: tests/prepare/test_limits.py, tests/cpa/test_limits.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1 << 20


def _insight(n: int) -> bytes:
    return json.dumps({"content": f"insight number {n} about tomatoes and soil", "topic": f"topic {n % 50}",
                       "user": "ann", "timestamp": "2026-11-27T12:00:00"}).encode()


def make_files_1m(work: Path, n: int = 1_000_000) -> dict[str, Path]:
    store = work / "store"
    store.mkdir()
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            out = os.open(f"insight_{i:07d}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            os.write(out, _insight(i))
            os.close(out)
    finally:
        os.close(fd)
    return {"store": store}


def _nest(work: Path, names: list[str]) -> dict[str, Path]:
    store = work / "store"
    store.mkdir()
    fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("insight.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, _insight(0))
        os.close(out)
    finally:
        os.close(fd)
    return {"store": store}


def make_deep_2000(work: Path) -> dict[str, Path]:
    return _nest(work, ["d"] * 2000)


def _long_path(work: Path, length: int) -> dict[str, Path]:
    store_len = len(str(work / "store")) + len("/insight.json")
    per = 250
    levels = max(1, (length - store_len) // (per + 1))
    last = max(1, length - store_len - levels * (per + 1) - 1)
    names = [f"{i:03d}" + "n" * (per - 3) for i in range(levels)] + (["m" * min(last, 255)] if last > 0 else [])
    return _nest(work, names)


def make_path_4000(work: Path) -> dict[str, Path]:
    return _long_path(work, 4000)


def make_path_9000(work: Path) -> dict[str, Path]:
    return _long_path(work, 9000)


def make_json_100k(work: Path) -> dict[str, Path]:
    store = work / "store"
    store.mkdir()
    (store / "a.json").write_bytes(_insight(1))
    (store / "deep.json").write_bytes(b'{"content": "x", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    history = work / "history.jsonl"
    history.write_bytes(b'{"user_message": "x", "ai_message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    return {"store": store, "history": history}


def _empty_store(work: Path) -> Path:
    store = work / "store"
    store.mkdir()
    (store / "a.json").write_bytes(_insight(1))
    return store


def make_history_1g(work: Path, size: int = 1 << 30) -> dict[str, Path]:
    history = work / "history.jsonl"
    words = ("tomato soil water seed garden compost light root leaf pest harvest sun rain frost prune graft "
             "basil pepper mulch clay").split()
    written = i = 0
    with open(history, "wb") as f:
        block: list[bytes] = []
        while written < size:
            q = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(8 + i % 9))
            line = json.dumps({"user_message": f"how do I {q} ({i})?", "ai_message": f"You {q}. " * 3,
                               "timestamp": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00"}).encode()
            block.append(line + b"\n")
            written += len(line) + 1
            i += 1
            if len(block) >= 4096:
                f.write(b"".join(block))
                block.clear()
        f.write(b"".join(block))
    return {"store": _empty_store(work), "history": history}


def make_line_2g(work: Path, size: int = 2 << 30) -> dict[str, Path]:
    """A valid line, a 2 GB line (a JSON object whose user_message is 2 GB of words), a valid line: written in
    1 MiB blocks, never held."""
    history = work / "history.jsonl"
    chunk = b"word " * (MB // 5)
    with open(history, "wb") as f:
        f.write(b'{"user_message": "before", "ai_message": "a"}\n{"user_message": "')
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(b'", "ai_message": "b"}\n{"user_message": "after", "ai_message": "c"}\n')
    return {"store": _empty_store(work), "history": history}


CASES: dict[str, tuple[Callable[[Path], dict[str, Path]], str]] = {
    "files_1m": (make_files_1m, "1,000,000 files in one directory"),
    "deep_2000": (make_deep_2000, "directories nested 2,000 deep"),
    "path_4000": (make_path_4000, "a 4,000-byte path"),
    "path_9000": (make_path_9000, "a 9,000-byte path (past PATH_MAX)"),
    "json_100k": (make_json_100k, "JSON nested 100,000 deep"),
    "history_1g": (make_history_1g, "a 1 GB history file"),
    "line_2g": (make_line_2g, "a 2 GB line in a history file"),
}


def remove(path: Path) -> None:
    """rm -rf: shutil.rmtree recurses once per level, a RecursionError at 2,000 deep."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def run_child(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """One child process: its exit status, seconds, peak RSS (MiB) and the last line it wrote."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            start_new_session=True)
    deadline = start + timeout
    status, usage = 0, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            status = -1
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -9
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    return {"rc": proc.returncode if status != -1 else "timeout", "seconds": round(seconds, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1) if usage else None,
            "traceback": "Traceback" in err, "last": lines[-1][:300] if lines else ""}


def runs(case: str, inputs: dict[str, Path], work: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    py = sys.executable
    out = []
    for impl in ("native", "pure"):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if impl == "pure":
            env["JENOVA_FAST_PURE"] = "1"
        else:
            env.pop("JENOVA_FAST_PURE", None)
        report = work / f"report-{impl}.json"
        cmd = [py, "-m", "jenova_fast", "prepare", "--insights-dir", str(inputs["store"]), "--quiet",
               "--output", str(work / f"out-{impl}.jsonl"), "--report", str(report)]
        if "history" in inputs:
            cmd += ["--include-history", str(inputs["history"])]
        out.append((f"prepare {impl}", cmd, env))
        if "history" in inputs:
            cpa = [py, "-m", "jenova_fast", "cpa", "observe", "--state-dir", str(work / f"cpa-{impl}"),
                   "--history", str(inputs["history"])]
            out.append((f"cpa observe {impl}", cpa, env))
    return out


def summarize(name: str, work: Path, result: dict) -> str:
    """What a prepare run did, from its --report: records and skips by reason."""
    if not name.startswith("prepare"):
        return result["last"]
    report = work / f"report-{name.split()[1]}.json"
    if not report.exists():
        return result["last"]
    data = json.loads(report.read_text(encoding="utf-8"))
    skipped = ", ".join(f"{n} {r}" for r, n in sorted(data["skipped"].items())) or "none"
    return f"{data['records']:,} records; skipped: {skipped}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/jenova-limits"))
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    p.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    args = p.parse_args(argv)
    rows = []
    if not args.json:
        print("| case | run | result | peak RSS (MiB) | seconds | make (s) |")
        print("|---|---|---|---:|---:|---:|", flush=True)
    for case in args.cases.split(","):
        make, title = CASES[case]
        work = args.workdir / case
        remove(work)
        work.mkdir(parents=True)
        try:
            start = time.perf_counter()
            inputs = make(work)
            made = time.perf_counter() - start
            for name, cmd, env in runs(case, inputs, work):
                result = run_child(cmd, env, args.timeout)
                result.update(case=case, run=name, made_seconds=round(made, 1), outcome=summarize(name, work, result))
                rows.append(result)
                if args.json:
                    print(json.dumps(result), flush=True)
                else:
                    rc = result["rc"] if not result["traceback"] else f"{result['rc']} (traceback)"
                    print(f"| {title} | {name} | exit {rc}: {result['outcome']} | {result['peak_rss_mib']} | "
                          f"{result['seconds']} | {made:.1f} |", flush=True)
        finally:
            remove(work)
    return 0 if all(r["rc"] == 0 and not r["traceback"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
