"""The embeddable API: `prepare()` and `iter_records()`. Never prints; logs and reports progress."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jenova_fast._fs import available_cores
from jenova_fast.prepare._impl import Pipeline, pipeline
from jenova_fast.prepare.balance import TopicBalancer
from jenova_fast.prepare.output import atomic_output, write_all
from jenova_fast.prepare.records import FORMATS, SOURCES, Insight
from jenova_fast.prepare.report import PrepareReport, ScanStats, Skip
from jenova_fast.prepare.stores import StoreNotFoundError, insight_time, resolve_roots

if TYPE_CHECKING:
    from jenova_fast.prepare.templates import ModelText, Reshaper

logger = logging.getLogger("jenova_fast.prepare")

DEFAULT_OUTPUT = Path("finetune") / "train.jsonl"
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RecordOptions:
    """How each record is written and which go where (the options beyond the reference's behaviour)."""

    fmt: str = "messages"
    metadata: bool = False
    eval_fraction: float = 0.0  # > 0: held-out insights go to eval.jsonl beside the output
    drop: frozenset[str] = frozenset()  # full paths of valid insights to leave out (--dedup)
    sources: tuple[str, ...] = ("insights",)
    template: ModelText | None = None  # --format text: the model whose chat template renders records
    max_tokens: int | None = None
    tokenizer: ModelText | None = None  # --max-tokens: the model whose tokens are counted
    system: str | None = None  # --system: the assistant's system prompt, opening every record

    @property
    def writer_format(self) -> str:
        """What the native writer writes: `text` is rendered from `messages` afterwards."""
        return "messages" if self.fmt == "text" else self.fmt

    @property
    def writer_metadata(self) -> bool:
        """--max-tokens names the records it drops, so the writer adds their metadata for it."""
        return self.metadata or self.max_tokens is not None

    def reshaper(self) -> Reshaper | None:
        if self.fmt != "text" and self.max_tokens is None and self.system is None:
            return None
        from jenova_fast.prepare.templates import Reshaper

        return Reshaper(self.fmt, self.metadata, self.template, self.max_tokens, self.tokenizer, self.system)


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback, a few times a second from the calling thread."""

    files_done: int
    bytes_read: int
    files_total: int | None  # None until the store has been counted
    elapsed: float


ProgressCallback = Callable[[Progress], object]


def prepare(
    insights_dir: PathLike | None = None,
    output: PathLike = DEFAULT_OUTPUT,
    *,
    user: str | None = None,
    all_users: bool = False,
    include_history: PathLike | None = None,
    threads: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    follow_symlinks: bool = False,
    topic_caps: Callable[[Mapping[str, int]], Mapping[str, int]] | None = None,
    eval_fraction: float = 0.0,
    dedup: str | None = None,
    near_threshold: float = 0.8,
    fmt: str = "messages",
    template_from: PathLike | None = None,
    sources: tuple[str, ...] | None = None,
    with_metadata: bool = False,
    max_tokens: int | None = None,
    tokenizer: PathLike | None = None,
    system: str | None = None,
    progress: ProgressCallback | None = None,
) -> PrepareReport:
    """Write one chat record per insight (then per history pair) to `output`, atomically.

    `topic_caps` maps each topic's record count to how many to keep (the CLI's --balance-topics passes
    the CPA's `topic_caps`); the kept ones are spread over the topic's files. It reads the store twice.

    `eval_fraction` F > 0 writes about F of the insights to `eval.jsonl` beside `output` instead: each by a
    hash of its identity (its cortex_id, else its path relative to the store), so an insight never changes
    side between runs or as the store grows.

    `dedup` "exact" or "near" (Jaccard of word 5-gram shingles >= `near_threshold`) keeps only the newest
    insight of each group of duplicates (see `dedup.py`); it reads the store twice.

    `fmt` is one of records.FORMATS; "text" renders each record with the chat template of the GGUF model
    `template_from`. `sources` (default: insights, and history when `include_history` is given) adds
    "assumptions" and "cortex" records (sources.py). `with_metadata` adds {"source", "path", "timestamp"}
    to each record. `max_tokens` drops (and reports) records longer than that in the tokens of the GGUF
    model `tokenizer`, rendered with its chat template. The last three need llama-cpp-python. `system`, the
    assistant's own system prompt, opens every record (a system message, or alpaca's "system" field), so a
    template's default one is not what the model is trained under.

    Raises StoreNotFoundError when there is no store, OutputError when `output` cannot be written,
    FileNotFoundError for a missing history file; bad insight files are skipped and reported.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction {eval_fraction} must be at least 0 and below 1")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if template_from is not None and fmt != "text":
        raise ValueError("--template-from renders --format text; add --format text or leave it out")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens {max_tokens} must be at least 1")
    sources = _check_sources(sources, include_history)
    eval_output = eval_path(output) if eval_fraction > 0 else None
    roots = resolve_roots(insights_dir, user=user, all_users=all_users)
    history = _check_history(include_history)
    template = counter = None
    if template_from is not None or tokenizer is not None:
        from jenova_fast.prepare.templates import ModelText
    if template_from is not None:
        template = ModelText(template_from)
    if tokenizer is not None:
        counter = template if template is not None and os.fspath(tokenizer) == template.path else ModelText(tokenizer)
    module, name = pipeline()
    threads = max(1, threads or available_cores())
    report = PrepareReport(output=os.fspath(output), implementation=name, threads=threads)
    report.eval_output = os.fspath(eval_output) if eval_output else None
    start = time.perf_counter()
    drop: frozenset[str] = frozenset()
    if dedup is not None:
        from jenova_fast.prepare.dedup import find_duplicates

        insights = _collect(module, roots, threads, max_file_bytes, follow_symlinks)
        found = find_duplicates(insights, dedup, near_threshold, threads)
        report.dedup = found.to_dict()
        drop = found.dropped
    options = RecordOptions(
        fmt=fmt,
        metadata=with_metadata,
        eval_fraction=eval_fraction,
        drop=drop,
        sources=sources,
        template=template,
        max_tokens=max_tokens,
        tokenizer=counter,
        system=system,
    )
    balancer = (
        _balancer(module, roots, report.threads, max_file_bytes, follow_symlinks, topic_caps, options)
        if topic_caps is not None
        else None
    )
    with contextlib.ExitStack() as outputs:
        f = outputs.enter_context(atomic_output(Path(output)))
        write_eval = None
        if eval_output is not None:
            write_eval = functools.partial(write_all, outputs.enter_context(atomic_output(eval_output)).fileno())
        _run(
            module, roots, history, report, f.fileno(), max_file_bytes, follow_symlinks, progress, start, balancer,
            options, write_eval,
        )
    if balancer is not None:
        report.balanced_out = balancer.dropped
    report.seconds = time.perf_counter() - start
    logger.info("%s", report.summary())
    return report


