# cython: language_level=3, boundscheck=False, wraparound=False
"""Native twin of `_pipeline_py.py`: drives csrc/pipeline.cpp (walk, read, simdjson parse, render through
the Cython writer) with the GIL released, handing ordered chunks of output back to Python."""

import os

from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.string_view cimport string_view
from libcpp.unordered_set cimport unordered_set
from libcpp.vector cimport vector

from jenova_fast.prepare._jsonl cimport Parts, append_insight_record, escape_surrogates
from jenova_fast.prepare._jsonl import format_chat, format_insight  # noqa: F401  (re-exported)
from jenova_fast.prepare.records import FORMATS, MAX_DEPTH, NOT_INSIGHTS
from jenova_fast.prepare.report import REASONS, ScanStats, Skip

# csrc/pipeline.h's Reason and report.SkipReason are one list: refuse to load if they ever differ.
_native_reasons = [REASON_NAMES[i].decode() for i in range(N_REASONS)]
if _native_reasons != [reason.name for reason in REASONS[:N_REASONS]]:
    raise ImportError(f"csrc/pipeline.h's Reason {_native_reasons} differs from jenova_fast.prepare.report."
                      f"SkipReason {[r.name for r in REASONS]}: make them the same list, then rebuild")


cdef void _format(string* out, const Fields& f, int fmt, cbool metadata) noexcept nogil:
    """The pipeline's format callback: the writer's record from the parser's views."""
    cdef Parts r
    r.topic.data, r.topic.size = f.topic.data(), f.topic.size()
    r.content.data, r.content.size = f.content.data(), f.content.size()
    r.user.data, r.user.size = f.user.data(), f.user.size()
    r.source.data, r.source.size = "insights", 8
    r.path.data, r.path.size = f.path.data(), f.path.size()
    r.timestamp.data, r.timestamp.size = f.timestamp.data(), f.timestamp.size()
    r.has_timestamp = f.has_timestamp
    append_insight_record(out, &r, fmt, metadata)


def run(list roots, *, max_bytes, follow_symlinks, threads, write, on_skip, progress, count_total=False,
        topics=None, str fmt="messages", bint metadata=False, double eval_fraction=0.0, write_eval=None,
        fields=None, drop=None):
    """Same contract as `_pipeline_py.run`; chunks for a file descriptor are written without the GIL."""
    cdef Options opt
    cdef bint to_fd = isinstance(write, int)
    cdef Output out
    cdef int err
    if to_fd:
        out = Output(<int>write)
    for root in roots:
        opt.roots.push_back(str(root).encode("utf-8", "surrogateescape"))
    opt.max_bytes = max_bytes
    opt.follow_symlinks = follow_symlinks
    for name in NOT_INSIGHTS:
        opt.ignored_names.insert(name.encode("utf-8"))
    opt.threads = threads
    opt.count_total = count_total
    opt.collect_topics = topics is not None
    opt.max_depth = MAX_DEPTH
    opt.format = _format
    opt.escape_surrogates = escape_surrogates
    opt.output_format = FORMATS.index(fmt)
    opt.metadata = metadata
    opt.eval_fraction = eval_fraction
    opt.collect_fields = fields is not None
    if drop:
        for path in drop:
            opt.drop.insert(path.encode("utf-8", "surrogateescape"))
    cdef Pipeline* pipeline = new Pipeline(opt)
    cdef Chunk chunk
    cdef int status
    cdef int64_t total
    cdef size_t i
    records = 0
    stats = ScanStats()
    try:
        with nogil:
            pipeline.start()
        while True:
            with nogil:
                status = pipeline.next(chunk, 100)
            if status < 0:
                break
            if status > 0:
                for i in range(chunk.skips.size()):
                    on_skip(Skip(chunk.skips[i].path.decode("utf-8", "surrogateescape"), REASONS[chunk.skips[i].reason]))
                if topics is not None:
                    for i in range(chunk.topics.size()):
                        topics.append(chunk.topics[i].decode("utf-8", "surrogatepass"))
                if fields is not None:
                    for i in range(0, chunk.fields.size(), 3):
                        fields.append((
                            chunk.fields[i].decode("utf-8", "surrogateescape"),
                            chunk.fields[i + 1].decode("utf-8", "surrogatepass"),
                            chunk.fields[i + 2].decode("utf-8", "surrogatepass"),
                        ))
                if chunk.eval_data.size():
                    write_eval(chunk.eval_data)
                if chunk.data.size():
                    if to_fd:
                        with nogil:
                            err = out.write(chunk.data.data(), chunk.data.size())
                        if err:
                            raise OSError(err, os.strerror(err))
                    else:
                        write(chunk.data)
                records += chunk.records
                stats.eval_records += chunk.eval_records
                stats.dropped += chunk.dropped
                stats.files_seen += chunk.files
                stats.bytes_read += chunk.bytes
                stats.ignored += chunk.ignored
            total = pipeline.files_total.load()
            progress(stats.files_seen, stats.bytes_read, total if total >= 0 else None)
        if pipeline.error().size():
            raise RuntimeError(f"native prepare pipeline failed: {pipeline.error().decode()}")
        progress(stats.files_seen, stats.bytes_read, stats.files_seen)  # done: the total is now known
    finally:
        with nogil:
            del pipeline
    return records, stats


cdef InsightParser* _parser = new InsightParser(MAX_DEPTH)


def parse_insight(bytes data):
    """Twin of `_pipeline_py.parse_insight`: (topic, content, user, cortex_id, timestamp) or the SkipReason."""
    cdef Fields f
    cdef int reason = _parser.parse(data, len(data), f)
    if reason >= 0:
        return REASONS[reason]
    return (
        f.topic.data()[:f.topic.size()].decode("utf-8", "surrogatepass"),
        f.content.data()[:f.content.size()].decode("utf-8", "surrogatepass"),
        f.user.data()[:f.user.size()].decode("utf-8", "surrogatepass"),
        f.cortex_id.data()[:f.cortex_id.size()].decode("utf-8", "surrogatepass") if f.has_cortex_id else None,
        f.timestamp.data()[:f.timestamp.size()].decode("utf-8", "surrogatepass") if f.has_timestamp else None,
    )


def held_out(bytes identity, double fraction):
    """Twin of `_pipeline_py.held_out`: whether --eval-fraction puts this identity in eval.jsonl."""
    return c_held_out(string_view(identity, len(identity)), fraction)


def count_files(list roots, bint follow_symlinks):
    """Twin of `_pipeline_py.count_files`: the walk alone, names only."""
    cdef vector[string] c_roots
    for root in roots:
        c_roots.push_back(str(root).encode("utf-8", "surrogateescape"))
    cdef cbool follow = follow_symlinks
    cdef stop_fn never = jf_never_stop()
    cdef unordered_set[string] ignored
    for name in NOT_INSIGHTS:
        ignored.insert(name.encode("utf-8"))
    with nogil:
        total = c_count_files(c_roots, follow, ignored, never)
    return total
