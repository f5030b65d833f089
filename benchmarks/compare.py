"""Peer comparison: `jenova-fast prepare` against the I/O floor and every peer, in one run.

    python -m benchmarks.compare --insights 200000 [--cold] [--json] [--threads N] [--repeat 3] [--store DIR]

Every approach runs in its own subprocess over the same seeded demo store (jenova_fast.demo), the
approaches alternate within each round, and the table shows the median wall time of `--repeat` rounds with
the peak RSS the kernel reports for the run's process tree (os.wait4). Every output is checked against the
pure twin's as a multiset of parsed records, and jenova_fast native must be byte-identical to it.
`--cold` evicts the store from the page cache before every run. Peers come from the `bench` extra; a
missing one is skipped, a failing one is reported with its stderr and the run goes on.

This module is only the command line: harness.py sets up and runs (checks.py checks the outputs),
report.py turns the rows into the JSON result and the table.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from benchmarks import harness, report


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # so a killed harness kills its current run
    try:
        setup = harness.set_up(args)
    except harness.SetupError as exc:
        harness.say(str(exc))
        return 2
    rows, checker = harness.run_rounds(setup, args.repeat, args.timeout)
    result = report.summarise(args, setup, rows, checker)
    if args.save:
        Path(args.save).write_text(report.as_json(result) + "\n", encoding="utf-8")
    print(report.as_json(result) if args.json else report.table(result))
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


if __name__ == "__main__":
    sys.exit(main())
