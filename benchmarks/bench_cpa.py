"""CPA peer comparison: the issue's three targets, each side in its own subprocess, one run.

    python -m benchmarks.bench_cpa [--queries 1000000] [--json] [--repeat R] [--baseline-src DIR]

1. counting: `CPA.observe_queries` over N seeded queries of ~12 words vs `collections.Counter` over
   `str.split()` unigrams + bigrams (target: >= 20x faster).
2. warm start: the first observe call of a new process whose state dir holds the Numba cache and the
   compile history vs one with an empty state dir, which must compile (target: <= 5% of it).
3. state save and load after the N queries (target: each < 100 ms).
4. `stats` on the state of the N queries: the reference tables' load (cold, per language; target: < 50 ms)
   and `jenova-fast cpa stats` as a user runs it, process start to output (target: interactive, < 1 s).

Each worker prints one JSON line (times and its peak RSS); the table shows them with the ratios.
Counting times exclude query generation; the CPA side's kernels are loaded from a warmed cache first.

`--baseline-src DIR` also counts with the jenova_fast package found in DIR (an older version, e.g.
`git archive fab3141 jenova_fast | tar -x -C DIR`, the last one without document frequencies), warmed the
same way, right before this version: the difference is what the document-frequency and session
bookkeeping costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WARM_QUERIES = 100


def make_queries(n: int, seed: int = 0) -> list[str]:
    """Seeded queries, 6-18 words (mean 12) from a Zipf-distributed 50k-word vocabulary, some non-ASCII."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéüßø"))
    lengths = rng.integers(2, 10, size=50_000)
    vocab = ["".join(rng.choice(letters, size=k)) for k in lengths]
    vocab[:8] = ["the", "How", "do", "I", "Jenova", "what", "is", "my"]
    sizes = rng.integers(6, 19, size=n)
    ids = (rng.zipf(1.3, size=int(sizes.sum())) - 1) % len(vocab)
    words = [vocab[i] for i in ids.tolist()]
    out, pos = [], 0
    for k in sizes.tolist():
        out.append(" ".join(words[pos:pos + k]))
        pos += k
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# workers ------------------------------------------------------------------------------------------------
def worker_counter(n: int) -> dict:
    from collections import Counter
    from itertools import pairwise

    queries = make_queries(n)
    start, cpu = time.perf_counter(), time.process_time()
    counts: Counter = Counter()
    for q in queries:
        w = q.split()
        counts.update(w)
        counts.update(pairwise(w))
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "distinct": len(counts),
            "rss_mb": _rss_mb()}


def worker_cpa(n: int, state_dir: str) -> dict:
    from jenova_fast.cpa import CPA, state

    queries = make_queries(n)
    cpa = CPA(state_dir)
    with cpa.batch():
        start, cpu = time.perf_counter(), time.process_time()
        words = cpa.observe_queries(queries)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        save_start = time.perf_counter()
    save = time.perf_counter() - save_start  # the batch's exit saves (temp file, fsync, rename)
    path = Path(state_dir) / state.STATE_FILE
    load_start = time.perf_counter()
    state.read(path)
    load = time.perf_counter() - load_start
    return {"seconds": seconds, "cpu": cpu, "words": words, "tracked": cpa.state.ngrams.used, "save": save,
            "load": load, "state_bytes": path.stat().st_size, "rss_mb": _rss_mb()}


def worker_kernel(n: int, state_dir: str, repeat: int = 5) -> dict:
    """The counting kernel alone (count_hashes over batches tokenized beforehand), best of `repeat` (wall
    and CPU apart: CPU time is the steadier on a busy machine), for this version or an older one (whose
    kernel has no document or session arrays)."""
    import numpy as np

    from jenova_fast.cpa import CPA, counters, counting, jit_cache, kernels, unicode_tables
    from jenova_fast.cpa.config import NGRAM_SKETCH_DEPTH, NGRAM_SKETCH_WIDTH, NGRAM_TOPK, QUERY_BATCH

    queries = make_queries(n)
    CPA(state_dir)  # binds the warmed cache
    tables = unicode_tables.tables(Path(state_dir) / "tables")
    tokenize = jit_cache.ensure("tokenize_queries", state_dir)
    count = jit_cache.ensure("count_hashes", state_dir)
    with_docs = len(kernels.SIGNATURES["count_hashes"].args) > 9
    batches = []
    for batch in counting._batches(queries, QUERY_BATCH):
        buf = counting._utf8(batch)
        ngrams, spans = np.empty(buf.size + 1, np.uint64), np.empty((3, buf.size + 1), np.int64)
        if with_docs:
            m, _, docs = tokenize(buf, tables.fold_off, tables.fold_cp, tables.is_word, ngrams, spans[0], spans[1],
                                  spans[2])
            batches.append((ngrams[:m], spans[0, :m], spans[1, :m], spans[2, :docs], np.ones(docs, np.int64)))
        else:
            m, _ = tokenize(buf, tables.fold_off, tables.fold_cp, tables.is_word, ngrams, spans[0], spans[1])
            batches.append((ngrams[:m], spans[0, :m], spans[1, :m]))
    del queries
    best = best_cpu = float("inf")
    for _ in range(repeat):
        hh = counters.HeavyHitters(NGRAM_TOPK, NGRAM_SKETCH_DEPTH, NGRAM_SKETCH_WIDTH)
        start, cpu = time.perf_counter(), time.process_time()
        for b in batches:
            rep = hh.slots[:, kernels.REP_START] if hh.slots.shape[0] == NGRAM_TOPK else hh.slots[kernels.REP_START]
            rep.fill(-1)  # as count_queries does per batch (a slot per row since schema 3, a field per row before)
            keys = [hh.keys] if hasattr(hh, "keys") else []  # the heap's keys apart from the slots since schema 3
            count(*b, hh.sketch, hh.hashes, hh.slots, *keys, hh.heap, hh.native_index(), hh.meta)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    ngrams_total = sum(b[0].size for b in batches)
    return {"seconds": best, "cpu": best_cpu, "ngrams": ngrams_total, "ns_per_ngram": best / ngrams_total * 1e9,
            "cpu_ns_per_ngram": best_cpu / ngrams_total * 1e9, "rss_mb": _rss_mb()}


