// The native prepare pipeline: walk -> read -> parse, in parallel, output kept in sorted path order.
//
// One walker thread lists directories (sorted, openat-relative, never a global path list) into
// batches; worker threads read and parse each batch's files with simdjson (a file it rejects goes to the
// Python-dialect parser of python_json.h), render records through the Cython writer's `format` callback
// and put each in the training or the held-out output; `next()` hands finished batches out strictly in
// order. Memory is bounded by the number of batches in flight. Semantics mirror _pipeline_py.py exactly.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "python_json.h"

namespace jf {

// Why an input is skipped: the members of jenova_fast.prepare.report.SkipReason, in its order (the
// extension compares REASON_NAMES with it when it loads, and refuses to load if they differ).
#define JF_REASONS(X) \
  X(EMPTY_FILE) X(TOO_LARGE) X(INVALID_UTF8) X(INVALID_JSON) X(NOT_OBJECT) X(NO_CONTENT) X(WRONG_TYPE) \
  X(UNREADABLE) X(VANISHED) X(NOT_REGULAR) X(SYMLINK) X(SYMLINK_LOOP)

enum Reason : int {
#define JF_ENUM(name) name,
  JF_REASONS(JF_ENUM)
#undef JF_ENUM
  N_REASONS
};

inline constexpr const char *REASON_NAMES[] = {
#define JF_NAME(name) #name,
    JF_REASONS(JF_NAME)
#undef JF_NAME
};

// One insight's fields, views into the parser that read it (and the walker's path). Strings are UTF-8,
// except that a lone surrogate (from a Python-dialect file, or a file name that is not UTF-8, kept as
// Python's surrogateescape would) is in generalized UTF-8, and then lone_surrogates is set.
struct Fields {
  std::string_view topic, content, user;
  std::string_view cortex_id, timestamp;  // empty unless has_* (present and a string)
  std::string_view path;                  // relative to its store root
  bool has_cortex_id = false, has_timestamp = false;
  bool lone_surrogates = false;
};

// Output formats, as jenova_fast.prepare.records.FORMATS (`text` is rendered from `messages` in Python).
enum Format : int { MESSAGES = 0, SHAREGPT, ALPACA, PROMPT_COMPLETION };

// Appends one rendered record (a JSONL line) to `out`; implemented by the Cython writer. With `metadata`
// the record carries {"source": "insights", "path", "timestamp"}.
typedef void (*format_fn)(std::string *out, const Fields &fields, int format, bool metadata);
// Rewrites each lone surrogate (generalized UTF-8, see python_json.h) in `out` from `from` on as its
// \udXXX escape; implemented by the Cython writer. Called only for records that hold one.
typedef void (*escape_fn)(std::string *out, size_t from);

// Whether an insight goes to the held-out set: a hash of its identity (cortex_id, else its path
// relative to the store), so it never changes side as the store grows. FNV-1a 64 finished by
// murmur3's fmix64; the top 53 bits as a fraction in [0, 1) below `fraction`.
inline bool held_out(std::string_view identity, double fraction) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : identity) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

struct Skip {
  std::string path;
  int reason;
};

struct Chunk {
  std::string data;
  std::string eval_data;  // the held-out records, when Options::eval_fraction > 0
  std::vector<Skip> skips;
  std::vector<std::string> topics;  // each record's topic in `data`, when Options::collect_topics
  // Options::collect_fields: per record its full path, timestamp ("" when absent) and content, and no
  // rendered output (what --dedup decides on).
  std::vector<std::string> fields;
  uint64_t files = 0, bytes = 0, records = 0, eval_records = 0, ignored = 0, dropped = 0;
};

struct Options {
  std::vector<std::string> roots;
  uint64_t max_bytes = 16u << 20;
  bool follow_symlinks = false;
  std::unordered_set<std::string> ignored_names;  // known non-insight .json names (records.NOT_INSIGHTS)
  int threads = 1;
  bool count_total = false;
  bool collect_topics = false;
  size_t max_depth = 512;
  // Readers beyond `threads` start only while reads block (a cold page cache): a cold store needs
  // many reads in flight, a warm one no more threads than cores.
  int max_readers = 32;
  format_fn format = nullptr;
  escape_fn escape_surrogates = nullptr;
  int output_format = MESSAGES;
  bool metadata = false;
  double eval_fraction = 0.0;  // > 0: held-out records go to Chunk::eval_data
  bool collect_fields = false;
  std::unordered_set<std::string> drop;  // full paths of valid insights to leave out (--dedup)
};

struct Batch;
struct Dir;
struct Reader;

// One insight file's bytes -> its Fields (return -1), or a Reason. The views stay valid until the
// next call. Exposed on its own for tests and benchmarks.
class InsightParser {
 public:
  explicit InsightParser(size_t max_depth);
  ~InsightParser();
  int parse(const char *data, size_t len, Fields &out);

 private:
  std::unique_ptr<Reader> reader_;
};

// How many insight files a walk will meet (names only, nothing read): the progress bar's total.
int64_t count_files(const std::vector<std::string> &roots, bool follow_symlinks,
                    const std::unordered_set<std::string> &ignored_names, const std::function<bool()> &stop);

// Appends chunks to a file descriptor: retries short writes, and starts writeback of every finished
// 8 MiB so the closing fsync has little left to wait for. write() returns 0 or an errno.
class Output {
 public:
  explicit Output(int fd = -1) : fd_(fd) {}
  int write(const char *data, size_t len);

 private:
  int fd_;
  uint64_t written_ = 0, flushed_ = 0;
};

struct Level;

class Pipeline {
 public:
  explicit Pipeline(Options options);
  ~Pipeline();
  Pipeline(const Pipeline &) = delete;
  Pipeline &operator=(const Pipeline &) = delete;

  void start();
  // 1: `out` holds the next chunk in order; 0: nothing yet after timeout_ms; -1: all done (or failed).
  int next(Chunk &out, int timeout_ms);
  void cancel();
  const std::string &error() const { return error_; }

  std::atomic<uint64_t> files_done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<int64_t> files_total{-1};

 private:
  void walk();
  void work();
  void count();
  void walk_root(const std::string &root);
  bool open_level(std::vector<Level> &stack, int parent_fd, const std::string &name, std::string path,
                  size_t root_len, bool follow, const std::shared_ptr<Dir> &parent);
  void emit(const std::shared_ptr<Dir> &dir, const std::string &name, int kind, int reason);
  void flush_batch();
  void fail(const std::string &message);
  void add_reader();
  void wait_for_fds();

  Options opt_;
  std::mutex mu_;
  std::condition_variable cv_walker_, cv_workers_, cv_merger_;
  std::deque<std::shared_ptr<Batch>> inflight_;  // in sequence order, the merger pops the front
  std::deque<std::shared_ptr<Batch>> todo_;      // waiting for a worker
  std::shared_ptr<Batch> building_;
  bool walk_done_ = false;
  std::atomic<bool> cancelled_{false};  // written under mu_, read without it by the walk loops
  std::string error_;
  std::vector<std::thread> threads_;
  size_t max_inflight_;
  int readers_ = 0;
  std::atomic<int64_t> open_dirs_{0};  // directory fds open now (the walk's stack and the batches')
  int64_t dir_budget_ = 0;
};

}  // namespace jf
