#include "pipeline.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <utility>

#include "simdjson.h"

namespace jf {
namespace {

constexpr size_t kBatchItems = 256;

enum Kind : int {
  FILE_ITEM = 0,    // read and parse
  SKIP_SEEN = 1,    // counted as a seen insight file, then skipped (not a regular file)
  SKIP_UNSEEN = 2,  // skipped before it counts as a file (symlinks, unreadable directories)
  IGNORED = 3,      // a known non-insight (Options::ignored_names: concerns.json)
};

bool ends_with_json(const std::string &name) {
  return name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0;
}

int errno_reason(int err) {
  if (err == ENOENT) return VANISHED;
  if (err == ELOOP) return SYMLINK;
  return UNREADABLE;
}

}  // namespace

struct Dir {
  int fd;
  std::string path;
  size_t root_len;  // the length of its root's path: the rest is the path relative to the store
  std::atomic<int64_t> *open_count;  // the pipeline's count of open directory fds, or null
  Dir(int fd_, std::string path_, size_t root_len_, std::atomic<int64_t> *open_count_ = nullptr)
      : fd(fd_), path(std::move(path_)), root_len(root_len_), open_count(open_count_) {
    if (fd >= 0 && open_count) open_count->fetch_add(1);
  }
  ~Dir() {
    if (fd >= 0) {
      close(fd);
      if (open_count) open_count->fetch_sub(1);
    }
  }
};

struct Item {
  uint32_t dir;   // index into Batch::dirs
  uint32_t name;  // offset of the NUL-terminated name in Batch::names
  int kind;
  int reason;
};

// Names live in one buffer and directories once per batch: a per-name allocation made by the walker and
// freed by a reader contends on malloc's arena lock, which put readers to sleep about once per file.
struct Batch {
  std::vector<std::shared_ptr<Dir>> dirs;
  std::string names;
  std::vector<Item> items;
  Chunk result;
  bool done = false;
  const Dir &dir(const Item &item) const { return *dirs[item.dir]; }
  const char *name(const Item &item) const { return names.data() + item.name; }
};

// Per worker: a reusable, padded read buffer, a simdjson parser and, for files simdjson rejects, the
// Python-dialect parser (both allow the same depth as the pure twin).
struct Reader {
  simdjson::dom::parser parser;
  PythonJson python;
  std::unique_ptr<char[]> buf;
  size_t cap = 0;

  explicit Reader(size_t max_depth) : python(max_depth) {
    if (parser.allocate(64 * 1024, max_depth) != simdjson::SUCCESS) throw std::bad_alloc();
    reserve(64 * 1024);
  }
  // Grows the buffer, keeping its first `keep` bytes.
  void reserve(size_t n, size_t keep = 0) {
    if (n <= cap) return;
    size_t want = std::max(n, cap * 2);
    std::unique_ptr<char[]> bigger(new char[want + simdjson::SIMDJSON_PADDING]);
    if (keep) memcpy(bigger.get(), buf.get(), keep);
    buf = std::move(bigger);
    cap = want;
  }
};

// Raises the soft limit on open files to the hard one (as Go's runtime does): the walk holds one fd per
// directory level and per directory of a batch in flight. Returns the soft limit now in force.
static int64_t raise_open_file_limit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur == RLIM_INFINITY ? (int64_t{1} << 30) : static_cast<int64_t>(rl.rlim_cur);
}

Pipeline::Pipeline(Options options) : opt_(std::move(options)) {
  // Half the fds for directories, the rest for the readers' files and the embedding process.
  dir_budget_ = std::max<int64_t>(16, raise_open_file_limit() / 2);
  if (opt_.threads < 1) opt_.threads = 1;
  opt_.max_readers = std::max(opt_.max_readers, opt_.threads);
  max_inflight_ = static_cast<size_t>(opt_.max_readers) * 2 + 8;
}

Pipeline::~Pipeline() {
  cancel();  // after this no reader is added, so threads_ no longer changes
  for (auto &t : threads_)
    if (t.joinable()) t.join();
}

void Pipeline::start() {
  std::lock_guard<std::mutex> lock(mu_);
  threads_.emplace_back(&Pipeline::walk, this);
  if (opt_.count_total) threads_.emplace_back(&Pipeline::count, this);
  for (int i = 0; i < opt_.threads; i++) {
    readers_++;
    threads_.emplace_back(&Pipeline::work, this);
  }
}

void Pipeline::add_reader() {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_ || walk_done_ || readers_ >= opt_.max_readers) return;
  readers_++;
  threads_.emplace_back(&Pipeline::work, this);
}

