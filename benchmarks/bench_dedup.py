"""`prepare --dedup`: precision and recall on planted duplicates, and what each option costs.

    python -m benchmarks.bench_dedup [--insights 20000] [--planted 2000] [--timing-insights 200000] [--json]

1. Quality: a seeded demo store with `--planted` duplicates (`jenova_fast.demo.plant_duplicates`: an exact
   copy; other case and spacing; a word replaced; a short phrase appended; its two halves swapped), and the
   same store without them. For each mode and threshold, pairs found in the same group are compared with
   the planted pairs: precision = planted pairs found / pairs grouped, recall = planted pairs found /
   planted pairs (also per kind of change).
2. Cost: wall time of `python -m jenova_fast.prepare` (native, one subprocess each, warm cache, Numba
   kernels cached) on a `--timing-insights` store: plain, `--eval-fraction 0.05`, `--dedup exact`,
   `--dedup near`, `--dedup near --eval-fraction 0.05`, `--format sharegpt`, `--with-metadata`; median
   of `--repeat` runs; `--format text` and `--max-tokens` (llama-cpp-python, a tiny GGUF's template and
   tokenizer) for `--slow-repeat` rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def pairs_of(groups: list[dict]) -> set[frozenset[str]]:
    out = set()
    for group in groups:
        members = [group["kept"], *group["dropped"]]
        out.update(frozenset(p) for p in itertools.combinations(members, 2))
    return out


def jaccard(a: str, b: str) -> float:
    from jenova_fast.prepare.dedup import normalize
    from jenova_fast.prepare.minhash_py import shingles

    sa, sb = (set(shingles(normalize(json.loads(Path(p).read_bytes())["content"]).encode())) for p in (a, b))
    return len(sa & sb) / len(sa | sb)


def quality(work: Path, insights: int, planted_count: int) -> list[dict]:
    import jenova_fast
    from jenova_fast.demo import DUPLICATE_KINDS, plant_duplicates, write_store

    clean, dirty = work / "clean", work / "planted"
    write_store(clean, insights, seed=21)
    write_store(dirty, insights, seed=21)
    planted = plant_duplicates(dirty, planted_count, seed=22)
    truth = {frozenset([str(dirty / a), str(dirty / b)]): kind for a, b, kind in planted}
    similarity = {pair: jaccard(*pair) for pair in truth}
    rows = []
    for mode, threshold in (("exact", None), ("near", 0.8), ("near", 0.7), ("near", 0.6), ("near", 0.5)):
        kwargs = {"dedup": mode} | ({"near_threshold": threshold} if threshold else {})
        start = time.perf_counter()
        report = jenova_fast.prepare(dirty, work / "out.jsonl", **kwargs)
        seconds = time.perf_counter() - start
        found = pairs_of(report.dedup["members"])
        hits = found & truth.keys()
        per_kind = {
            kind: sum(1 for p in hits if truth[p] == kind) / sum(1 for k in truth.values() if k == kind)
            for kind in DUPLICATE_KINDS
        }
        clean_report = jenova_fast.prepare(clean, work / "clean.jsonl", **kwargs)
        rows.append(
            {
                "mode": mode,
                "threshold": threshold,
                "precision": len(hits) / len(found) if found else 1.0,
                "recall": len(hits) / len(truth),
                "recall_by_kind": per_kind,
                # of the planted pairs whose shingle sets really are that similar, the share found: what
                # MinHash + LSH may lose (the rest of the recall gap is the threshold's own meaning)
                "lsh_recall": (
                    sum(1 for p, j in similarity.items() if p in hits and j >= (threshold or 1.0))
                    / max(1, sum(1 for j in similarity.values() if j >= (threshold or 1.0)))
                ),
                "groups": report.dedup["groups"],
                "dropped": report.duplicates_dropped,
                "candidate_pairs": report.dedup["candidate_pairs"],
                "bands_x_rows": f"{report.dedup['bands']}x{report.dedup['rows']}" if mode == "near" else "",
                "false_groups_on_clean_store": clean_report.dedup["groups"],
                "seconds": seconds,
            }
        )
    return rows


def timing(work: Path, insights: int, repeat: int, slow_repeat: int) -> list[dict]:
    from jenova_fast.demo import ensure_store

    store = work / f"timing-{insights}"
    ensure_store(store, insights, seed=0)
    variants = {
        "plain": [],
        "--eval-fraction 0.05": ["--eval-fraction", "0.05"],
        "--dedup exact": ["--dedup", "exact"],
        "--dedup near": ["--dedup", "near"],
        "--dedup near --eval-fraction 0.05": ["--dedup", "near", "--eval-fraction", "0.05"],
        "--format sharegpt": ["--format", "sharegpt"],
        "--with-metadata": ["--with-metadata"],
    }
    slow: dict[str, list[str]] = {}
    try:
        from jenova_fast.finetune.tiny_model import write_tiny_model

        model = str(write_tiny_model(work / "tiny-template.gguf"))
        slow = {
            "--format text --template-from tiny.gguf": ["--format", "text", "--template-from", model],
            "--max-tokens 256 --tokenizer tiny.gguf": ["--max-tokens", "256", "--tokenizer", model],
        }
    except ImportError:
        print("llama-cpp-python / gguf missing: --format text and --max-tokens not timed", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k != "JENOVA_FAST_PURE"}
    base = [sys.executable, "-m", "jenova_fast.prepare", "--insights-dir", str(store), "--quiet"]
    subprocess.run([*base, "--output", str(work / "warm.jsonl"), "--dedup", "near"], env=env, check=True)
    walls: dict[str, list[float]] = {name: [] for name in [*variants, *slow]}
    for round_ in range(repeat):
        for name, extra in [*variants.items(), *(slow.items() if round_ < slow_repeat else [])]:
            start = time.perf_counter()  # alternate inside a round
            subprocess.run([*base, "--output", str(work / "t.jsonl"), *extra], env=env, check=True)
            walls[name].append(time.perf_counter() - start)
    plain = statistics.median(walls["plain"])
    return [
        {"variant": name, "wall_s": statistics.median(w), "x_plain": statistics.median(w) / plain, "rounds": w}
        for name, w in walls.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dedup", description=__doc__.split("\n")[0])
    parser.add_argument("--insights", type=int, default=20000)
    parser.add_argument("--planted", type=int, default=2000)
    parser.add_argument("--timing-insights", type=int, default=200000, help="0 skips the timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow-repeat", type=int, default=1, help="rounds of the llama-cpp-python options")
    parser.add_argument("--work-dir", default=os.environ.get("JENOVA_BENCH_DIR", "/tmp/jenova-bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "quality": quality(Path(tmp), args.insights, args.planted),
            "timing": timing(work, args.timing_insights, args.repeat, args.slow_repeat) if args.timing_insights else [],
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"quality: {args.insights:,} insights + {args.planted:,} planted duplicates ({results['machine']})")
    print("| mode | threshold | bands x rows | precision | recall | exact | spacing | word | append | reorder "
          "| LSH recall | groups on the clean store | dedup run s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["quality"]:
        k = r["recall_by_kind"]
        print(f"| {r['mode']} | {r['threshold'] or ''} | {r['bands_x_rows']} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {k['exact']:.2f} | {k['spacing']:.2f} | {k['word']:.2f} | {k['append']:.2f} | "
              f"{k['reorder']:.2f} | {r['lsh_recall']:.3f} | {r['false_groups_on_clean_store']} | "
              f"{r['seconds']:.2f} |")
    if results["timing"]:
        print(f"\ntiming: {args.timing_insights:,} insights, native, median of {args.repeat} "
              f"({args.slow_repeat} for the llama-cpp-python options)")
        print("| options | wall s | x plain |\n|---|---|---|")
        for r in results["timing"]:
            print(f"| {r['variant']} | {r['wall_s']:.2f} | {r['x_plain']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
