// Python's JSON dialect, for the rare insight file that simdjson rejects.
//
// The assistant reads its insights back with Python's `json.load`, which accepts more than RFC 8259:
// NaN, Infinity and -Infinity, integers of any size (up to the 4,300 digits Python's int() allows by
// default), floats that overflow to infinity (1e400), and lone surrogate escapes such as "\ud800".
// simdjson stays the fast path; a file it rejects is parsed again here, so valid JSON pays nothing.
// This parser follows CPython's C scanner (Modules/_json.c) token for token, and reports the top-level
// object's "content", "topic", "user", "cortex_id" and "timestamp" (the last of duplicate keys wins, as
// in a Python dict).
//
// Strings are decoded to UTF-8, except that a lone surrogate is kept as its 3-byte generalized UTF-8
// form (ED A0..BF xx, "WTF-8"); valid UTF-8 never holds those bytes, so the writer can find them and
// write each as its \udXXX escape, exactly what Python's json.dumps writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace jf {

// Python's sys.int_info.default_max_str_digits: int() of a longer literal is a ValueError, so
// json.loads rejects the whole document.
constexpr size_t kPythonIntMaxDigits = 4300;

struct PyField {
  enum Kind { ABSENT, NULL_VALUE, STRING, OTHER };
  Kind kind = ABSENT;
  std::string text;          // for STRING
  bool surrogates = false;   // text holds a lone surrogate
};

class PythonJson {
 public:
  enum Result { OBJECT, NOT_OBJECT, INVALID };

  explicit PythonJson(size_t max_depth) : max_depth_(max_depth) {}

  // Parses `len` bytes of valid UTF-8 (the caller checked). On OBJECT, the fields below hold the
  // document's own.
  Result parse(const char *data, size_t len) {
    p_ = reinterpret_cast<const unsigned char *>(data);
    end_ = p_ + len;
    content.kind = topic.kind = user.kind = cortex_id.kind = timestamp.kind = PyField::ABSENT;
    skip_ws();
    if (p_ == end_) return INVALID;
    const bool object = *p_ == '{';
    if (!(object ? top_object() : value(0, nullptr))) return INVALID;
    skip_ws();
    if (p_ != end_) return INVALID;  // "Extra data"
    return object ? OBJECT : NOT_OBJECT;
  }

  PyField content, topic, user, cortex_id, timestamp;

 private:
  const unsigned char *p_ = nullptr, *end_ = nullptr;
  size_t max_depth_;
  std::string key_;
  bool surrogate_ = false;  // set by string() when it decoded a lone surrogate

  void skip_ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool word(const char *w, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    for (size_t i = 0; i < n; i++)
      if (p_[i] != static_cast<unsigned char>(w[i])) return false;
    p_ += n;
    return true;
  }

  static bool digit(unsigned char c) { return c >= '0' && c <= '9'; }

  // A value at nesting `depth` (of its container); `into`, when given, receives its kind and text.
  bool value(size_t depth, PyField *into) {
    if (p_ == end_) return false;
    PyField::Kind kind = PyField::OTHER;
    bool ok;
    switch (*p_) {
      case '"':
        if (into) {
          into->text.clear();
          surrogate_ = false;
          ok = string(&into->text);
          into->surrogates = surrogate_;
          kind = PyField::STRING;
        } else {
          ok = string(nullptr);
        }
        break;
      case '{':
        ok = object(depth + 1);
        break;
      case '[':
        ok = array(depth + 1);
        break;
      case 'n':
        ok = word("null", 4);
        kind = PyField::NULL_VALUE;
        break;
      case 't':
        ok = word("true", 4);
        break;
      case 'f':
        ok = word("false", 5);
        break;
      case 'N':
        ok = word("NaN", 3);
        break;
      case 'I':
        ok = word("Infinity", 8);
        break;
      case '-':
        ok = word("-Infinity", 9) || number();
        break;
      default:
        ok = number();
    }
    if (ok && into) into->kind = kind;
    return ok;
  }