void Pipeline::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  cv_walker_.notify_all();
  cv_workers_.notify_all();
  cv_merger_.notify_all();
}

void Pipeline::fail(const std::string &message) {
  std::lock_guard<std::mutex> lock(mu_);
  if (error_.empty()) error_ = message;
  cancelled_ = true;
  cv_walker_.notify_all();
  cv_workers_.notify_all();
  cv_merger_.notify_all();
}

// ---- walk ----------------------------------------------------------------------------------------

void Pipeline::emit(const std::shared_ptr<Dir> &dir, const std::string &name, int kind, int reason) {
  if (!building_) {
    building_ = std::make_shared<Batch>();
    building_->items.reserve(kBatchItems);
    building_->names.reserve(kBatchItems * 48);
  }
  Batch &b = *building_;
  if (b.dirs.empty() || b.dirs.back() != dir) b.dirs.push_back(dir);
  b.items.push_back(Item{static_cast<uint32_t>(b.dirs.size() - 1), static_cast<uint32_t>(b.names.size()), kind,
                         reason});
  b.names.append(name);
  b.names.push_back('\0');
  if (b.items.size() >= kBatchItems) flush_batch();
}

void Pipeline::flush_batch() {
  if (!building_ || building_->items.empty()) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_walker_.wait(lock, [&] { return cancelled_ || inflight_.size() < max_inflight_; });
  if (cancelled_) return;
  inflight_.push_back(building_);
  todo_.push_back(building_);
  building_.reset();
  cv_workers_.notify_one();
}

// A store of many small directories puts a directory fd in each batch item: until the batches in flight
// are done with theirs, the walker opens no more than the budget (a soft limit of 1,024 open files is
// common). Only the walk's own stack is left when nothing is in flight: it may then go over, and a
// directory that cannot be opened is skipped as unreadable.
void Pipeline::wait_for_fds() {
  flush_batch();
  std::unique_lock<std::mutex> lock(mu_);
  while (!cancelled_ && open_dirs_.load() >= dir_budget_ && !inflight_.empty())
    cv_walker_.wait_for(lock, std::chrono::milliseconds(5));
}

struct Entry {
  std::string name;
  unsigned char type;  // d_type: lets most entries skip a stat call
  bool operator<(const Entry &other) const { return name < other.name; }
};

// One directory of the walk's stack: its entries, sorted, and the next to visit.
struct Level {
  std::shared_ptr<Dir> dir;
  std::vector<Entry> names;
  size_t next = 0;
  dev_t dev;
  ino_t ino;
};

namespace {

// Sorted names of a directory, hidden ones left out (the reference's glob never sees them).
bool list_sorted(int fd, std::vector<Entry> &names) {
  int dup_fd = dup(fd);
  if (dup_fd < 0) return false;
  DIR *d = fdopendir(dup_fd);
  if (!d) {
    close(dup_fd);
    return false;
  }
  while (struct dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    names.push_back(Entry{e->d_name, e->d_type});
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return true;
}

// What a directory entry is: the mode to visit it as (its target's, through a symlink that is followed),
// or why it is skipped. Names that are not .json are skipped without a report unless they lead to a
// directory.
struct EntryKind {
  mode_t mode = 0;
  bool follow = false;
  int skip = -1;        // a Reason when the entry is skipped
  bool report = false;  // the skip is reported
};

EntryKind skipped(int reason, bool report) {
  EntryKind kind;
  kind.skip = reason;
  kind.report = report;
  return kind;
}

EntryKind classify(int dir_fd, const std::string &name, unsigned char type, bool is_json, bool follow_symlinks,
                   const std::vector<Level> &stack) {
  EntryKind kind;
  if (type == DT_REG) {
    kind.mode = S_IFREG;
  } else if (type == DT_DIR) {
    kind.mode = S_IFDIR;
  } else if (type == DT_LNK) {
    kind.mode = S_IFLNK;
  } else {
    struct stat st;
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return skipped(errno_reason(errno), is_json);
    kind.mode = st.st_mode;
  }
  if (!S_ISLNK(kind.mode)) return kind;
  struct stat target;
  bool ok = fstatat(dir_fd, name.c_str(), &target, 0) == 0;
  int err = errno;
  if (!follow_symlinks) return skipped(SYMLINK, is_json || (ok && S_ISDIR(target.st_mode)));
  if (!ok) return skipped(errno_reason(err), is_json);
  if (S_ISDIR(target.st_mode)) {
    for (const Level &a : stack) {
      if (a.dev == target.st_dev && a.ino == target.st_ino) return skipped(SYMLINK_LOOP, true);
    }
  }
  kind.mode = target.st_mode;
  kind.follow = true;
  return kind;
}

}  // namespace

// Opens a directory of the walk and lists it onto `stack`; a directory that cannot be opened or listed is
// reported as a skip of `parent`'s entry.
bool Pipeline::open_level(std::vector<Level> &stack, int parent_fd, const std::string &name, std::string path,
                          size_t root_len, bool follow, const std::shared_ptr<Dir> &parent) {
  if (open_dirs_.load() >= dir_budget_) wait_for_fds();
  int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
  int fd = openat(parent_fd, name.c_str(), flags);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    emit(parent, name, SKIP_UNSEEN, errno_reason(err));
    return false;
  }
  Level level;
  level.dir = std::make_shared<Dir>(fd, std::move(path), root_len, &open_dirs_);
  level.dev = st.st_dev;
  level.ino = st.st_ino;
  if (!list_sorted(fd, level.names)) {
    emit(parent, name, SKIP_UNSEEN, errno_reason(errno));
    return false;
  }
  stack.push_back(std::move(level));
  return true;
}

