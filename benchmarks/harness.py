"""The peer comparison's harness: everything that touches the machine, nothing that formats results.

It sets up the seeded store, builds the I/O floor, lists the approaches, evicts the store for cold runs
and runs each approach in its own subprocess (through `io_floor --measure`, so that the peak RSS is the
run's own), handing every output to the records check (checks.py). compare.py drives it and report.py
turns its rows into tables; keeping the runs apart from the tables lets either change without the other.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.checks import Checker

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
INSTALL_PEERS = "pip install 'jenova-fast[bench]'"
EXIT_GAVE_UP = 3  # a peer that stops on bad input (DuckDB read_json): a result, not a harness failure


@dataclass
class Approach:
    key: str
    label: str
    argv: Callable[[Path], list[str]]  # output path -> command line
    env: dict[str, str | None] = field(default_factory=dict)  # None removes a variable
    needs_modules: tuple[str, ...] = ()
    needs_tools: tuple[str, ...] = ()
    writes_output: bool = True
    is_peer: bool = True  # counts for "fastest peer"
    skip_reason: str | None = None
    src: str | None = None  # where jenova_fast is imported from, when not this repo


@dataclass
class Run:
    wall: float
    rss_mb: float
    status: str  # "ok", "gave up", "failed", "timeout"
    detail: str = ""
    cpu: float | None = None  # user + system seconds of the run's process tree
    check: str = ""  # verdict of the records check


@dataclass
class Row:
    approach: Approach
    runs: list[Run] = field(default_factory=list)

    def ok_walls(self) -> list[float]:
        return [r.wall for r in self.runs if r.status == "ok"]

    @property
    def wall(self) -> float | None:
        walls = self.ok_walls()
        return statistics.median(walls) if walls else None

    @property
    def cpu(self) -> float | None:
        cpus = [r.cpu for r in self.runs if r.status == "ok" and r.cpu is not None]
        return statistics.median(cpus) if cpus else None

    @property
    def rss_mb(self) -> float | None:
        return max((r.rss_mb for r in self.runs), default=None)


Evictor = tuple[Callable[[], None], str]  # (evict the store, how it does it)


@dataclass
class Setup:
    """What every round runs over: the store, its size, the floor program and the chosen approaches."""

    work: Path
    store: Path
    threads: int
    floor_bin: Path | None
    approaches: list[Approach]  # chosen, in table order; a skipped one has its skip_reason set
    counts: dict[str, int] = field(default_factory=dict)  # "files", "bytes" of the store's *.json
    evictor: Evictor | None = None  # set for cold runs

    @property
    def active(self) -> list[Approach]:
        return [a for a in self.approaches if not a.skip_reason]


class SetupError(Exception):
    """The run cannot start as asked (an unknown approach, --cold without the floor): exit 2."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def set_up(args: argparse.Namespace) -> Setup:
    """The store, the floor and the approaches asked for; also warms the cache (the store count)."""
    threads = args.threads or len(os.sched_getaffinity(0))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    store = ensure_store(Path(args.store) if args.store else None, work, args.insights, args.seed)
    floor_bin = build_floor(work)
    approaches = list_approaches(args, store, threads, floor_bin)
    if args.approaches:
        wanted = set(args.approaches.split(","))
        unknown = wanted - {a.key for a in approaches}
        if unknown:
            raise SetupError(f"unknown approach(es) {sorted(unknown)}; choose from {[a.key for a in approaches]}")
        approaches = [a for a in approaches if a.key in wanted]
    for a in approaches:
        mark_missing(a)
        if a.skip_reason:
            say(f"skipping {a.label}: {a.skip_reason}")
    setup = Setup(work, store, threads, floor_bin, approaches)
    setup.evictor = evictor(floor_bin, store) if args.cold else None
    if args.cold and setup.evictor is None:
        raise SetupError("--cold needs the I/O floor program to evict the store (a C compiler, `cc`); aborting")
    setup.counts = count_store(floor_bin, store, threads)  # also warms the cache for warm runs
    say(
        f"store {store}: {setup.counts['files']:,} *.json files, {setup.counts['bytes'] / 1e6:,.1f} MB; "
        f"{threads} threads; {'cold' if args.cold else 'warm'} cache; {args.repeat} rounds"
    )
    return setup


def run_rounds(setup: Setup, repeat: int, timeout: float) -> tuple[dict[str, Row], Checker]:
    """`repeat` rounds; inside a round the approaches alternate, so contention hits them all alike."""
    active = setup.active
    rows = {a.key: Row(a) for a in active}
    checker = Checker()
    with tempfile.TemporaryDirectory(prefix="compare-", dir=setup.work) as tmp:
        for round_no in range(1, repeat + 1):
            for a in active:
                output = Path(tmp) / f"{a.key}.jsonl"
                if setup.evictor is not None:
                    setup.evictor[0]()
                else:
                    os.sync()  # earlier outputs' writeback must not land inside this run
                run = run_one(a, output, Path(tmp), timeout, setup.floor_bin)
                if run.status == "ok" and a.writes_output:
                    run.check = checker.check(a.key, output)
                output.unlink(missing_ok=True)
                rows[a.key].runs.append(run)
                say(
                    f"[{round_no}/{repeat}] {a.label:<34} {run.wall:8.2f} s {run.rss_mb:8.1f} MB  "
                    f"cpu {run.cpu or 0:7.2f} s  {run.status}{' ' + run.check if run.check else ''}"
                    f"{(': ' + run.detail.splitlines()[-1][:300]) if run.detail and run.status != 'ok' else ''}"
                )
    return rows, checker


