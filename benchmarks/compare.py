"""Peer comparison: `jenova-fast prepare` against the I/O floor and every peer, in one run.

    python -m benchmarks.compare --insights 200000 [--cold] [--json] [--threads N] [--repeat 3] [--store DIR]

Every approach runs in its own subprocess over the same seeded demo store (jenova_fast.demo), the
approaches alternate within each round, and the table shows the median wall time of `--repeat` rounds with
the peak RSS the kernel reports for the run's process tree (os.wait4). Every output is checked against the
pure twin's as a multiset of parsed records, and jenova_fast native must be byte-identical to it.
`--cold` evicts the store from the page cache before every run. Peers come from the `bench` extra; a
missing one is skipped, a failing one is reported with its stderr and the run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
INSTALL_PEERS = "pip install 'jenova-fast[bench]'"
EXIT_GAVE_UP = 3  # a peer that stops on bad input (DuckDB read_json): a result, not a harness failure

# (target, limit) from issue 3, checked on every run's figures
TARGET_FLOOR_RATIO = 1.2
TARGET_VS_PEER = 2.5
TARGET_VS_REFERENCE = 7.0
TARGET_RSS_MB = 100.0


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


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # so a killed harness kills its current run
    threads = args.threads or len(os.sched_getaffinity(0))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    store = _ensure_store(Path(args.store) if args.store else None, work, args.insights, args.seed)
    floor_bin = _build_floor(work)
    approaches = _approaches(args, store, threads, floor_bin)
    if args.approaches:
        wanted = set(args.approaches.split(","))
        unknown = wanted - {a.key for a in approaches}
        if unknown:
            _say(f"unknown approach(es) {sorted(unknown)}; choose from {[a.key for a in approaches]}")
            return 2
        approaches = [a for a in approaches if a.key in wanted]
    for a in approaches:
        _mark_missing(a)
        if a.skip_reason:
            _say(f"skipping {a.label}: {a.skip_reason}")
    active = [a for a in approaches if not a.skip_reason]
    evictor = _evictor(floor_bin, store) if args.cold else None
    if args.cold and evictor is None:
        _say("--cold needs the I/O floor program to evict the store (a C compiler, `cc`); aborting")
        return 2
    counts = _count_store(floor_bin, store, threads)  # also warms the cache for warm runs
    _say(
        f"store {store}: {counts['files']:,} *.json files, {counts['bytes'] / 1e6:,.1f} MB; "
        f"{threads} threads; {'cold' if args.cold else 'warm'} cache; {args.repeat} rounds"
    )

    rows = {a.key: Row(a) for a in active}
    checker = _Checker()
    with tempfile.TemporaryDirectory(prefix="compare-", dir=work) as tmp:
        for round_no in range(1, args.repeat + 1):
            for a in active:
                output = Path(tmp) / f"{a.key}.jsonl"
                if evictor is not None:
                    evictor[0]()
                else:
                    os.sync()  # earlier outputs' writeback must not land inside this run
                run = _run(a, output, Path(tmp), args.timeout, floor_bin)
                if run.status == "ok" and a.writes_output:
                    run.check = checker.check(a.key, output)
                output.unlink(missing_ok=True)
                rows[a.key].runs.append(run)
                _say(
                    f"[{round_no}/{args.repeat}] {a.label:<34} {run.wall:8.2f} s {run.rss_mb:8.1f} MB  "
                    f"cpu {run.cpu or 0:7.2f} s  {run.status}{' ' + run.check if run.check else ''}"
                    f"{(': ' + run.detail.splitlines()[-1][:300]) if run.detail and run.status != 'ok' else ''}"
                )

    result = _summarise(args, store, threads, counts, approaches, rows, checker)
    result["eviction"] = evictor[1] if evictor else None
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(_table(result))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--insights", type=int, default=200_000, help="insight files in the store (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", help="store directory (made with jenova_fast.demo if missing or empty)")
    parser.add_argument(
        "--work-dir",
        default=os.environ.get("JENOVA_BENCH_DIR", os.path.join(tempfile.gettempdir(), "jenova-bench")),
        help="where stores, outputs and the compiled floor live (default %(default)s; env JENOVA_BENCH_DIR)",
    )
    parser.add_argument("--threads", type=int, default=0, help="threads/processes for every approach (default: cores)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians (default %(default)s)")
    parser.add_argument("--cold", action="store_true", help="evict the store from the page cache before every run")
    parser.add_argument(
        "--floor-threads", type=int, default=32, help="with --cold, also run the floor with this many threads"
    )
    parser.add_argument(
        "--jenova-src",
        help="import jenova_fast from this source tree (e.g. a built checkout) instead of the installed/this one",
    )
    parser.add_argument("--approaches", help="comma-separated keys to run (default: all available)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--save", metavar="FILE.json", help="also write the results as JSON to this file")
    return parser.parse_args(argv)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the store ---------------------------------------------------------------------------------------


def _ensure_store(store: Path | None, work: Path, insights: int, seed: int) -> Path:
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
            _say(f"note: {store} holds a demo store of {found.insights} insights (seed {found.seed}); using it")
        return store
    _say(f"writing a demo store of {insights:,} insights (seed {seed}) to {store} ...")
    started = time.perf_counter()
    write_store(store, insights, seed)
    os.sync()
    _say(f"  done in {time.perf_counter() - started:.0f} s")
    return store


# --- the I/O floor -----------------------------------------------------------------------------------


def _build_floor(work: Path) -> Path | None:
    """Compile io_floor.c once per source version into the work dir's cache."""
    source = BENCH_DIR / "io_floor.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = work / "bin" / f"io_floor-{digest}"
    if binary.exists():
        return binary
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        _say(f"no C compiler ({cc}) on PATH: the I/O floor is skipped (install gcc, or set CC)")
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    done = subprocess.run([cc, "-O2", "-pthread", "-o", str(tmp), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        _say(f"compiling {source} failed, the I/O floor is skipped:\n{done.stderr[-2000:]}")
        return None
    tmp.rename(binary)
    return binary


def _count_store(floor_bin: Path | None, store: Path, threads: int) -> dict[str, int]:
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


def _evictor(floor_bin: Path | None, store: Path) -> tuple[Callable[[], None], str] | None:
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


def _approaches(args: argparse.Namespace, store: Path, threads: int, floor_bin: Path | None) -> list[Approach]:
    py = sys.executable

    def peer(module: str, n: int = threads) -> Callable[[Path], list[str]]:
        return lambda out: [
            py, "-m", f"benchmarks.peers.{module}", "--insights-dir", str(store), "--threads", str(n),
            "--output", str(out),
        ]  # fmt: skip

    def floor(n: int) -> Callable[[Path], list[str]]:
        return lambda out: [str(floor_bin), "--threads", str(n), str(store)]

    def prepare(out: Path) -> list[str]:
        if args.jenova_src:  # python -P: the current directory (this repo) must not shadow --jenova-src
            return [py, "-P", "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--threads", str(threads),
                    "--output", str(out), "--quiet"]  # fmt: skip
        return [py, "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--threads", str(threads),
                "--output", str(out), "--quiet"]  # fmt: skip

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
    found += [
        # the pure twin runs first in every round: the records check needs its output
        Approach(
            "pure", f"jenova_fast pure twin ({threads} threads)", prepare, env={"JENOVA_FAST_PURE": "1"}, is_peer=False
        ),
        Approach(
            "jenova", f"jenova_fast native ({threads} threads)", prepare, env={"JENOVA_FAST_PURE": None}, is_peer=False
        ),
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
    for a in found:
        if a.key in ("pure", "jenova") and args.jenova_src:
            a.src = str(Path(args.jenova_src).resolve())
    return found


def _mark_missing(a: Approach) -> None:
    if a.skip_reason:
        return
    missing = [m for m in a.needs_modules if importlib.util.find_spec(m) is None]
    if missing:
        a.skip_reason = f"{', '.join(missing)} not installed ({INSTALL_PEERS})"
        return
    tools = [t for t in a.needs_tools if shutil.which(t) is None]
    if tools:
        a.skip_reason = f"{', '.join(tools)} not on PATH (e.g. apt-get install -y {tools[0]})"


def _run(a: Approach, output: Path, tmp: Path, timeout: float, launcher: Path | None) -> Run:
    """One run in its own subprocess, started through io_floor --measure so that its peak RSS is its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (a.src or str(REPO), env.get("PYTHONPATH")) if p)
    for name, value in a.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    argv = a.argv(output)
    report = tmp / "measure.json"
    report.unlink(missing_ok=True)
    if launcher is not None:
        argv = [str(launcher), "--measure", str(report), "--", *argv]
    with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
        started = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
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


# --- the records check -------------------------------------------------------------------------------


class _Checker:
    """Every output against the pure twin's: as parsed records for peers, byte for byte for jenova_fast."""

    def __init__(self) -> None:
        self.truth: Counter[bytes] | None = None
        self.truth_from = ""
        self.truth_digest = ""
        self.records = 0
        self.verdicts: dict[str, str] = {}  # file digest -> verdict, as outputs repeat across rounds

    def check(self, key: str, output: Path) -> str:
        digest = _file_digest(output)
        if self.truth is None:
            if key not in ("pure", "reference"):
                return "unchecked (no pure twin output yet)"
            self.truth, self.truth_from, self.truth_digest = _records(output), key, digest
            self.records = sum(self.truth.values())
            return f"{self.records:,} records (the truth)"
        if digest == self.truth_digest:
            return "identical"
        if key in ("pure", "jenova") and self.truth_from == "pure":
            verdict = self.verdicts.get(digest) or self._compare(output)
            self.verdicts[digest] = verdict
            return "NOT byte-identical; " + verdict
        verdict = self.verdicts.get(digest) or self._compare(output)
        self.verdicts[digest] = verdict
        return verdict

    def _compare(self, output: Path) -> str:
        assert self.truth is not None
        got = _records(output)
        if got == self.truth:
            return "same records"
        missing = sum((self.truth - got).values())
        extra = sum((got - self.truth).values())
        return f"MISMATCH: {missing:,} missing, {extra:,} extra of {self.records:,}"


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _records(path: Path) -> Counter[bytes]:
    """A multiset of records, each reduced to a digest of its canonical JSON (sorted keys, ASCII)."""
    found: Counter[bytes] = Counter()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                found[f"unparsable line {number}".encode()] += 1
                continue
            canonical = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
            found[hashlib.blake2b(canonical, digest_size=16).digest()] += 1
    return found


# --- the summary -------------------------------------------------------------------------------------


def _summarise(args, store, threads, counts, approaches, rows, checker) -> dict:
    by_key = {key: row.wall for key, row in rows.items()}
    floor = by_key.get("floor")
    floor_cpu = rows["floor"].cpu if "floor" in rows else None
    floors = [w for k, w in by_key.items() if k.startswith("floor") and w]
    best_floor = min(floors) if floors else None
    reference = by_key.get("reference")
    results = []
    for a in approaches:
        if a.skip_reason:
            results.append({"key": a.key, "approach": a.label, "status": "skipped", "detail": a.skip_reason})
            continue
        row = rows[a.key]
        wall = row.wall
        statuses = Counter(r.status for r in row.runs)
        checks = sorted({r.check for r in row.runs if r.check})
        entry = {
            "key": a.key,
            "approach": a.label,
            "status": "ok"
            if statuses.get("ok") == len(row.runs)
            else ", ".join(f"{n}× {s}" for s, n in statuses.items()),
            "wall_s": wall,
            "walls_s": [r.wall for r in row.runs],
            "cpu_s": row.cpu,
            "x_floor_cpu": row.cpu / floor_cpu if row.cpu and floor_cpu else None,
            "peak_rss_mb": row.rss_mb,
            "files_per_s": counts["files"] / wall if wall else None,
            "mb_per_s": counts["bytes"] / 1e6 / wall if wall else None,
            "x_floor": wall / floor if wall and floor else None,
            "x_best_floor": wall / best_floor if wall and best_floor else None,
            "speedup_vs_reference": reference / wall if wall and reference else None,
            "records": "; ".join(checks) if checks else ("n/a" if not a.writes_output else ""),
            "detail": next(
                (
                    f"after {r.wall:.2f} s: {r.detail.splitlines()[-1]}"
                    for r in row.runs
                    if r.status != "ok" and r.detail
                ),
                "",
            ),
        }
        results.append(entry)
    return {
        "command": "python -m benchmarks.compare " + " ".join(sys.argv[1:]),
        "store": str(store),
        "insights": args.insights,
        "seed": args.seed,
        "files": counts["files"],
        "bytes": counts["bytes"],
        "records": checker.records,
        "records_truth": checker.truth_from,
        "threads": threads,
        "cache": "cold" if args.cold else "warm",
        "repeat": args.repeat,
        "machine": _machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "targets": _targets(args, rows, floor, best_floor, reference),
    }


def _targets(args, rows, floor, best_floor, reference) -> list[dict]:
    """Issue 3's targets for jenova_fast native, from this run's figures."""
    jenova = rows.get("jenova")
    if jenova is None or jenova.wall is None:
        return [{"target": "jenova_fast native ran", "met": False}]
    wall = jenova.wall
    out = []
    bar, name = (best_floor, "best") if args.cold else (floor, "same-threads")
    if bar:
        out.append(
            {
                "target": f"wall ≤ {TARGET_FLOOR_RATIO}× the {name} I/O floor",
                "value": round(wall / bar, 2),
                "met": wall / bar <= TARGET_FLOOR_RATIO,
            }
        )
    peers = [
        (r.wall, r.approach.label)
        for r in rows.values()
        if r.approach.is_peer and r.wall and all(x.check in ("same records", "identical") for x in r.runs)
    ]
    if peers:
        fastest, label = min(peers)
        out.append(
            {
                "target": f"≥ {TARGET_VS_PEER}× faster than the fastest correct peer ({label})",
                "value": round(fastest / wall, 2),
                "met": fastest / wall >= TARGET_VS_PEER,
            }
        )
    if reference:
        out.append(
            {
                "target": f"≥ {TARGET_VS_REFERENCE}× faster than the reference",
                "value": round(reference / wall, 2),
                "met": reference / wall >= TARGET_VS_REFERENCE,
            }
        )
    out.append(
        {
            "target": f"peak RSS ≤ {TARGET_RSS_MB:.0f} MB",
            "value": round(jenova.rss_mb or 0, 1),
            "met": (jenova.rss_mb or 0) <= TARGET_RSS_MB,
        }
    )
    identical = all(r.check == "identical" for r in jenova.runs)
    out.append({"target": "output byte-identical to the pure twin in every run", "value": identical, "met": identical})
    return out


def _machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _table(result: dict) -> str:
    head = ["approach", "wall s", "files/s", "MB/s", "peak RSS MB", "× floor", "× faster than ref", "CPU s",
            "CPU × floor", "records"]  # fmt: skip
    lines = [
        f"{result['files']:,} files ({result['bytes'] / 1e6:,.1f} MB), {result['records']:,} records, "
        f"{result['cache']} cache, {result['threads']} threads, median of {result['repeat']}"
        + (f"; eviction before each run: {result['eviction']}" if result.get("eviction") else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in result["results"]:
        if r["status"] == "skipped":
            lines.append(f"| {r['approach']} | skipped: {r['detail']} |" + " |" * (len(head) - 2))
            continue
        records = r["records"]
        if r["status"] != "ok":
            records = f"{r['status']}: {r['detail']}"[:100] + (f" ({r['records']})" if r["records"] else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["approach"],
                    _fmt(r["wall_s"], ".2f"),
                    _fmt(r["files_per_s"], ",.0f"),
                    _fmt(r["mb_per_s"], ",.0f"),
                    _fmt(r["peak_rss_mb"], ",.0f"),
                    _fmt(r["x_floor"], ".2f"),
                    _fmt(r["speedup_vs_reference"], ".2f"),
                    _fmt(r["cpu_s"], ".2f"),
                    _fmt(r["x_floor_cpu"], ".2f"),
                    records,
                ]
            )
            + " |"
        )
    lines.append("")
    for t in result["targets"]:
        lines.append(
            f"{'met    ' if t['met'] else 'NOT met'}  {t['target']}" + (f": {t['value']}" if "value" in t else "")
        )
    m = result["machine"]
    lines += [
        "",
        f"load average (1, 5, 15 min) at the end: {result['load_average_at_end']}",
        f"machine: {m['cpu']}, {m['cores_usable']} usable cores, {m['memory']} RAM, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"command: {result['command']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