// Depth first, names sorted: the order the reference's sorted glob gives, so records come out in it.
void Pipeline::walk_root(const std::string &root) {
  std::vector<Level> stack;
  // The root is reported by its own path: its parent is a pseudo-directory whose path is empty.
  auto top = std::make_shared<Dir>(-1, std::string(), 0);
  if (!open_level(stack, AT_FDCWD, root, root, root.size(), true, top)) return;
  while (!stack.empty()) {
    if (cancelled_.load(std::memory_order_relaxed)) return;
    Level &level = stack.back();
    if (level.next >= level.names.size()) {
      stack.pop_back();
      continue;
    }
    Entry &entry = level.names[level.next++];
    std::string name = std::move(entry.name);
    std::shared_ptr<Dir> dir = level.dir;
    const bool is_json = ends_with_json(name);
    const EntryKind kind = classify(dir->fd, name, entry.type, is_json, opt_.follow_symlinks, stack);
    if (kind.skip >= 0) {
      if (kind.report) emit(dir, name, SKIP_UNSEEN, kind.skip);
    } else if (S_ISDIR(kind.mode)) {
      open_level(stack, dir->fd, name, dir->path + "/" + name, root.size(), kind.follow, dir);
    } else if (is_json) {
      if (opt_.ignored_names.count(name)) {
        emit(dir, name, IGNORED, 0);
      } else if (!S_ISREG(kind.mode)) {
        emit(dir, name, SKIP_SEEN, NOT_REGULAR);
      } else {
        emit(dir, name, FILE_ITEM, 0);
      }
    }
  }
}

void Pipeline::walk() {
  try {
    for (const std::string &root : opt_.roots) {
      walk_root(root);
      if (cancelled_) break;
    }
    flush_batch();
  } catch (const std::exception &e) {
    fail(std::string("walker: ") + e.what());
  }
  std::lock_guard<std::mutex> lock(mu_);
  walk_done_ = true;
  cv_workers_.notify_all();
  cv_merger_.notify_all();
}

// ---- count (for the progress bar's ETA) ---------------------------------------------------------

int64_t count_files(const std::vector<std::string> &roots, bool follow_symlinks,
                    const std::unordered_set<std::string> &ignored_names, const std::function<bool()> &stop) {
  // One directory open at a time, the ones still to visit kept as paths: this runs beside the walk, whose
  // fds it must not compete with. A path longer than PATH_MAX is not counted (the total is an estimate).
  int64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::vector<std::string> stack(roots.rbegin(), roots.rend());
  while (!stack.empty() && !stop()) {
    std::string path = std::move(stack.back());
    stack.pop_back();
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st;
    DIR *d = nullptr;
    if (fstat(fd, &st) == 0 && seen.insert({st.st_dev, st.st_ino}).second) d = fdopendir(fd);
    if (!d) {
      close(fd);
      continue;
    }
    while (struct dirent *e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN || (e->d_type == DT_LNK && follow_symlinks)) {
        struct stat s;
        int flags = follow_symlinks ? 0 : AT_SYMLINK_NOFOLLOW;
        is_dir = fstatat(dirfd(d), e->d_name, &s, flags) == 0 && S_ISDIR(s.st_mode);
      }
      if (is_dir) {
        stack.push_back(path + "/" + e->d_name);
      } else {
        size_t n = strlen(e->d_name);
        if (n >= 5 && memcmp(e->d_name + n - 5, ".json", 5) == 0 && !ignored_names.count(e->d_name)) total++;
      }
    }
    closedir(d);
  }
  return total;
}

