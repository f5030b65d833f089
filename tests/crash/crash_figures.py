"""Crash figures (issue 10, item 2): kill the three writers again and again and check what they leave.

    python -m tests.crash.crash_figures            # the published figures: 200k-file store, 50/50/20 kills
    python -m tests.crash.crash_figures --quick    # a smaller store and 5 kills each: a minute or two

For each writer (`python -m jenova_fast prepare` over a large generated store, `python -m jenova_fast cpa
observe`, `python -m jenova_fast install-model`: the `jenova-fast` console script's entry point) and each
signal (SIGKILL, SIGTERM, SIGINT), every round:

1. starts the real command and sends the signal at a random moment: prepare, uniformly over a run's measured
   duration; cpa observe, while its save is under way (from the moment a file that is not an expected output
   appears in the state directory, plus a random part of the measured save window); install-model, half
   uniformly, half while the new model is being written;
2. checks the previous output is still valid: `train.jsonl` has exactly the bytes of the previous run (which
   were parsed line by line once); the CPA state loads and holds the old or the new totals; `jenova.gguf` is
   the old or the new model, byte for byte, and a GGUF that gguf's reader opens;
3. for SIGTERM and SIGINT: the exit is clean (128 + signal, or ended by it) with at most one line on stderr,
   no traceback and no `Exception ignored` (a KeyboardInterrupt during the interpreter's shutdown); a
   traceback while the interpreter was still starting (before any code of ours could handle the signal)
   is counted apart;
4. runs the command again to completion (exit 0, the right output) and counts the leftovers: every file or
   directory under the output directories that is not an expected output (the set a clean run leaves,
   recorded before the first kill), whatever its name.

It prints a table of the figures (and writes them as JSON with --json). Nothing is mocked: these are the
project's own entry points in subprocesses, on real files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
TRACEBACK = b"Traceback (most recent call last)"
IGNORED = b"Exception ignored"  # a KeyboardInterrupt in the interpreter's shutdown (threading, atexit, __del__)
# A KeyboardInterrupt raised while the interpreter was still starting (its streams, site, runpy), before the
# entry point's handler (jenova_fast/_signals.py) exists: counted apart from tracebacks of our own code.
STARTUP = (b"<frozen runpy>", b"<frozen importlib._bootstrap", b"<frozen site>", b"<frozen codecs>",
           b"Python runtime state: initial\n", b"Python runtime state: core initialized\n")
IN_MAIN = re.compile(rb'jenova_fast/[^"]*", line \d+, in main\n')  # our main() (not site.py's)
RUN_TIMEOUT_S = 900.0


def _sha(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except FileNotFoundError:
        return None


def _entries(dirs: list[Path]) -> dict[str, int]:
    """Every file, directory and link under `dirs` (relative to the dir's parent): its size in bytes."""
    found: dict[str, int] = {}
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                found[os.fspath(path.relative_to(top.parent))] = 0 if path.is_dir() else st.st_size
    return found


@dataclasses.dataclass
class Row:
    writer: str
    signal: str
    rounds: int = 0
    landed: int = 0  # the signal reached a running process
    mid_write: int = 0  # ... while a file that is not an expected output existed (a write under way)
    previous_valid: int = 0
    clean_exits: int = 0
    tracebacks: int = 0  # after start-up
    startup_tracebacks: int = 0  # SIGINT while the interpreter was still importing our modules
    max_exit_s: float = 0.0  # signal -> process gone
    left_by_kills: int = 0  # unexpected entries right after the kills (summed over rounds)
    next_runs_ok: int = 0
    leftovers_max: int = 0  # unexpected entries after a next successful run, the worst round
    leftovers_end: int = 0  # ... after the last one
    leftover_bytes_end: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


class Writer:
    """One writer under test: its command, its output directories and what a valid output is."""

    name = ""
    mode = "uniform"  # when to signal: "uniform", "mid-write" or "mixed"

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.expected: set[str] = set()
        self.run_s = 1.0  # a whole run, measured
        self.write_s = 0.1  # from the first unexpected entry to exit, measured

    dirs: list[Path]

    def setup(self, log: Callable[[str], None]) -> None:
        raise NotImplementedError

    def argv(self, round_: int) -> list[str]:
        raise NotImplementedError

    def snapshot(self) -> object:
        raise NotImplementedError

    def check_after_kill(self, before: object, round_: int) -> str | None:
        """None when the output is the old one or the complete new one; else what is wrong."""
        raise NotImplementedError

    def check_after_run(self, before: object, round_: int) -> str | None:
        raise NotImplementedError

    def leftovers(self) -> dict[str, int]:
        return {k: v for k, v in _entries(self.dirs).items() if k not in self.expected}

    def top(self) -> set[str]:
        """The names directly in the output directories (where temp files appear), keyed as in _entries: a
        cheap listing to poll."""
        names = set()
        for d in self.dirs:
            try:
                names.update(f"{d.name}/{n}" for n in os.listdir(d))
            except FileNotFoundError:
                pass
        return names

    def calibrate(self, runs: int = 3) -> None:
        """Run to completion `runs` times: the expected outputs (what a clean run leaves), a run's duration and
        the write window (the longest time a new entry that is gone by the end, a temp file, existed)."""
        totals, windows = [], []
        for i in range(runs):
            before = self.snapshot()
            seen: dict[str, list[float]] = {}
            start = set(_entries(self.dirs))
            t0 = time.monotonic()
            errors = self.work / "stderr.txt"
            with open(errors, "wb") as f, subprocess.Popen(self.argv(i), env=self.env, stdout=subprocess.DEVNULL,
                                                           stderr=f) as proc:
                while proc.poll() is None:
                    now = time.monotonic()
                    for name in self.top() - start:
                        seen.setdefault(name, [now, now])[1] = now
                    time.sleep(0.0002)
            err = errors.read_bytes()
            t1 = time.monotonic()
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name}: {self.argv(i)} failed ({proc.returncode}): {err.decode()}")
            problem = self.check_after_run(before, i)
            if problem:
                raise RuntimeError(f"{self.name}: calibration run {i}: {problem}")
            after = _entries(self.dirs)
            self.expected |= set(after)
            totals.append(t1 - t0)
            windows += [last - first for name, (first, last) in seen.items() if name not in after]
        self.run_s = sum(totals) / len(totals)
        if windows:
            self.write_s = max(windows)


