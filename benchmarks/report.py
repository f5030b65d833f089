"""The peer comparison's report: the harness's rows as one result (JSON) and as a markdown table.

Pure functions of what the harness measured: medians and ratios against the floor and the reference,
issue 3's targets, the machine it ran on. Nothing here runs anything, so the figures in benchmarks/README.md
can be re-rendered or reformatted without timing a single run again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.checks import Checker
    from benchmarks.harness import Approach, Row, Setup

# (target, limit) from issue 3, checked on every run's figures
TARGET_FLOOR_RATIO = 1.2
TARGET_VS_PEER = 2.5
TARGET_VS_REFERENCE = 7.0
TARGET_RSS_MB = 100.0

TABLE_HEAD = ["approach", "wall s", "files/s", "MB/s", "peak RSS MB", "× floor", "× faster than ref", "CPU s",
              "CPU × floor", "records"]  # fmt: skip


def summarise(args: argparse.Namespace, setup: Setup, rows: dict[str, Row], checker: Checker) -> dict:
    """The whole run as one JSON-ready dict: the store, the machine, one entry per approach, the targets."""
    by_key = {key: row.wall for key, row in rows.items()}
    floor = by_key.get("floor")
    floors = [w for k, w in by_key.items() if k.startswith("floor") and w]
    best_floor = min(floors) if floors else None
    reference = by_key.get("reference")
    bars = {
        "floor": floor,
        "floor_cpu": rows["floor"].cpu if "floor" in rows else None,
        "best_floor": best_floor,
        "reference": reference,
    }
    results = [_entry(a, rows.get(a.key), setup.counts, bars) for a in setup.approaches]
    return {
        "command": "python -m benchmarks.compare " + " ".join(sys.argv[1:]),
        "store": str(setup.store),
        "insights": args.insights,
        "seed": args.seed,
        "files": setup.counts["files"],
        "bytes": setup.counts["bytes"],
        "records": checker.records,
        "records_truth": checker.truth_from,
        "threads": setup.threads,
        "cache": "cold" if args.cold else "warm",
        "repeat": args.repeat,
        "machine": machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "targets": targets(args, rows, floor, best_floor, reference),
        "eviction": setup.evictor[1] if setup.evictor else None,
    }


def _entry(a: Approach, row: Row | None, counts: dict[str, int], bars: dict[str, float | None]) -> dict:
    """One approach's line of the results: its medians and its ratios to the floor and the reference."""
    if a.skip_reason or row is None:
        return {"key": a.key, "approach": a.label, "status": "skipped", "detail": a.skip_reason}
    wall = row.wall
    floor, floor_cpu, best_floor, reference = bars["floor"], bars["floor_cpu"], bars["best_floor"], bars["reference"]
    statuses = Counter(r.status for r in row.runs)
    checks = sorted({r.check for r in row.runs if r.check})
    return {
        "key": a.key,
        "approach": a.label,
        "status": "ok" if statuses.get("ok") == len(row.runs) else ", ".join(f"{n}× {s}" for s, n in statuses.items()),
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
            (f"after {r.wall:.2f} s: {r.detail.splitlines()[-1]}" for r in row.runs if r.status != "ok" and r.detail),
            "",
        ),
    }


def targets(args: argparse.Namespace, rows: dict[str, Row], floor, best_floor, reference) -> list[dict]:
    """Issue 3's targets for jenova_fast native, from this run's figures."""
    jenova = rows.get("jenova")
    if jenova is None or jenova.wall is None:
        return [{"target": "jenova_fast native ran", "met": False}]
    wall = jenova.wall
    out = []
    bar, name = (best_floor, "best") if args.cold else (floor, "same-threads")
    if bar:
        out.append(_target(f"wall ≤ {TARGET_FLOOR_RATIO}× the {name} I/O floor", wall / bar, TARGET_FLOOR_RATIO, True))
    peers = [
        (r.wall, r.approach.label)
        for r in rows.values()
        if r.approach.is_peer and r.wall and all(x.check in ("same records", "identical") for x in r.runs)
    ]
    if peers:
        fastest, label = min(peers)
        name = f"≥ {TARGET_VS_PEER}× faster than the fastest correct peer ({label})"
        out.append(_target(name, fastest / wall, TARGET_VS_PEER))
    if reference:
        name = f"≥ {TARGET_VS_REFERENCE}× faster than the reference"
        out.append(_target(name, reference / wall, TARGET_VS_REFERENCE))
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


def _target(target: str, ratio: float, limit: float, at_most: bool = False) -> dict:
    return {"target": target, "value": round(ratio, 2), "met": ratio <= limit if at_most else ratio >= limit}


def machine() -> dict:
    """The CPU, usable cores, memory, kernel and Python the figures came from."""
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


def as_json(result: dict) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(result: dict) -> str:
    """The result as the markdown table of benchmarks/README.md, the targets and the machine under it."""
    lines = [
        f"{result['files']:,} files ({result['bytes'] / 1e6:,.1f} MB), {result['records']:,} records, "
        f"{result['cache']} cache, {result['threads']} threads, median of {result['repeat']}"
        + (f"; eviction before each run: {result['eviction']}" if result.get("eviction") else ""),
        "",
        "| " + " | ".join(TABLE_HEAD) + " |",
        "|" + "|".join("---" for _ in TABLE_HEAD) + "|",
    ]
    lines += [_table_row(r) for r in result["results"]]
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


def _table_row(r: dict) -> str:
    if r["status"] == "skipped":
        return f"| {r['approach']} | skipped: {r['detail']} |" + " |" * (len(TABLE_HEAD) - 2)
    records = r["records"]
    if r["status"] != "ok":
        records = f"{r['status']}: {r['detail']}"[:100] + (f" ({r['records']})" if r["records"] else "")
    cells = [
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
    return "| " + " | ".join(cells) + " |"
