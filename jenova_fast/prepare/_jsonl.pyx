# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The JSONL writer: records rendered and JSON-escaped straight from UTF-8 bytes, without the GIL.

Twin of `records.dumps_line` (json.dumps with ensure_ascii=False, compact separators): the bytes must
match exactly, so the escape table below is Python's: `"` `\\` and the short forms \\b \\f \\n \\r \\t,
every other byte below 0x20 as \\u00XX in lowercase hex, everything else (UTF-8, DEL) as is.
A lone surrogate (which only a Python-dialect input file can hold, in generalized UTF-8) is written as its
\\udXXX escape, as `records.dumps_line` does, so the output stays valid UTF-8.
"""

from libc.stdint cimport uint8_t
from libcpp.string cimport string

from jenova_fast.prepare import records as _records

cdef extern from *:
    """
    static const char JF_HEX[] = "0123456789abcdef";
    """
    const char* JF_HEX

# 0: copy as is; 1: a short escape in SHORT; 2: \\u00XX
cdef uint8_t KIND[256]
cdef char SHORT[256]


cdef void _init_tables() noexcept:
    cdef int i
    for i in range(256):
        KIND[i] = 0
        SHORT[i] = 0
    for i in range(0x20):
        KIND[i] = 2
    for i, c in ((0x22, b'"'), (0x5C, b'\\'), (0x08, b'b'), (0x0C, b'f'), (0x0A, b'n'), (0x0D, b'r'),
                 (0x09, b't')):
        KIND[i] = 1
        SHORT[i] = (<char*>c)[0]


_init_tables()

# Each output format is its literal head, middle and tail around the user's and the assistant's text
# (records.FORMATS, in that order); the metadata object, when asked for, comes before the closing brace.
cdef string HEAD[4]
cdef string MIDDLE[4]
cdef string TAIL[4]
for _i, _name in enumerate(_records.FORMATS[:4]):
    HEAD[_i], MIDDLE[_i], TAIL[_i] = (part.encode() for part in _records.format_layout(_name))

cdef string USER_PREFIX = _records.USER_PREFIX.encode()
cdef string USER_SUFFIX = _records.USER_SUFFIX.encode()
cdef string ASSISTANT_PREFIX = _records.ASSISTANT_PREFIX.encode()
cdef string ASSISTANT_MIDDLE = _records.ASSISTANT_MIDDLE.encode()
cdef string ASSISTANT_SUFFIX = _records.ASSISTANT_SUFFIX.encode()
cdef string META_SOURCE = b',"metadata":{"source":"'
cdef string META_PATH = b'","path":"'
cdef string META_TIMESTAMP = b'","timestamp":'
cdef string INSIGHTS = b"insights"
cdef string END = b"}\n"


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    // Whether 8 bytes hold none that needs escaping (< 0x20, '"' or '\\'): exact bit tricks for
    // "some byte is zero" / "some byte is below n", so clean text is skipped a word at a time.
    static inline int jf_clean8(const char *p) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t x, q, b;
        memcpy(&x, p, 8);
        q = x ^ (ones * 0x22);
        b = x ^ (ones * 0x5C);
        return ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs) == 0;
    }
    """
    bint jf_clean8(const char* p) noexcept nogil


cdef void append_escaped(string* out, const char* s, size_t n) noexcept nogil:
    cdef size_t i = 0, run = 0, stop
    cdef uint8_t c, kind
    cdef char esc[6]
    while i < n:
        if i + 8 <= n and jf_clean8(s + i):
            i += 8
            continue
        stop = i + 8 if i + 8 <= n else n
        while i < stop:
            c = <uint8_t>s[i]
            kind = KIND[c]
            if kind == 0:
                i += 1
                continue
            if i > run:
                out.append(s + run, i - run)
            if kind == 1:
                esc[0] = b'\\'
                esc[1] = SHORT[c]
                out.append(esc, 2)
            else:
                esc[0] = b'\\'
                esc[1] = b'u'
                esc[2] = b'0'
                esc[3] = b'0'
                esc[4] = JF_HEX[c >> 4]
                esc[5] = JF_HEX[c & 15]
                out.append(esc, 6)
            i += 1
            run = i
    if n > run:
        out.append(s + run, n - run)


cdef void escape_surrogates(string* out, size_t start) noexcept nogil:
    """Rewrites each lone surrogate in `out` from `start` on (bytes ED A0..BF xx: generalized UTF-8, never
    in valid UTF-8, so nothing else matches) as its six-character \\udXXX escape, lowercase hex."""
    cdef size_t i = start, n = out.size(), run
    cdef const char* s = out.data()
    cdef string fixed
    cdef unsigned int cp
    cdef char esc[6]
    while i + 2 < n and not (<uint8_t>s[i] == 0xED and <uint8_t>s[i + 1] >= 0xA0):
        i += 1
    if i + 2 >= n:
        return
    fixed.append(s, i)
    run = i
    while i + 2 < n:
        if <uint8_t>s[i] == 0xED and <uint8_t>s[i + 1] >= 0xA0:
            fixed.append(s + run, i - run)
            cp = 0xD000 | ((<uint8_t>s[i + 1] & 0x3F) << 6) | (<uint8_t>s[i + 2] & 0x3F)
            esc[0] = b'\\'
            esc[1] = b'u'
            esc[2] = JF_HEX[cp >> 12]
            esc[3] = JF_HEX[(cp >> 8) & 15]
            esc[4] = JF_HEX[(cp >> 4) & 15]
            esc[5] = JF_HEX[cp & 15]
            fixed.append(esc, 6)
            i += 3
            run = i
        else:
            i += 1
    fixed.append(s + run, n - run)
    out.swap(fixed)