def _check_sources(sources: tuple[str, ...] | None, include_history: PathLike | None) -> tuple[str, ...]:
    if sources is None:
        return ("insights", "history") if include_history is not None else ("insights",)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r} in --sources; choose from {','.join(SOURCES)}")
    if ("history" in sources) != (include_history is not None):
        raise ValueError(
            "--sources history reads the file given with --include-history FILE: give both, or neither"
        )
    return tuple(sources)


def eval_path(output: PathLike) -> Path:
    """Where --eval-fraction writes the held-out set: `eval.jsonl` beside the output."""
    output = Path(output)
    held = output.with_name("eval.jsonl")
    if held.name == output.name:
        raise ValueError(f"the output {output} is named eval.jsonl, which --eval-fraction writes beside it; "
                         "choose another --output name")
    return held


def iter_records(
    insights_dir: PathLike | None = None,
    *,
    user: str | None = None,
    all_users: bool = False,
    include_history: PathLike | None = None,
    threads: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    follow_symlinks: bool = False,
) -> Iterator[dict[str, Any]]:
    """The records `prepare()` would write, as dicts, streamed with bounded memory."""
    roots = resolve_roots(insights_dir, user=user, all_users=all_users)
    history = _check_history(include_history)
    module, name = pipeline()
    report = PrepareReport(output=None, implementation=name, threads=max(1, threads or available_cores()))
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    cancelled = threading.Event()

    def write(chunk: bytes) -> None:
        while True:
            if cancelled.is_set():
                raise _Cancelled
            try:
                chunks.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            _run(module, roots, history, report, write, max_file_bytes, follow_symlinks, None, time.perf_counter())
        except _Cancelled:
            return
        except BaseException as exc:
            chunks.put(exc)
            return
        chunks.put(None)

    worker = threading.Thread(target=produce, name="jenova-fast-iter-records", daemon=True)
    worker.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            for line in item.splitlines():
                yield json.loads(line)
    finally:
        cancelled.set()
        worker.join()