def worker_first_observe(state_dir: str) -> dict:
    queries = make_queries(WARM_QUERIES, seed=1)
    start = time.perf_counter()
    from jenova_fast.cpa import CPA

    cpa = CPA(state_dir)
    ready = time.perf_counter()
    cpa.observe_queries(queries)
    done = time.perf_counter()
    return {"start": ready - start, "first_observe": done - ready, "warmed": cpa.warmed, "rss_mb": _rss_mb()}


def worker_stats(state_dir: str) -> dict:
    """The reference tables read cold (the first call in a process, per language), then `stats()` on the
    state, the CPA already open (the CLI's whole run is timed by the driver)."""
    from jenova_fast.cpa import CPA, reference

    tables = {}
    for lang in reference.LANGUAGES:
        start = time.perf_counter()
        reference.table(lang)
        tables[lang] = time.perf_counter() - start
    reference.table.cache_clear()  # stats() reads what it needs itself
    cpa = CPA(state_dir)
    start = time.perf_counter()
    stats = cpa.stats(20)
    return {"tables": tables, "stats": time.perf_counter() - start, "tracked": stats["queries"]["tracked"],
            "top": stats["queries"]["top"][0]["text"], "rss_mb": _rss_mb()}


# driver -------------------------------------------------------------------------------------------------
def _run(*args: str, src: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) if src is None else f"{src}{os.pathsep}{REPO}"}
    env.pop("JENOVA_FAST_PURE", None)
    env.pop("NUMBA_DISABLE_JIT", None)
    # `-m` puts the working directory first on sys.path: run from the baseline's tree so its package wins
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_cpa", "--worker", *args], env=env,
                          cwd=REPO if src is None else src, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"worker {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time, with every run's wall and CPU seconds beside it."""
    median = sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]
    return {**median, "runs": [[r["seconds"], r["cpu"]] for r in runs],
            "median_cpu": sorted(r["cpu"] for r in runs)[(len(runs) - 1) // 2]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cpa", description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="count R times (alternating with the baseline), report the median (default 1)")
    p.add_argument("--baseline-src", type=Path, metavar="DIR",
                   help="also count with the jenova_fast package in DIR (an older version) for comparison")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        result = {"counter": lambda: worker_counter(int(rest[0])),
                  "cpa": lambda: worker_cpa(int(rest[0]), rest[1]),
                  "first": lambda: worker_first_observe(rest[0]),
                  "kernel": lambda: worker_kernel(int(rest[0]), rest[1]),
                  "stats": lambda: worker_stats(rest[0])}[kind]()
        import jenova_fast  # after the timed work: the first-observe worker times the import

        result["jenova_fast"] = str(Path(jenova_fast.__file__).parent.parent)  # which tree was timed
        print(json.dumps(result))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench_cpa_"))
    try:
        cold_dir, count_dir = tmp / "cold", tmp / "count"
        cold = _run("first", str(cold_dir))  # empty state dir: compiles, fills its cache and history
        warm = _run("first", str(cold_dir))  # same dir, new process: loads from cache ahead of the call
        shutil.copytree(cold_dir, count_dir)
        (count_dir / "state.npz").unlink()
        baseline = kernel = kernel_base = None
        if args.baseline_src is not None:
            args.baseline_src = args.baseline_src.resolve()
            if not (args.baseline_src / "jenova_fast" / "cpa").is_dir():
                raise SystemExit(f"--baseline-src {args.baseline_src} holds no jenova_fast/cpa; extract one with "
                                 f"`git archive <commit> jenova_fast | tar -x -C {args.baseline_src}`")
            base_dir = tmp / "baseline"
            _run("first", str(base_dir), src=args.baseline_src)  # compile the old kernels into its own cache
            kernel_base = _run("kernel", str(args.queries), str(base_dir), src=args.baseline_src)
            kernel = _run("kernel", str(args.queries), str(count_dir))
        runs: dict[str, list[dict]] = {"cpa": [], "baseline": []}
        for _ in range(args.repeat):  # the two versions alternate, so a busy spell hits both
            if args.baseline_src is not None:
                (base_dir / "state.npz").unlink(missing_ok=True)
                runs["baseline"].append(_run("cpa", str(args.queries), str(base_dir), src=args.baseline_src))
            (count_dir / "state.npz").unlink(missing_ok=True)
            runs["cpa"].append(_run("cpa", str(args.queries), str(count_dir)))
        cpa = _median_run(runs["cpa"])
        baseline = _median_run(runs["baseline"]) if runs["baseline"] else None
        stats = _run("stats", str(count_dir))
        cli = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jenova_fast.cpa", "stats", "--state-dir", str(count_dir)],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, check=True)
            cli.append(time.perf_counter() - start)
        stats["cli"] = sorted(cli)[1]
        counter = _run("counter", str(args.queries))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {
        "queries": args.queries,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg": os.getloadavg(), "python": platform.python_version()},
        "counting": {"cpa": cpa, "counter": counter, "speedup": counter["seconds"] / cpa["seconds"],
                     "speedup_cpu": counter["cpu"] / cpa["cpu"], "target": ">= 20x", "baseline": baseline,
                     "kernel_only": None if kernel is None else {"cpa": kernel, "baseline": kernel_base}},
        "warm_start": {"cold": cold, "warm": warm, "ratio": warm["first_observe"] / cold["first_observe"],
                       "target": "<= 0.05"},
        "state": {"save_ms": cpa["save"] * 1000, "load_ms": cpa["load"] * 1000, "bytes": cpa["state_bytes"],
                  "target": "< 100 ms each"},
        "stats": {"tables_ms": {k: v * 1000 for k, v in stats["tables"].items()}, "stats_ms": stats["stats"] * 1000,
                  "cli_s": stats["cli"], "target": "tables < 50 ms, stats interactive"},
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    c, w, s = results["counting"], results["warm_start"], results["state"]
    print(f"CPA benchmarks, {args.queries:,} queries, load average {results['machine']['loadavg'][0]:.1f}")
    print(f"{'measure':<44}{'jenova_fast.cpa':>16}{'peer':>14}{'ratio':>10}  target")
    print(f"{'count n-grams (s) vs Counter(str.split())':<44}{cpa['seconds']:>16.3f}{counter['seconds']:>14.3f}"
          f"{c['speedup']:>9.1f}x  >= 20x")
    print(f"{'  the same in CPU seconds (process_time)':<44}{cpa['cpu']:>16.3f}{counter['cpu']:>14.3f}"
          f"{c['speedup_cpu']:>9.1f}x")
    if baseline is not None:
        bc, cc = baseline["median_cpu"], cpa["median_cpu"]
        print(f"  baseline ({args.baseline_src}, median of {args.repeat}): {baseline['seconds']:.3f} s wall, "
              f"{bc:.3f} CPU s; this version {cpa['seconds'] - baseline['seconds']:+.3f} s wall "
              f"({cpa['seconds'] / baseline['seconds'] - 1:+.1%}), {cc - bc:+.3f} CPU s ({cc / bc - 1:+.1%})")
        assert kernel is not None and kernel_base is not None
        print(f"  the counting kernel alone (best of 5, CPU): {kernel['cpu']:.3f} s vs baseline "
              f"{kernel_base['cpu']:.3f} s, {kernel['cpu_ns_per_ngram']:.1f} vs "
              f"{kernel_base['cpu_ns_per_ngram']:.1f} ns per n-gram ({kernel['cpu'] / kernel_base['cpu'] - 1:+.1%})")
    print(f"{'first observe (s): warm vs empty cache':<44}{warm['first_observe']:>16.4f}"
          f"{cold['first_observe']:>14.3f}{w['ratio']:>10.4f}  <= 0.05")
    print(f"{'state save / load (ms)':<44}{s['save_ms']:>8.1f} / {s['load_ms']:<6.1f}{'':>14}{'':>10}  < 100 each")
    t = results["stats"]
    tables = ", ".join(f"{k} {v:.1f}" for k, v in t["tables_ms"].items())
    print(f"{'reference table load, cold (ms)':<44}{tables:>40}  < 50 each")
    print(f"{'stats() on this state (ms)':<44}{t['stats_ms']:>16.1f}")
    print(f"{'`jenova-fast cpa stats`, process to output (s)':<44}{t['cli_s']:>16.3f}{'':>24}  interactive")
    print(f"peak RSS: cpa {cpa['rss_mb']:.0f} MB, Counter {counter['rss_mb']:.0f} MB; state file "
          f"{s['bytes'] / 1e6:.1f} MB; process start to ready: cold {cold['start']:.2f}s, warm {warm['start']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
