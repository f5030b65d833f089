"""`python -m jenova_fast.cpa` / `jenova-fast cpa`: observe, stats, reset (a thin layer over `CPA`)."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time

from jenova_fast._fs import UnsafePathError, user_component
from jenova_fast._signals import status as interrupted_status
from jenova_fast.cpa.accelerator import CPA
from jenova_fast.cpa.function_words import StopwordsError
from jenova_fast.cpa.observe import ObserveError, ObserveReport
from jenova_fast.cpa.patterns import RANKINGS
from jenova_fast.cpa.report import PlotUnavailable, format_stats, plot_stats
from jenova_fast.cpa.state import StateError
from jenova_fast.prepare import StoreNotFoundError, insight_topics


def _user(name: str) -> str:
    try:
        return user_component(name)
    except UnsafePathError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", metavar="DIR",
                        help="CPA state directory (default: ~/.jenova-ai/users/<user>/.cpa_state)")
    common.add_argument("--user", metavar="NAME", type=_user,
                        help="whose default state dir (default: the OS user)")
    p = argparse.ArgumentParser(prog="jenova-fast cpa", description="Cognitive Process Accelerator.")
    sub = p.add_subparsers(dest="command", required=True)
    obs = sub.add_parser("observe", parents=[common], help="count the inputs into the state")
    obs.add_argument("--history", action="append", default=[], metavar="FILE",
                     help="conversation log, JSONL lines with user_message")
    obs.add_argument("--insights", action="append", default=[], metavar="DIR", help="insight store (topics)")
    obs.add_argument("--access-log", action="append", default=[], metavar="FILE",
                     help='memory access log, JSONL lines {"kind", "id", "ts"}')
    obs.add_argument("--profile", action="append", default=[], metavar="FILE", help="pstats file (cProfile -o)")
    st = sub.add_parser("stats", parents=[common], help="show what has been counted")
    st.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--plot", metavar="PNG", help="also write a bar chart (needs the `plot` extra)")
    st.add_argument("--by", choices=RANKINGS, default="keyness",
                    help="rank query patterns by keyness (the default: how much more often you say them than "
                         "people do, weighed by the sessions they recur in and how recent they are), by count "
                         "x IDF over your own queries (idf), or by raw count")
    st.add_argument("--stopwords", metavar="FILE",
                    help="function words, one per line (# comments), instead of the built-in lists; n-grams "
                         "made only of them are counted but not listed")
    sub.add_parser("reset", parents=[common], help="forget all counts (keeps the compile cache)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="jenova-fast cpa: %(message)s")
    tty = sys.stderr.isatty()
    try:
        cpa = CPA(args.state_dir, user=args.user, warm=args.command == "observe")
        if args.command == "observe":
            return _observe(cpa, args, tty)
        if args.command == "stats":
            stats = cpa.stats(top=args.top, by=args.by, stopwords=args.stopwords)
            if args.plot:
                plot_stats(stats, args.plot)
            print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_stats(stats))
            if args.plot and not args.json:
                print(f"wrote {args.plot}")
            return 0
        cpa.reset()
        print(f"reset the CPA state in {cpa.state_dir}")
        return 0
    except KeyboardInterrupt:  # each observe is one transaction: the state has all of it or none
        print("jenova-fast cpa: interrupted; the state was left as the last completed save wrote it",
              file=sys.stderr)
        return interrupted_status()
    except BrokenPipeError:  # `stats | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ObserveError, StateError, PlotUnavailable, StopwordsError, UnsafePathError) as exc:
        print(f"jenova-fast cpa: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jenova-fast cpa: error: {exc}; check the path and its permissions, or pass --state-dir",
              file=sys.stderr)
        return 2


def _observe_insights(cpa: CPA, root: str) -> ObserveReport:
    """prepare's reader decides what a valid insight is; the CPA counts their topics."""
    try:
        return cpa.observe_insights(insight_topics(root), source=root)
    except StoreNotFoundError as exc:
        raise ObserveError(str(exc)) from exc


def _observe(cpa: CPA, args: argparse.Namespace, tty: bool) -> int:
    jobs = ([(cpa.observe_history, f) for f in args.history]
            + [(functools.partial(_observe_insights, cpa), d) for d in args.insights]
            + [(cpa.observe_access_log, f) for f in args.access_log] + [(cpa.observe_profile, f) for f in args.profile])
    if not jobs:
        print("jenova-fast cpa: error: nothing to observe; pass --history, --insights, --access-log or --profile",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    observed = skipped = 0
    with cpa.batch():
        for i, (fn, path) in enumerate(jobs, 1):
            if tty:
                print(f"[{i}/{len(jobs)}] observing {path} ...", file=sys.stderr)
            report = fn(path)
            observed += report.observed
            skipped += sum(report.skipped.values())
            if tty or len(jobs) > 1:
                print(report.summary(), file=sys.stderr)
    print(f"observed {observed} record(s) from {len(jobs)} input(s), skipped {skipped}, into {cpa.state_dir} "
          f"in {time.perf_counter() - start:.2f}s")
    return 0
