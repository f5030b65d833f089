# Declarations of csrc/pipeline.h (the walk, read, parse and render pipeline) for _pipeline.pyx, kept
# beside the Cython module as pysimdjson and uvloop keep theirs.

from libc.stdint cimport int64_t, uint64_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.string_view cimport string_view
from libcpp.unordered_set cimport unordered_set
from libcpp.vector cimport vector


cdef extern from * nogil:
    """
    #include <functional>
    static std::function<bool()> jf_never_stop() { return [] { return false; }; }
    """
    cdef cppclass stop_fn "std::function<bool()>":
        pass
    stop_fn jf_never_stop()


cdef extern from "pipeline.h" namespace "jf" nogil:
    const int N_REASONS
    const char* REASON_NAMES[]

    cdef cppclass Fields:
        string_view topic, content, user, cortex_id, timestamp, path
        cbool has_cortex_id, has_timestamp, lone_surrogates

    ctypedef void (*format_fn)(string* out, const Fields& fields, int fmt, cbool metadata) noexcept nogil
    ctypedef void (*escape_fn)(string* out, size_t start) noexcept nogil

    cdef cppclass CSkip "jf::Skip":
        string path
        int reason

    cdef cppclass Chunk:
        string data
        string eval_data
        vector[CSkip] skips
        vector[string] topics
        vector[string] fields
        uint64_t files, bytes, records, eval_records, ignored, dropped

    cdef cppclass Options:
        vector[string] roots
        uint64_t max_bytes
        cbool follow_symlinks
        unordered_set[string] ignored_names
        int threads
        cbool count_total
        cbool collect_topics
        size_t max_depth
        format_fn format
        escape_fn escape_surrogates
        int output_format
        cbool metadata
        double eval_fraction
        cbool collect_fields
        unordered_set[string] drop

    cdef cppclass atomic_u64 "std::atomic<uint64_t>":
        uint64_t load()

    cdef cppclass atomic_i64 "std::atomic<int64_t>":
        int64_t load()

    cdef cppclass InsightParser:
        InsightParser(size_t max_depth) except +
        int parse(const char* data, size_t length, Fields& out)

    cbool c_held_out "jf::held_out"(string_view identity, double fraction)

    int64_t c_count_files "jf::count_files"(const vector[string]& roots, cbool follow_symlinks,
                                            const unordered_set[string]& ignored_names,
                                            const stop_fn& stop) except +

    cdef cppclass Output:
        Output()
        Output(int fd)
        int write(const char* data, size_t length)

    cdef cppclass Pipeline:
        Pipeline(Options) except +
        void start() except +
        int next(Chunk& out, int timeout_ms)
        void cancel()
        const string& error()
        atomic_u64 files_done
        atomic_u64 bytes_done
        atomic_i64 files_total