def iter_insights(
    insights_dir: PathLike | None = None,
    *,
    user: str | None = None,
    all_users: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    follow_symlinks: bool = False,
) -> Iterator[Insight]:
    """Each valid insight with its path and fields, in path order (skips are logged), for consumers such
    as the CPA that need the topic rather than the rendered record."""
    from jenova_fast.prepare import _pipeline_py  # the topics need no speed: the specification reads them

    roots = resolve_roots(insights_dir, user=user, all_users=all_users)
    events, _ = _pipeline_py.scan(roots, max_file_bytes, follow_symlinks)
    for event in events:
        if isinstance(event, Skip):
            logger.info("skipped %s: %s", event.path, event.reason.value)
        else:
            yield event


def insight_topics(insights_dir: PathLike | None = None, **where: Any) -> Iterator[tuple[str, float]]:
    """(topic, when it was written) of each valid insight: what the CPA observes as theme mentions."""
    for insight in iter_insights(insights_dir, **where):
        yield insight.topic, insight_time(insight.path)


class _Cancelled(Exception):
    pass


def _collect(
    module: Pipeline, roots: list[str], threads: int, max_file_bytes: int, follow_symlinks: bool
) -> list[tuple[str, str, str]]:
    """A first pass: each valid insight's (path, timestamp or "", content), in output order."""
    fields: list[tuple[str, str, str]] = []
    module.run(
        roots,
        max_bytes=max_file_bytes,
        follow_symlinks=follow_symlinks,
        threads=threads,
        write=lambda chunk: None,
        on_skip=lambda skip: None,
        progress=lambda *args: None,
        fields=fields,
    )
    return fields


def _balancer(
    module: Pipeline,
    roots: list[str],
    threads: int,
    max_file_bytes: int,
    follow_symlinks: bool,
    topic_caps: Callable[[Mapping[str, int]], Mapping[str, int]],
    options: RecordOptions,
) -> TopicBalancer:
    """A first pass that counts each topic's records, capped by the CPA."""
    counts: Counter[str] = Counter()
    topics: list[str] = []

    def count(chunk: bytes) -> None:
        counts.update(topics)
        topics.clear()

    module.run(
        roots,
        max_bytes=max_file_bytes,
        follow_symlinks=follow_symlinks,
        threads=threads,
        write=count,
        on_skip=lambda skip: None,
        progress=lambda *args: None,
        topics=topics,
        eval_fraction=options.eval_fraction,  # the held-out records are not balanced: count the rest
        write_eval=lambda chunk: None,
        drop=options.drop,
    )
    counts.update(topics)
    return TopicBalancer(counts, topic_caps(counts))


def _check_history(path: PathLike | None) -> Path | None:
    if path is None:
        return None
    history = Path(path)
    if not history.is_file():
        raise FileNotFoundError(
            f"history file {history} does not exist; pass a JSONL file of user_message/ai_message lines "
            "to --include-history, or leave the option out"
        )
    return history