# --- the store ---------------------------------------------------------------------------------------


def ensure_store(store: Path | None, work: Path, insights: int, seed: int) -> Path:
    """Reuse a store the demo generator made with these parameters; a user's own store is used as is."""
    from jenova_fast.demo import read_manifest, write_store

    if store is None:
        store = work / f"store-{insights}-seed{seed}"
        found = read_manifest(store)
        if found is not None and (found.insights, found.seed) == (insights, seed):
            return store
        if store.exists():  # an interrupted generation: ours to redo
            shutil.rmtree(store)
    elif store.is_dir() and any(store.iterdir()):
        found = read_manifest(store)
        if found is not None and (found.insights, found.seed) != (insights, seed):
            say(f"note: {store} holds a demo store of {found.insights} insights (seed {found.seed}); using it")
        return store
    say(f"writing a demo store of {insights:,} insights (seed {seed}) to {store} ...")
    started = time.perf_counter()
    write_store(store, insights, seed)
    os.sync()
    say(f"  done in {time.perf_counter() - started:.0f} s")
    return store


def count_store(floor_bin: Path | None, store: Path, threads: int) -> dict[str, int]:
    """Files and bytes of the store's *.json, read by the floor when it is built (which warms the cache)."""
    if floor_bin is not None:
        done = subprocess.run([str(floor_bin), "--threads", str(threads), str(store)], capture_output=True, text=True)
        if done.returncode == 0:
            return json.loads(done.stdout)
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(store):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.endswith(".json") and not name.startswith("."):
                files += 1
                total += os.path.getsize(os.path.join(dirpath, name))
    return {"files": files, "bytes": total}


# --- the I/O floor -----------------------------------------------------------------------------------