cdef inline void append_metadata(string* out, const Parts* r) noexcept nogil:
    out.append(META_SOURCE)
    append_escaped(out, r.source.data, r.source.size)
    out.append(META_PATH)
    append_escaped(out, r.path.data, r.path.size)
    out.append(META_TIMESTAMP)
    if r.has_timestamp:
        out.push_back(b'"')
        append_escaped(out, r.timestamp.data, r.timestamp.size)
        out.append(b'"}', 2)
    else:
        out.append(b"null}", 5)


cdef void append_insight_record(string* out, const Parts* r, int fmt, bint metadata) noexcept nogil:
    """An insight's record: the reference's question and answer with its fields, in format `fmt`."""
    out.append(HEAD[fmt])
    out.append(USER_PREFIX)
    append_escaped(out, r.topic.data, r.topic.size)
    out.append(USER_SUFFIX)
    out.append(MIDDLE[fmt])
    out.append(ASSISTANT_PREFIX)
    append_escaped(out, r.user.data, r.user.size)
    out.append(ASSISTANT_MIDDLE)
    append_escaped(out, r.topic.data, r.topic.size)
    out.append(ASSISTANT_SUFFIX)
    append_escaped(out, r.content.data, r.content.size)
    out.append(TAIL[fmt])
    if metadata:
        append_metadata(out, r)
    out.append(END)


cdef void append_chat_record(string* out, Text user_text, Text assistant_text, int fmt,
                             const Parts* metadata) noexcept nogil:
    """A user/assistant pair's record in format `fmt`, with `metadata` (source, path, timestamp) if given."""
    out.append(HEAD[fmt])
    append_escaped(out, user_text.data, user_text.size)
    out.append(MIDDLE[fmt])
    append_escaped(out, assistant_text.data, assistant_text.size)
    out.append(TAIL[fmt])
    if metadata != NULL:
        append_metadata(out, metadata)
    out.append(END)


cdef Text _text(bytes b):
    cdef Text t
    t.data = b
    t.size = len(b)
    return t


cdef bytes _utf8(str s):
    return s.encode("utf-8", "surrogatepass")


cdef int _format_id(str fmt) except -1:
    try:
        return _records.FORMATS.index(fmt)
    except ValueError:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(_records.FORMATS[:4])}") from None


def format_insight(str topic, str content, str user, str fmt="messages", metadata=None) -> bytes:
    """One insight's JSONL line (what the pipeline writes), for embedding and tests. `metadata`: None or
    (source, path, timestamp or None)."""
    cdef bytes t = _utf8(topic), c = _utf8(content), u = _utf8(user), src = b"", p = b"", ts = b""
    cdef Parts r
    r.topic, r.content, r.user = _text(t), _text(c), _text(u)
    r.has_timestamp = False
    if metadata is not None:
        src, p = _utf8(metadata[0]), _utf8(metadata[1])
        r.has_timestamp = metadata[2] is not None
        ts = _utf8(metadata[2]) if r.has_timestamp else b""
    r.source, r.path, r.timestamp = _text(src), _text(p), _text(ts)
    cdef string out
    append_insight_record(&out, &r, _format_id(fmt), metadata is not None)
    escape_surrogates(&out, 0)
    return out


def format_chat(str user_text, str assistant_text, str fmt="messages", metadata=None) -> bytes:
    """A user/assistant pair's JSONL line (history, assumptions, cortex records)."""
    cdef bytes u = _utf8(user_text), a = _utf8(assistant_text), src = b"", p = b"", ts = b""
    cdef Parts r
    r.has_timestamp = False
    if metadata is not None:
        src, p = _utf8(metadata[0]), _utf8(metadata[1])
        r.has_timestamp = metadata[2] is not None
        ts = _utf8(metadata[2]) if r.has_timestamp else b""
    r.source, r.path, r.timestamp = _text(src), _text(p), _text(ts)
    cdef string out
    append_chat_record(&out, _text(u), _text(a), _format_id(fmt), &r if metadata is not None else NULL)
    escape_surrogates(&out, 0)
    return out


def escape(bytes text) -> bytes:
    """JSON string escaping of UTF-8 bytes, as json.dumps(ensure_ascii=False) does (without quotes)."""
    cdef string out
    append_escaped(&out, text, len(text))
    return out