class Prepare(Writer):
    name = "prepare"
    mode = "uniform"

    def __init__(self, work: Path, env: dict[str, str], insights: int) -> None:
        super().__init__(work, env)
        self.store = work / f"store-{insights}"
        self.insights = insights
        self.out = work / "prepare-out" / "train.jsonl"
        self.dirs = [self.out.parent]
        self.reference: str | None = None

    def setup(self, log: Callable[[str], None]) -> None:
        from jenova_fast.demo import ensure_store

        t0 = time.monotonic()
        ensure_store(self.store, self.insights, seed=10)
        log(f"prepare: store of {self.insights} insight files at {self.store} ({time.monotonic() - t0:.0f}s)")
        shutil.rmtree(self.out.parent, ignore_errors=True)
        self.out.parent.mkdir(parents=True)

    def argv(self, round_: int) -> list[str]:
        return [sys.executable, "-m", "jenova_fast", "prepare", "--insights-dir", str(self.store),
                "--output", str(self.out), "--quiet"]

    def snapshot(self) -> object:
        return _sha(self.out)

    def check_after_kill(self, before: object, round_: int) -> str | None:
        now = _sha(self.out)
        return None if now == before else f"train.jsonl changed: {before} -> {now}"

    def check_after_run(self, before: object, round_: int) -> str | None:
        now = _sha(self.out)
        if self.reference is None:  # the first complete output: every line must parse
            with open(self.out, "rb") as f:
                lines = sum(1 for line in f if json.loads(line))
            if lines == 0:
                return "train.jsonl is empty"
            self.reference = now
        return None if now == self.reference else "train.jsonl differs from the first run's bytes"