def _run(
    module: Pipeline,
    roots: list[str],
    history: Path | None,
    report: PrepareReport,
    write: Callable[[bytes], object] | int,
    max_file_bytes: int,
    follow_symlinks: bool,
    progress: ProgressCallback | None,
    start: float,
    balancer: TopicBalancer | None = None,
    options: RecordOptions = RecordOptions(),
    write_eval: Callable[[bytes], object] | None = None,
) -> None:
    """`write` is a callable or a file descriptor (which the native pipeline writes without the GIL)."""

    def on_skip(skip: Skip) -> None:
        logger.info("skipped %s: %s", skip.path, skip.reason.value)
        report.add_skip(skip)

    def on_progress(files_done: int, bytes_read: int, files_total: int | None = None) -> None:
        if progress is not None:
            progress(Progress(files_done, bytes_read, files_total, time.perf_counter() - start))

    emit = functools.partial(write_all, write) if isinstance(write, int) else write
    shape = options.reshaper()
    if shape is not None:
        shaped, shaped_eval = emit, write_eval

        def emit(chunk: bytes) -> None:
            shaped(shape(chunk))

        def write_eval(chunk: bytes) -> None:
            assert shaped_eval is not None
            shaped_eval(shape(chunk, held_out=True))

        write = emit
    topics: list[str] | None = None
    if balancer is not None:
        topics = []

        def write(chunk: bytes) -> None:
            kept = balancer.filter(chunk, topics)
            topics.clear()
            emit(kept)

    records, stats = 0, ScanStats()
    if "insights" in options.sources:
        records, stats = module.run(
            roots,
            max_bytes=max_file_bytes,
            follow_symlinks=follow_symlinks,
            threads=report.threads,
            write=write,
            on_skip=on_skip,
            progress=on_progress,
            count_total=progress is not None,
            topics=topics,
            fmt=options.writer_format,
            metadata=options.writer_metadata,
            eval_fraction=options.eval_fraction,
            write_eval=write_eval,
            drop=options.drop,
        )
    report.eval_records = stats.eval_records
    report.duplicates_dropped = stats.dropped
    report.insight_records = records - stats.eval_records - (balancer.dropped if balancer else 0)
    report.files_seen, report.bytes_read, report.ignored = stats.files_seen, stats.bytes_read, stats.ignored
    if "assumptions" in options.sources or "cortex" in options.sources:
        _other_sources(module, roots, options, report, on_skip, emit, write_eval)
    if history is not None:
        from jenova_fast.prepare.history import iter_history_pairs  # with the pure parser: only when asked

        pending: list[bytes] = []
        for item in iter_history_pairs(history, max_file_bytes):
            if isinstance(item, Skip):
                on_skip(item)
                continue
            user_text, ai_text, where, timestamp = item
            meta = ("history", where, timestamp) if options.writer_metadata else None
            pending.append(module.format_chat(user_text, ai_text, options.writer_format, meta))
            report.history_records += 1
            if len(pending) >= 4096:  # bounded memory, whatever the history's size
                emit(b"".join(pending))
                pending.clear()
        emit(b"".join(pending))
    if shape is not None:
        report.too_long = shape.too_long
        report.longest_tokens = shape.longest
        report.insight_records -= shape.dropped("insights", False)
        report.history_records -= shape.dropped("history", False)
        for source in report.source_records:
            report.source_records[source] -= shape.dropped(source, False)
        report.eval_records -= sum(1 for r in shape.too_long if r["eval"])
    report.records = report.insight_records + report.history_records + sum(report.source_records.values())


def _other_sources(
    module: Pipeline,
    roots: list[str],
    options: RecordOptions,
    report: PrepareReport,
    on_skip: Callable[[Skip], None],
    emit: Callable[[bytes], object],
    write_eval: Callable[[bytes], object] | None,
) -> None:
    """--sources assumptions,cortex: their records after the insights', split and shaped the same way."""
    from jenova_fast.prepare.sources import iter_items

    train, held = [], []
    for item in iter_items(roots, options.sources):
        if isinstance(item, Skip):
            on_skip(item)
            continue
        meta = (item.source, item.path, item.timestamp) if options.writer_metadata else None
        line = module.format_chat(item.user_text, item.assistant_text, options.writer_format, meta)
        if options.eval_fraction > 0 and module.held_out(item.identity, options.eval_fraction):
            held.append(line)
            report.eval_records += 1
        else:
            train.append(line)
            report.source_records[item.source] = report.source_records.get(item.source, 0) + 1
    if train:
        emit(b"".join(train))
    if held:
        assert write_eval is not None
        write_eval(b"".join(held))


__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_OUTPUT",
    "Progress",
    "RecordOptions",
    "StoreNotFoundError",
    "eval_path",
    "insight_topics",
    "iter_insights",
    "iter_records",
    "prepare",
]
