"""`python -m jenova_fast.prepare`, `jenova-fast prepare`, `python finetune/prepare_data.py`."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from jenova_fast import __version__
from jenova_fast._fs import available_cores
from jenova_fast._signals import status as interrupted_status
from jenova_fast.prepare.api import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_OUTPUT,
    Progress,
    prepare,
)
from jenova_fast.prepare.output import OutputError, check_writable
from jenova_fast.prepare.records import FORMATS, SOURCES
from jenova_fast.prepare.report import SKIP_EXAMPLES
from jenova_fast.prepare.stores import StoreNotFoundError
from jenova_fast.progress import ProgressBar

EXIT_SKIPPED_STRICT = 1
EXIT_USAGE = 2


def build_parser(prog: str = "jenova-fast prepare") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Turn a Jenova AI insight store into a chat-format train.jsonl for fine-tuning.",
    )
    where = parser.add_argument_group("input")
    where.add_argument("--insights-dir", metavar="DIR", help="any insight tree (default: the current user's store)")
    where.add_argument("--user", metavar="NAME", help="read ~/.jenova-ai/users/NAME/insights")
    where.add_argument("--all-users", action="store_true", help="read every user's store under ~/.jenova-ai")
    where.add_argument(
        "--include-history", metavar="FILE", help="also add a JSONL log of user_message/ai_message pairs"
    )
    where.add_argument("--follow-symlinks", action="store_true", help="follow symlinks (loops are detected)")
    where.add_argument(
        "--max-file-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_FILE_BYTES,
        metavar="N",
        help=f"skip insight files larger than this (default {DEFAULT_MAX_FILE_BYTES})",
    )
    where.add_argument(
        "--balance-topics",
        action="store_true",
        help="cap each topic's share of the records by the CPA's theme weights (reads the store twice)",
    )
    where.add_argument("--cpa-state-dir", metavar="DIR", help="CPA state for --balance-topics (default: the user's)")
    shape = parser.add_argument_group("training data")
    shape.add_argument(
        "--eval-fraction",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="hold out about F of the insights in eval.jsonl beside the output, each by a hash of its cortex_id "
        "(else its path in the store): an insight never changes side between runs",
    )
    shape.add_argument(
        "--dedup",
        choices=("exact", "near"),
        help="keep only the newest insight of each group of duplicate contents: exact (after NFKC, case "
        "folding, whitespace) or near (word 5-gram Jaccard >= --near-threshold, MinHash + LSH); reads the store twice",
    )
    shape.add_argument(
        "--near-threshold",
        type=_similarity,
        default=0.8,
        metavar="J",
        help="--dedup near: the shingle-set Jaccard similarity that makes two insights duplicates (default 0.8)",
    )
    shape.add_argument(
        "--format",
        dest="fmt",
        choices=FORMATS,
        default="messages",
        help="record layout: messages (default; llama.cpp, TRL, axolotl chat_template), sharegpt, alpaca, "
        "prompt-completion (TRL), text (rendered with --template-from's chat template); see the README table",
    )
    shape.add_argument("--template-from", metavar="MODEL.gguf", help="--format text: whose chat template renders")
    shape.add_argument(
        "--sources",
        type=_sources,
        metavar="LIST",
        help="comma-separated, from insights,history,assumptions,cortex (default: insights, plus history with "
        "--include-history): assumptions are the verified/true items of assumptions.json, cortex the "
        "document/insight nodes of cortex/cognitive_graph.json",
    )
    shape.add_argument(
        "--with-metadata", action="store_true", help='add each record\'s {"source", "path", "timestamp"}'
    )
    shape.add_argument(
        "--max-tokens",
        type=_positive_int,
        metavar="N",
        help="leave out (and report) records longer than N tokens of --tokenizer, rendered with its chat template",
    )
    shape.add_argument("--tokenizer", metavar="MODEL.gguf", help="--max-tokens: whose tokens are counted")
    shape.add_argument(
        "--system",
        type=system_arg,
        metavar="TEXT|@FILE",
        help="the assistant's system prompt, opening every record (a system message; alpaca: a system field); "
        "give finetune the same --system",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output", "--output-file", default=str(DEFAULT_OUTPUT), metavar="FILE", help="default: %(default)s"
    )
    out.add_argument("--report", metavar="FILE.json",
                     help=f"write counts and the skipped paths (the first {SKIP_EXAMPLES} of each reason) as JSON")
    out.add_argument("--strict", action="store_true", help="exit 1 if any input was skipped")
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=available_cores(),
        metavar="N",
        help="parallel readers (default: the cores this process may use, %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def system_arg(text: str) -> str:
    """--system TEXT, or @FILE for the text of a file."""
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{text[1:]}: cannot read the system prompt ({exc})") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0 and below 1 (e.g. 0.05)")
    return value


def _sources(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in SOURCES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(SOURCES)}")
    return names


def _similarity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0 and at most 1 (e.g. 0.8)")
    return value


def _cpa_topic_caps(state_dir: str | None) -> Callable[[Mapping[str, int]], Mapping[str, int]]:
    """--balance-topics: the CPA's caps, from its state in `state_dir` (default: the user's)."""
    from jenova_fast.cpa import topic_caps  # the CPA, and Numba, load only when balancing is asked for

    return functools.partial(topic_caps, state_dir)


def main(argv: list[str] | None = None, prog: str = "jenova-fast prepare") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    logging.getLogger("jenova_fast._fs").setLevel(logging.WARNING)  # "removed N leftover temp files ..."
    bar = None if args.quiet else ProgressBar("prepare", "files")

    def show(p: Progress) -> None:
        assert bar is not None
        rate = p.bytes_read / p.elapsed / 1e6 if p.elapsed else 0.0
        finished = p.files_total is not None and p.files_done >= p.files_total
        bar.update(p.files_done, p.files_total, p.elapsed, f"{rate:,.0f} MB/s", force=finished)

    try:
        if args.report:  # a report that cannot be written is found before the output is replaced
            check_writable(Path(args.report), "--report")
        report = prepare(
            args.insights_dir,
            args.output,
            user=args.user,
            all_users=args.all_users,
            include_history=args.include_history,
            threads=args.threads,
            max_file_bytes=args.max_file_bytes,
            follow_symlinks=args.follow_symlinks,
            topic_caps=_cpa_topic_caps(args.cpa_state_dir) if args.balance_topics else None,
            eval_fraction=args.eval_fraction,
            dedup=args.dedup,
            near_threshold=args.near_threshold,
            fmt=args.fmt,
            template_from=args.template_from,
            sources=args.sources,
            with_metadata=args.with_metadata,
            max_tokens=args.max_tokens,
            tokenizer=args.tokenizer,
            system=args.system,
            progress=show if bar else None,
        )
    except (StoreNotFoundError, OutputError, FileNotFoundError, ImportError, ValueError) as exc:
        if bar:
            bar.close()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if bar:
            bar.close()
        print(f"{prog}: interrupted; {args.output} was left as it was", file=sys.stderr)
        return interrupted_status()
    if bar:
        bar.close()
    if args.report:
        try:
            report.write_json(args.report)
        except OSError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if not args.quiet:
        for skip in report.skips:
            print(f"skipped {skip.path}: {skip.reason.value}", file=sys.stderr)
        for reason, n in report.unnamed.items():
            print(f"skipped {n:,} more: {reason} (the first {SKIP_EXAMPLES} are named above)", file=sys.stderr)
        print(report.summary())
    if args.strict and report.skips:
        if args.quiet:
            print(f"{prog}: {sum(report.skipped.values())} inputs skipped (--strict)", file=sys.stderr)
        return EXIT_SKIPPED_STRICT
    return 0