class CpaObserve(Writer):
    name = "cpa observe"
    mode = "mid-write"

    def __init__(self, work: Path, env: dict[str, str], queries: int) -> None:
        super().__init__(work, env)
        self.state_dir = work / "cpa" / ".cpa_state"
        self.history = work / "cpa-history.jsonl"
        self.queries = queries
        self.dirs = [self.state_dir]

    def setup(self, log: Callable[[str], None]) -> None:
        rng = random.Random(11)
        words = ("garden tomato rust borrow checker jazz chord sleep cycle chess opening café espresso "
                 "東京 train budget thesis chapter deadline neural network lemma proof").split()
        with open(self.history, "w", encoding="utf-8") as f:
            for i in range(self.queries):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
                f.write(json.dumps({"user_message": text + "?", "ai_message": "ok",
                                    "timestamp": 1_700_000_000 + 60 * i}) + "\n")
        shutil.rmtree(self.state_dir.parent, ignore_errors=True)
        self.state_dir.parent.mkdir(parents=True)

    def argv(self, round_: int) -> list[str]:
        return [sys.executable, "-m", "jenova_fast", "cpa", "observe", "--state-dir", str(self.state_dir),
                "--history", str(self.history)]

    def _queries(self) -> int | str:
        from jenova_fast.cpa import state

        path = self.state_dir / state.STATE_FILE
        if not path.exists():
            return 0
        try:
            return state.read(path).queries
        except Exception as exc:  # any failure to load is the finding
            return f"state does not load: {type(exc).__name__}: {exc}"

    def snapshot(self) -> object:
        return self._queries()

    def check_after_kill(self, before: object, round_: int) -> str | None:
        now = self._queries()
        if isinstance(now, str):
            return now
        assert isinstance(before, int)
        return None if now in (before, before + self.queries) else f"queries {before} -> {now}"

    def check_after_run(self, before: object, round_: int) -> str | None:
        now = self._queries()
        if isinstance(now, str):
            return now
        assert isinstance(before, int)
        return None if now == before + self.queries else f"queries {before} -> {now}, not +{self.queries}"


class InstallModel(Writer):
    name = "install-model"
    mode = "mixed"

    def __init__(self, work: Path, env: dict[str, str], n_embd: int, n_vocab: int) -> None:
        super().__init__(work, env)
        self.models = work / "install" / "models"
        self.candidates = [work / "candidates" / "a.gguf", work / "candidates" / "b.gguf"]
        self.shape = {"n_embd": n_embd, "n_vocab": n_vocab, "n_ff": 2 * n_embd}
        self.dirs = [self.models]
        self.shas: list[str] = []

    def setup(self, log: Callable[[str], None]) -> None:
        from jenova_fast.finetune.tiny_model import write_tiny_model

        self.candidates[0].parent.mkdir(parents=True, exist_ok=True)
        for seed, path in enumerate(self.candidates):
            if not path.exists():
                write_tiny_model(path, seed=seed, **self.shape)
        self.shas = [_sha(p) or "" for p in self.candidates]
        log(f"install-model: two {self.candidates[0].stat().st_size / 1e6:.0f} MB models")
        shutil.rmtree(self.models.parent, ignore_errors=True)
        self.models.mkdir(parents=True)

    def candidate(self, round_: int) -> int:
        return round_ % 2

    def argv(self, round_: int) -> list[str]:
        return [sys.executable, "-m", "jenova_fast", "install-model", str(self.candidates[self.candidate(round_)]),
                "--models-dir", str(self.models)]

    def _installed(self) -> tuple[str | None, str | None]:
        return _sha(self.models / "jenova.gguf"), _sha(self.models / "jenova.prev.gguf")

    def snapshot(self) -> object:
        return self._installed()

    def _valid_gguf(self, path: Path) -> str | None:
        from gguf import GGUFReader

        try:
            reader = GGUFReader(path)
            if not reader.tensors:
                return f"{path.name}: no tensors"
        except Exception as exc:  # any failure to read is the finding
            return f"{path.name} is not a valid GGUF: {type(exc).__name__}: {exc}"
        return None

    def check_after_kill(self, before: object, round_: int) -> str | None:
        old, _ = before  # type: ignore[misc]
        now, prev = self._installed()
        new = self.shas[self.candidate(round_)]
        if now not in (old, new):
            return f"jenova.gguf is neither the old nor the new model ({now})"
        if prev is not None and prev not in self.shas:
            return "jenova.prev.gguf is not one of the models"
        return self._valid_gguf(self.models / "jenova.gguf") if now is not None else None

    def check_after_run(self, before: object, round_: int) -> str | None:
        now, _ = self._installed()
        if now != self.shas[self.candidate(round_)]:
            return "jenova.gguf is not the model just installed"
        return self._valid_gguf(self.models / "jenova.gguf")


