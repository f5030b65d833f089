# cython: language_level=3, boundscheck=False, wraparound=False
"""Native twin of `_pipeline_py.py`: drives csrc/pipeline.cpp (walk, read, simdjson parse, render through
the Cython writer) with the GIL released, handing ordered chunks of output back to Python."""

from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.vector cimport vector

from jenova_fast.prepare._jsonl cimport append_insight_record
from jenova_fast.prepare._jsonl import format_chat, format_insight  # noqa: F401  (re-exported)
from jenova_fast.prepare._pipeline_py import MAX_DEPTH, ScanStats
from jenova_fast.prepare.report import REASONS, Skip


cdef extern from "pipeline.h" namespace "jf" nogil:
    ctypedef void (*format_fn)(string* out, const char* topic, size_t topic_len, const char* content,
                               size_t content_len, const char* user, size_t user_len) noexcept nogil

    cdef cppclass CSkip "jf::Skip":
        string path
        int reason

    cdef cppclass Chunk:
        string data
        vector[CSkip] skips
        uint64_t files, bytes, records, ignored

    cdef cppclass Options:
        vector[string] roots
        uint64_t max_bytes
        cbool follow_symlinks
        int threads
        cbool count_total
        size_t max_depth
        format_fn format

    cdef cppclass atomic_u64 "std::atomic<uint64_t>":
        uint64_t load()

    cdef cppclass atomic_i64 "std::atomic<int64_t>":
        int64_t load()

    cdef cppclass Pipeline:
        Pipeline(Options) except +
        void start() except +
        int next(Chunk& out, int timeout_ms)
        void cancel()
        const string& error()
        atomic_u64 files_done
        atomic_u64 bytes_done
        atomic_i64 files_total


def run(list roots, *, max_bytes, follow_symlinks, threads, write, on_skip, progress, count_total=False):
    """Same contract as `_pipeline_py.run`."""
    cdef Options opt
    for root in roots:
        opt.roots.push_back(str(root).encode("utf-8", "surrogateescape"))
    opt.max_bytes = max_bytes
    opt.follow_symlinks = follow_symlinks
    opt.threads = threads
    opt.count_total = count_total
    opt.max_depth = MAX_DEPTH
    opt.format = append_insight_record
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
                if chunk.data.size():
                    write(chunk.data)  # bytes; Python's file write releases the GIL
                records += chunk.records
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