void Pipeline::count() {
  files_total.store(
      count_files(opt_.roots, opt_.follow_symlinks, opt_.ignored_names, [this] { return cancelled_.load(); }));
}

// ---- read + parse --------------------------------------------------------------------------------

namespace {

// Reads the whole file into reader.buf; returns its length, or -(reason + 1).
int64_t read_file(Reader &reader, const Dir &dir, const char *name, const Options &opt) {
  int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (opt.follow_symlinks ? 0 : O_NOFOLLOW);
  int fd = openat(dir.fd, name, flags);
  if (fd < 0) return -(errno_reason(errno) + 1);
  // No fstat for the common case: the walker saw a regular file, and a read that leaves the buffer
  // unfilled is the end of a regular file. Only a file that fills the buffer is stat'ed, for its type
  // and the size limit, so a huge file is refused without being read.
  size_t total = 0;
  bool checked = false;
  for (;;) {
    size_t room = reader.cap - total;
    ssize_t n = read(fd, reader.buf.get() + total, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return -(errno_reason(err) + 1);
    }
    total += static_cast<size_t>(n);
    if (total > opt.max_bytes) {
      close(fd);
      return -(TOO_LARGE + 1);
    }
    if (static_cast<size_t>(n) < room) break;
    size_t want = total + 65536;
    if (!checked) {
      checked = true;
      struct stat st;
      int reason = -1;
      if (fstat(fd, &st) != 0) {
        reason = errno_reason(errno);
      } else if (!S_ISREG(st.st_mode)) {
        reason = NOT_REGULAR;
      } else if (static_cast<uint64_t>(st.st_size) > opt.max_bytes) {
        reason = TOO_LARGE;
      }
      if (reason >= 0) {
        close(fd);
        return -(reason + 1);
      }
      want = std::max(want, static_cast<size_t>(st.st_size) + 1);
    }
    reader.reserve(want, total);
  }
  close(fd);
  return static_cast<int64_t>(total);
}

// A top-level field as the record needs it: absent, null, a string, or anything else.
struct Field {
  PyField::Kind kind = PyField::ABSENT;
  std::string_view text;
};

// The reference's rules, whichever parser read the file: `content` must be a non-empty string; a
// missing or null topic/user takes its default; any other type is wrong_type.
int decide(const Field &c, const Field &t, const Field &u, const Field &id, const Field &ts, Fields &out) {
  if (c.kind == PyField::ABSENT || c.kind == PyField::NULL_VALUE) return NO_CONTENT;
  if (c.kind == PyField::STRING && c.text.empty()) return NO_CONTENT;
  if (c.kind != PyField::STRING) return WRONG_TYPE;
  if (t.kind == PyField::OTHER || u.kind == PyField::OTHER) return WRONG_TYPE;
  out.content = c.text;
  out.topic = t.kind == PyField::STRING ? t.text : std::string_view("general");
  out.user = u.kind == PyField::STRING ? u.text : std::string_view("user");
  out.has_cortex_id = id.kind == PyField::STRING;
  out.cortex_id = out.has_cortex_id ? id.text : std::string_view();
  out.has_timestamp = ts.kind == PyField::STRING;
  out.timestamp = out.has_timestamp ? ts.text : std::string_view();
  return -1;
}

Field from_simdjson(simdjson::dom::element e, bool present) {
  Field f;
  if (!present) return f;
  if (e.is_null()) {
    f.kind = PyField::NULL_VALUE;
  } else if (e.is_string()) {
    f.kind = PyField::STRING;
    f.text = e.get_string().value_unsafe();
  } else {
    f.kind = PyField::OTHER;
  }
  return f;
}

Field from_python(const PyField &p) {
  Field f;
  f.kind = p.kind;
  if (p.kind == PyField::STRING) f.text = p.text;
  return f;
}

// The fields are views into the parsers' buffers, valid until the next parse.
int parse_insight(Reader &reader, size_t len, Fields &out) {
  const char *data = reader.buf.get();
  if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
    data += 3;
    len -= 3;
  }
  out.lone_surrogates = false;
  if (!simdjson::validate_utf8(data, len)) return INVALID_UTF8;
  // simdjson would skip a second byte order mark; Python's json rejects one after decoding.
  if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) return INVALID_JSON;
  simdjson::dom::element root;
  if (reader.parser.parse(data, len, false).get(root) != simdjson::SUCCESS) {
    // Not RFC 8259 JSON; Python's json may still read it (NaN, 1e400, huge integers, lone surrogates).
    switch (reader.python.parse(data, len)) {
      case PythonJson::INVALID:
        return INVALID_JSON;
      case PythonJson::NOT_OBJECT:
        return NOT_OBJECT;
      case PythonJson::OBJECT:
        break;
    }
    const PythonJson &py = reader.python;
    int reason = decide(from_python(py.content), from_python(py.topic), from_python(py.user),
                        from_python(py.cortex_id), from_python(py.timestamp), out);
    if (reason < 0) {
      for (const PyField *f : {&py.content, &py.topic, &py.user, &py.timestamp})
        out.lone_surrogates = out.lone_surrogates || (f->kind == PyField::STRING && f->surrogates);
    }
    return reason;
  }
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) return NOT_OBJECT;
  simdjson::dom::element c, t, u, id, ts;
  bool has_c = false, has_t = false, has_u = false, has_id = false, has_ts = false;
  for (auto field : obj) {  // the last of duplicate keys wins, as in Python's json
    if (field.key == "content") {
      c = field.value;
      has_c = true;
    } else if (field.key == "topic") {
      t = field.value;
      has_t = true;
    } else if (field.key == "user") {
      u = field.value;
      has_u = true;
    } else if (field.key == "cortex_id") {
      id = field.value;
      has_id = true;
    } else if (field.key == "timestamp") {
      ts = field.value;
      has_ts = true;
    }
  }
  return decide(from_simdjson(c, has_c), from_simdjson(t, has_t), from_simdjson(u, has_u),
                from_simdjson(id, has_id), from_simdjson(ts, has_ts), out);
}