def _signal_at(writer: Writer, proc: subprocess.Popen[bytes], mode: str, rng: random.Random,
               existing: set[str]) -> tuple[bool, bool]:
    """Wait for the moment `mode` picks, then (running, writing): is the process alive, and is a new entry
    that is not an expected output (a write under way) there. `existing`: what earlier rounds left."""
    known = writer.expected | existing

    def writing() -> bool:
        return bool(writer.top() - known)

    if mode == "uniform":
        deadline = time.monotonic() + rng.uniform(0.0, writer.run_s)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
    else:  # from the moment a temp file appears, a random part of the measured write window
        while proc.poll() is None and not writing():
            time.sleep(0.0001)
        deadline = time.monotonic() + rng.uniform(0.0, writer.write_s)
        while proc.poll() is None and time.monotonic() < deadline:
            pass
    return proc.poll() is None, writing()


def campaign(writer: Writer, sig_name: str, rounds: int, rng: random.Random,
             log: Callable[[str], None] = print) -> Row:
    sig = SIGNALS[sig_name]
    row = Row(writer.name, f"SIG{sig_name}", rounds)
    clean_codes = {-sig, 128 + sig}  # ended by the signal, or by our handling of it
    errors = writer.work / "stderr.txt"
    for r in range(rounds):
        before = writer.snapshot()
        existing = writer.leftovers()  # left by earlier rounds (when the next run did not remove them)
        mode = writer.mode if writer.mode != "mixed" else ("uniform", "mid-write")[r % 2]
        with open(errors, "wb") as err, subprocess.Popen(writer.argv(r), env=writer.env, stdout=subprocess.DEVNULL,
                                                         stderr=err) as proc:
            running, writing = _signal_at(writer, proc, mode, rng, set(existing))
            sent = time.monotonic()
            if running:
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    running = False
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
            gone = time.monotonic() - sent
        stderr = errors.read_bytes()
        landed = running and rc != 0
        row.landed += landed
        row.mid_write += landed and writing
        if landed:
            row.max_exit_s = max(row.max_exit_s, gone)
        problem = writer.check_after_kill(before, r)
        if problem is None:
            row.previous_valid += 1
        else:
            row.problems.append(f"round {r}: after the kill: {problem}")
        tail = stderr[-400:].decode(errors="replace")
        if TRACEBACK in stderr and not IN_MAIN.search(stderr) and any(m in stderr for m in STARTUP):
            row.startup_tracebacks += 1
        elif TRACEBACK in stderr or IGNORED in stderr:
            row.tracebacks += 1
            (writer.work / f"traceback-{writer.name.replace(' ', '-')}-{row.signal}-{r}.txt").write_bytes(stderr)
            row.problems.append(f"round {r}: traceback (rc {rc}): ...{tail}")
        elif rc == 0 or (rc in clean_codes and stderr.count(b"\n") <= 1):
            row.clean_exits += 1
        elif rc in clean_codes:
            row.problems.append(f"round {r}: more than one line on stderr (rc {rc}): ...{tail}")
        else:
            row.problems.append(f"round {r}: exit code {rc}: {tail}")
        row.left_by_kills += len(set(writer.leftovers()) - set(existing))
        # the next run, to completion
        before = writer.snapshot()
        done = subprocess.run(writer.argv(r), env=writer.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=RUN_TIMEOUT_S, check=False)
        problem = writer.check_after_run(before, r) if done.returncode == 0 else (
            f"exit {done.returncode}: {done.stderr[-300:].decode(errors='replace')}")
        if problem is None:
            row.next_runs_ok += 1
        else:
            row.problems.append(f"round {r}: the next run: {problem}")
        left = writer.leftovers()
        row.leftovers_max = max(row.leftovers_max, len(left))
        row.leftovers_end, row.leftover_bytes_end = len(left), sum(left.values())
    log(f"{writer.name} SIG{sig_name}: {row.landed}/{rounds} landed ({row.mid_write} mid-write), previous valid "
        f"{row.previous_valid}/{rounds}, leftovers after the next runs: max {row.leftovers_max}, at the end "
        f"{row.leftovers_end} ({row.leftover_bytes_end / 1e6:.1f} MB)")
    return row


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def table(rows: list[Row]) -> str:
    head = ("writer", "signal", "kills", "landed", "mid-write", "previous valid", "clean exit",
            "tracebacks (start-up / later)",
            "max exit s", "left by kills", "next run ok", "leftovers after next run (max / end)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (r.writer, r.signal, r.rounds, r.landed, r.mid_write, f"{r.previous_valid}/{r.rounds}",
                 f"{r.clean_exits}/{r.rounds}" if r.signal != "SIGKILL" else "-",
                 f"{r.startup_tracebacks} / {r.tracebacks}",
                 f"{r.max_exit_s:.2f}", r.left_by_kills, f"{r.next_runs_ok}/{r.rounds}",
                 f"{r.leftovers_max} / {r.leftovers_end} ({_mb(r.leftover_bytes_end)})")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def run(work: Path, *, insights: int, kills: dict[str, int], signals: list[str], queries: int,
        model: tuple[int, int], cpa_pure: bool = False, mode: str | None = None, seed: int = 0,
        log: Callable[[str], None] = print) -> list[Row]:
    """Every campaign; `kills` maps a writer ("prepare", "cpa", "install") to its rounds per signal; `mode`
    overrides every writer's choice of moment ("uniform", "mid-write", "mixed")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("JENOVA_FAST_PURE", None)
    writers: list[Writer] = []
    if kills.get("prepare"):
        writers.append(Prepare(work, env, insights))
    if kills.get("cpa"):
        writers.append(CpaObserve(work, {**env, "JENOVA_FAST_PURE": "1"} if cpa_pure else env, queries))
    if kills.get("install"):
        writers.append(InstallModel(work, env, *model))
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell (`cmd &`): SIGINT is ignored, and an ignored signal stays
        # ignored across exec, so the children would never see our SIGINTs. A handled one is reset to default.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(seed)
    rows = []
    for writer in writers:
        writer.mode = mode or writer.mode
        key = {"prepare": "prepare", "cpa observe": "cpa", "install-model": "install"}[writer.name]
        for sig_name in signals:
            writer.setup(log)  # each signal starts from a clean output directory
            t0 = time.monotonic()
            writer.calibrate()
            log(f"{writer.name}: a run takes {writer.run_s:.2f}s, its write window {writer.write_s:.3f}s; expected "
                f"outputs: {len(writer.expected)} entries ({time.monotonic() - t0:.0f}s)")
            rows.append(campaign(writer, sig_name, kills[key], rng, log))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.crash.crash_figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5,000 insights, 5 kills of each writer per signal")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one in $TMPDIR, removed)")
    p.add_argument("--insights", type=int, default=None, help="store size (default 200,000; --quick 5,000)")
    p.add_argument("--kills", default=None, help="rounds per signal, e.g. prepare=50,cpa=50,install=20 (the default)")
    p.add_argument("--signals", default="KILL,TERM,INT", help="default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpa-pure", action="store_true",
                   help="observe with the CPA's pure twin (the same state writer, no Numba import: faster rounds)")
    p.add_argument("--mode", choices=("uniform", "mid-write", "mixed"), default=None,
                   help="when every writer is signalled (default: each writer's own, as above)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    p.add_argument("--table", type=Path, nargs="+", default=None, metavar="JSON",
                   help="only print one table of the rows of earlier --json files")
    args = p.parse_args(argv)
    if args.table:
        rows = [Row(**row) for f in args.table for row in json.loads(f.read_text(encoding="utf-8"))]
        print(table(rows))
        return 0
    kills = {"prepare": 5, "cpa": 5, "install": 5} if args.quick else {"prepare": 50, "cpa": 50, "install": 20}
    if args.kills:
        kills.update({k: int(v) for k, v in (item.split("=") for item in args.kills.split(","))})
    insights = args.insights or (5_000 if args.quick else 200_000)
    model = (256, 8_000) if args.quick else (512, 32_000)
    signals = [s.strip().upper().removeprefix("SIG") for s in args.signals.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="jenova-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        rows = run(work, insights=insights, kills=kills, signals=signals, queries=2_000, model=model,
                   cpa_pure=args.cpa_pure, mode=args.mode, seed=args.seed, log=lambda s: print(s, flush=True))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    for row in rows:
        for problem in row.problems[:5]:
            print(f"{row.writer} {row.signal}: {problem}")
    print(f"\n{sum(r.rounds for r in rows)} rounds in {time.monotonic() - start:.0f}s "
          f"(store {insights} insights; {' '.join(sys.argv[1:]) or 'defaults'})")
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) + "\n", encoding="utf-8")
    return 0 if all(not r.problems and r.leftovers_max == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