def build_floor(work: Path) -> Path | None:
    """Compile io_floor.c once per source version into the work dir's cache."""
    source = BENCH_DIR / "io_floor.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = work / "bin" / f"io_floor-{digest}"
    if binary.exists():
        return binary
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        say(f"no C compiler ({cc}) on PATH: the I/O floor is skipped (install gcc, or set CC)")
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    done = subprocess.run([cc, "-O2", "-pthread", "-o", str(tmp), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        say(f"compiling {source} failed, the I/O floor is skipped:\n{done.stderr[-2000:]}")
        return None
    tmp.rename(binary)
    return binary


def evictor(floor_bin: Path | None, store: Path) -> Evictor | None:
    """Drop the store's pages (posix_fadvise DONTNEED on every file, after a sync so none is dirty), and
    where the kernel lets us, cached dentries and inodes too, so the walk itself is cold."""
    if floor_bin is None:
        return None
    drop = Path("/proc/sys/vm/drop_caches")
    can_drop = os.access(drop, os.W_OK)

    def evict() -> None:
        os.sync()
        subprocess.run([str(floor_bin), "--evict", "--threads", "8", str(store)], check=True, capture_output=True)
        if can_drop:
            try:
                drop.write_text("2\n")
            except OSError:
                pass

    return evict, "sync, posix_fadvise(DONTNEED) per file" + (", drop_caches=2 (dentries, inodes)" if can_drop else "")


# --- the approaches ----------------------------------------------------------------------------------


def list_approaches(args: argparse.Namespace, store: Path, threads: int, floor_bin: Path | None) -> list[Approach]:
    """Every approach in table order: the floor(s), jenova_fast pure then native, then the peers."""
    found = _floor_approaches(args, store, threads, floor_bin)
    found += _jenova_approaches(args, store, threads)
    found += _peer_approaches(store, threads)
    return found


def _floor_approaches(args: argparse.Namespace, store: Path, threads: int, floor_bin: Path | None) -> list[Approach]:
    def floor(n: int) -> Callable[[Path], list[str]]:
        return lambda out: [str(floor_bin), "--threads", str(n), str(store)]

    found = [
        Approach("floor", f"I/O floor (C, {threads} threads)", floor(threads), writes_output=False, is_peer=False),
    ]
    if args.cold and args.floor_threads != threads:
        found.append(
            Approach(
                f"floor{args.floor_threads}",
                f"I/O floor (C, {args.floor_threads} threads)",
                floor(args.floor_threads),
                writes_output=False,
                is_peer=False,
            )
        )
    if floor_bin is None:
        for a in found:
            a.skip_reason = "no C compiler to build benchmarks/io_floor.c"
    return found


def _jenova_approaches(args: argparse.Namespace, store: Path, threads: int) -> list[Approach]:
    py = sys.executable

    def prepare(out: Path) -> list[str]:
        if args.jenova_src:  # python -P: the current directory (this repo) must not shadow --jenova-src
            return [py, "-P", "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--threads", str(threads),
                    "--output", str(out), "--quiet"]  # fmt: skip
        return [py, "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--threads", str(threads),
                "--output", str(out), "--quiet"]  # fmt: skip

    found = [
        # the pure twin runs first in every round: the records check needs its output
        Approach(
            "pure", f"jenova_fast pure twin ({threads} threads)", prepare, env={"JENOVA_FAST_PURE": "1"}, is_peer=False
        ),
        Approach(
            "jenova", f"jenova_fast native ({threads} threads)", prepare, env={"JENOVA_FAST_PURE": None}, is_peer=False
        ),
    ]
    if args.jenova_src:
        for a in found:
            a.src = str(Path(args.jenova_src).resolve())
    return found


def _peer_approaches(store: Path, threads: int) -> list[Approach]:
    py = sys.executable

    def peer(module: str, n: int = threads) -> Callable[[Path], list[str]]:
        return lambda out: [
            py, "-m", f"benchmarks.peers.{module}", "--insights-dir", str(store), "--threads", str(n),
            "--output", str(out),
        ]  # fmt: skip

    found = [
        Approach("reference", "reference (glob + json)", peer("reference")),
        Approach("orjson1", "orjson + os.scandir, 1 process", peer("orjson_scandir", 1), needs_modules=("orjson",)),
    ]
    if threads > 1:
        found.append(
            Approach(
                "orjson", f"orjson + os.scandir, {threads} processes", peer("orjson_scandir"), needs_modules=("orjson",)
            )
        )
    found += [
        Approach("simdjson", "pysimdjson + orjson", peer("simdjson_orjson"), needs_modules=("simdjson", "orjson")),
        Approach(
            "duckdb_json", f"DuckDB read_json ({threads} threads)", peer("duckdb_read_json"), needs_modules=("duckdb",)
        ),
        Approach(
            "duckdb_blob",
            f"DuckDB read_blob + json ({threads} threads)",
            peer("duckdb_blobs"),
            needs_modules=("duckdb",),
        ),
        Approach("jq", f"jq over xargs (-P {threads})", peer("jq_xargs"), needs_tools=("jq", "xargs", "awk")),
    ]
    return found


def mark_missing(a: Approach) -> None:
    """Set the skip reason of an approach whose peer module or tool is not installed."""
    if a.skip_reason:
        return
    missing = [m for m in a.needs_modules if importlib.util.find_spec(m) is None]
    if missing:
        a.skip_reason = f"{', '.join(missing)} not installed ({INSTALL_PEERS})"
        return
    tools = [t for t in a.needs_tools if shutil.which(t) is None]
    if tools:
        a.skip_reason = f"{', '.join(tools)} not on PATH (e.g. apt-get install -y {tools[0]})"


# --- one run -----------------------------------------------------------------------------------------


def run_one(a: Approach, output: Path, tmp: Path, timeout: float, launcher: Path | None) -> Run:
    """One run in its own subprocess, started through io_floor --measure so that its peak RSS is its own."""
    argv = a.argv(output)
    report = tmp / "measure.json"
    report.unlink(missing_ok=True)
    if launcher is not None:
        argv = [str(launcher), "--measure", str(report), "--", *argv]
    with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
        started = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=_env(a), cwd=REPO, start_new_session=True)
        except OSError as exc:
            return Run(0.0, 0.0, "failed", f"could not start {argv[0]}: {exc}")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: take the run's process group down with us
            timer.cancel()
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        wall = time.perf_counter() - started
        timer.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    rss_mb = usage.ru_maxrss / 1024  # KiB on Linux; without the launcher this includes the harness's RSS
    cpu = usage.ru_utime + usage.ru_stime
    if launcher is not None and report.exists():
        measured = json.loads(report.read_text())
        wall, cpu, rss_mb, code = measured["wall_s"], measured["cpu_s"], measured["maxrss_kb"] / 1024, measured["exit"]
    stderr = (tmp / "stderr").read_text(errors="replace").strip()
    tail = "\n".join(stderr.splitlines()[-5:])
    if timed_out.is_set():
        return Run(wall, rss_mb, "timeout", f"killed after {timeout:.0f} s", cpu)
    if code == EXIT_GAVE_UP:
        return Run(wall, rss_mb, "gave up", tail, cpu)
    if code != 0:
        return Run(wall, rss_mb, "failed", f"exit {code}: {tail}", cpu)
    if a.writes_output and not output.exists():
        return Run(wall, rss_mb, "failed", f"exit 0 but no output file {output}", cpu)
    return Run(wall, rss_mb, "ok", tail, cpu)


def _env(a: Approach) -> dict[str, str]:
    """This environment, with jenova_fast imported from the approach's source tree and its variables set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (a.src or str(REPO), env.get("PYTHONPATH")) if p)
    for name, value in a.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