std::string join(const Dir &dir, const char *name) {
  return dir.path.empty() ? std::string(name) : dir.path + "/" + name;
}

// A path relative to its store root (leading slashes dropped, as the pure twin does).
std::string_view relative(std::string_view full, size_t root_len) {
  full.remove_prefix(std::min(root_len, full.size()));
  while (!full.empty() && full.front() == '/') full.remove_prefix(1);
  return full;
}

// A file name's bytes as Python's os.fsdecode sees them: valid UTF-8 as is, every other byte b as the
// lone surrogate U+DC00+b (surrogateescape), here in generalized UTF-8. Returns whether any was.
bool surrogateescape(std::string_view in, std::string &out) {
  out.clear();
  bool escaped = false;
  const auto *p = reinterpret_cast<const unsigned char *>(in.data());
  const auto *end = p + in.size();
  while (p < end) {
    unsigned char c = *p;
    size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    bool ok = n > 0 && static_cast<size_t>(end - p) >= n;
    for (size_t i = 1; ok && i < n; i++) ok = (p[i] & 0xC0) == 0x80;
    if (ok && n == 3) ok = !(c == 0xE0 && p[1] < 0xA0) && !(c == 0xED && p[1] >= 0xA0);  // overlong, surrogate
    if (ok && n == 4) ok = !(c == 0xF0 && p[1] < 0x90) && !(c == 0xF4 && p[1] >= 0x90);  // overlong, > U+10FFFF
    if (ok) {
      out.append(reinterpret_cast<const char *>(p), n);
      p += n;
      continue;
    }
    uint32_t cp = 0xDC00 + c;  // U+DC80..U+DCFF as 3 bytes
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    escaped = true;
    p++;
  }
  return escaped;
}

}  // namespace

InsightParser::InsightParser(size_t max_depth) : reader_(new Reader(max_depth)) {}
InsightParser::~InsightParser() = default;

int InsightParser::parse(const char *data, size_t len, Fields &out) {
  reader_->reserve(len);
  if (len) memcpy(reader_->buf.get(), data, len);
  return parse_insight(*reader_, len, out);
}