  // CPython's _match_number_unicode: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?, where a '.' or an
  // exponent not followed by digits is left for the caller (and so is an error there).
  bool number() {
    if (p_ != end_ && *p_ == '-') ++p_;
    const unsigned char *digits = p_;
    if (p_ != end_ && *p_ >= '1' && *p_ <= '9') {
      while (p_ != end_ && digit(*p_)) ++p_;
    } else if (p_ != end_ && *p_ == '0') {
      ++p_;
    } else {
      return false;
    }
    const size_t int_digits = static_cast<size_t>(p_ - digits);
    bool is_float = false;
    if (end_ - p_ >= 2 && *p_ == '.' && digit(p_[1])) {
      p_ += 2;
      while (p_ != end_ && digit(*p_)) ++p_;
      is_float = true;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      const unsigned char *q = p_ + 1;
      if (q != end_ && (*q == '+' || *q == '-')) ++q;
      if (q != end_ && digit(*q)) {
        while (q != end_ && digit(*q)) ++q;
        p_ = q;
        is_float = true;
      }
    }
    return is_float || int_digits <= kPythonIntMaxDigits;
  }

  static int hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool hex4(const unsigned char *at, uint32_t &out) {
    if (end_ - at < 4) return false;
    out = 0;
    for (int i = 0; i < 4; i++) {
      int h = hex(at[i]);
      if (h < 0) return false;
      out = (out << 4) | static_cast<uint32_t>(h);
    }
    return true;
  }

  static void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {  // a lone surrogate too: its generalized UTF-8 form
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // CPython's scanstring_unicode with strict=True; `out` (when given) receives the decoded text.
  bool string(std::string *out) {
    ++p_;  // the opening quote
    for (;;) {
      const unsigned char *run = p_;
      while (p_ != end_ && *p_ != '"' && *p_ != '\\' && *p_ >= 0x20) ++p_;
      if (out) out->append(reinterpret_cast<const char *>(run), static_cast<size_t>(p_ - run));
      if (p_ == end_ || *p_ < 0x20) return false;  // unterminated, or an unescaped control character
      if (*p_ == '"') {
        ++p_;
        return true;
      }
      ++p_;  // the backslash
      if (p_ == end_) return false;
      const unsigned char e = *p_++;
      char c;
      switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!hex4(p_, cp)) return false;
          p_ += 4;
          if (cp >= 0xD800 && cp <= 0xDBFF && end_ - p_ >= 2 && p_[0] == '\\' && p_[1] == 'u') {
            uint32_t low;
            if (!hex4(p_ + 2, low)) return false;  // an invalid escape whichever way it is read
            if (low >= 0xDC00 && low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
              p_ += 6;
            }
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) surrogate_ = true;
          if (out) append_utf8(*out, cp);
          continue;
        }
        default:
          return false;
      }
      if (out) out->push_back(c);
    }
  }

  bool object(size_t depth) {
    if (depth > max_depth_) return false;
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (p_ == end_ || *p_ != '"' || !string(nullptr)) return false;
      if (!colon_then_value(depth, nullptr)) return false;
      int next = after_item('}');
      if (next <= 0) return next == 0;
    }
  }

  // The document's own object: its keys are decoded to find the three fields.
  bool top_object() {
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (p_ == end_ || *p_ != '"') return false;
      key_.clear();
      if (!string(&key_)) return false;
      PyField *into = key_ == "content"     ? &content
                      : key_ == "topic"     ? &topic
                      : key_ == "user"      ? &user
                      : key_ == "cortex_id" ? &cortex_id
                      : key_ == "timestamp" ? &timestamp
                                            : nullptr;
      if (!colon_then_value(1, into)) return false;
      int next = after_item('}');
      if (next <= 0) return next == 0;
    }
  }

  bool array(size_t depth) {
    if (depth > max_depth_) return false;
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!value(depth, nullptr)) return false;
      int next = after_item(']');
      if (next <= 0) return next == 0;
    }
  }

  bool colon_then_value(size_t depth, PyField *into) {
    skip_ws();
    if (p_ == end_ || *p_ != ':') return false;
    ++p_;
    skip_ws();
    return value(depth, into);
  }

  // After a member: 1 and positioned at the next one after ',', 0 at the closing bracket, -1 an error.
  int after_item(unsigned char close) {
    skip_ws();
    if (p_ == end_) return -1;
    if (*p_ == close) {
      ++p_;
      return 0;
    }
    if (*p_ != ',') return -1;
    ++p_;
    skip_ws();
    return 1;
  }
};

}  // namespace jf