void Pipeline::work() {
  try {
    Reader reader(opt_.max_depth);
    std::string full, fsdecoded;  // a record's path and its os.fsdecode form, only when needed
    size_t last_size = 0;  // the previous batch's output: one allocation per batch, not a dozen regrowths
    for (;;) {
      std::shared_ptr<Batch> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_workers_.wait(lock, [&] { return cancelled_ || !todo_.empty() || walk_done_; });
        if (cancelled_ || todo_.empty()) return;
        batch = todo_.front();
        todo_.pop_front();
      }
      Chunk &out = batch->result;
      out.data.reserve(last_size + last_size / 4);
      auto skip = [&](const Item &item, int reason) {
        out.skips.push_back(Skip{join(batch->dir(item), batch->name(item)), reason});
      };
      struct rusage before, after;
      getrusage(RUSAGE_THREAD, &before);
      for (Item &item : batch->items) {
        if (item.kind == IGNORED) {
          out.ignored++;
          continue;
        }
        if (item.kind == SKIP_UNSEEN) {
          skip(item, item.reason);
          continue;
        }
        out.files++;
        if (item.kind == SKIP_SEEN) {
          skip(item, item.reason);
          continue;
        }
        int64_t n = read_file(reader, batch->dir(item), batch->name(item), opt_);
        if (n < 0) {
          skip(item, static_cast<int>(-n - 1));
          continue;
        }
        out.bytes += static_cast<uint64_t>(n);
        if (n == 0) {
          skip(item, EMPTY_FILE);
          continue;
        }
        Fields f;
        int reason = parse_insight(reader, static_cast<size_t>(n), f);
        if (reason >= 0) {
          skip(item, reason);
          continue;
        }
        full.clear();
        if (!opt_.drop.empty() || opt_.collect_fields) {
          full = join(batch->dir(item), batch->name(item));
          if (!opt_.drop.empty() && opt_.drop.count(full)) {
            out.dropped++;
            continue;
          }
          if (opt_.collect_fields) {
            out.fields.emplace_back(full);
            out.fields.emplace_back(f.timestamp);
            out.fields.emplace_back(f.content);
            out.records++;
            continue;
          }
        }
        std::string_view rel;
        if (opt_.metadata || opt_.eval_fraction > 0) {
          if (full.empty()) full = join(batch->dir(item), batch->name(item));
          rel = relative(full, batch->dir(item).root_len);
        }
        bool held = opt_.eval_fraction > 0 &&
                    held_out(f.has_cortex_id && !f.cortex_id.empty() ? f.cortex_id : rel, opt_.eval_fraction);
        f.path = rel;
        if (opt_.metadata && surrogateescape(rel, fsdecoded)) {
          f.path = fsdecoded;
          f.lone_surrogates = true;
        }
        std::string &dest = held ? out.eval_data : out.data;
        const size_t at = dest.size();
        opt_.format(&dest, f, opt_.output_format, opt_.metadata);
        if (f.lone_surrogates) opt_.escape_surrogates(&dest, at);
        out.records++;
        out.eval_records += held;
        if (opt_.collect_topics && !held) out.topics.emplace_back(f.topic);  // what --balance-topics filters
      }
      // Reads that blocked show up as voluntary context switches: then another reader pays.
      last_size = out.data.size();
      getrusage(RUSAGE_THREAD, &after);
      if ((after.ru_nvcsw - before.ru_nvcsw) * 4 > static_cast<long>(batch->items.size())) add_reader();
      batch->dirs = {};  // releases directory fds early
      batch->items = {};
      batch->names = {};
      std::lock_guard<std::mutex> lock(mu_);
      batch->done = true;
      cv_merger_.notify_all();
    }
  } catch (const std::exception &e) {
    fail(std::string("reader: ") + e.what());
  }
}

// ---- output --------------------------------------------------------------------------------------

int Output::write(const char *data, size_t len) {
  while (len) {
    ssize_t n = ::write(fd_, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += n;
    len -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
  constexpr uint64_t kWriteback = 8u << 20;
  if (written_ - flushed_ >= kWriteback) {
    // A hint: a file system that cannot do it still gets everything from the fsync.
    sync_file_range(fd_, static_cast<off_t>(flushed_), static_cast<off_t>(written_ - flushed_),
                    SYNC_FILE_RANGE_WRITE);
    flushed_ = written_;
  }
  return 0;
}

// ---- merge ---------------------------------------------------------------------------------------

int Pipeline::next(Chunk &out, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [&] {
    return cancelled_ || (!inflight_.empty() && inflight_.front()->done) || (walk_done_ && inflight_.empty());
  };
  if (!cv_merger_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready)) return 0;
  if (cancelled_ || inflight_.empty()) return -1;
  std::shared_ptr<Batch> batch = inflight_.front();
  inflight_.pop_front();
  cv_walker_.notify_one();
  lock.unlock();
  out = std::move(batch->result);
  files_done.fetch_add(out.files);
  bytes_done.fetch_add(out.bytes);
  return 1;
}

}  // namespace jf
