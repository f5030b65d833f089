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

cdef bytes _USER_PREFIX = ('{"messages":[{"role":"user","content":"' + _records.USER_PREFIX).encode()
cdef bytes _USER_SUFFIX = (_records.USER_SUFFIX + '"},{"role":"assistant","content":"'
                           + _records.ASSISTANT_PREFIX).encode()
cdef bytes _ASSISTANT_MIDDLE = _records.ASSISTANT_MIDDLE.encode()
cdef bytes _ASSISTANT_SUFFIX = _records.ASSISTANT_SUFFIX.encode()
cdef bytes _CHAT_USER = b'{"messages":[{"role":"user","content":"'
cdef bytes _CHAT_ASSISTANT = b'"},{"role":"assistant","content":"'
cdef bytes _END = b'"}]}\n'

cdef string USER_PREFIX = _USER_PREFIX
cdef string USER_SUFFIX = _USER_SUFFIX
cdef string ASSISTANT_MIDDLE = _ASSISTANT_MIDDLE
cdef string ASSISTANT_SUFFIX = _ASSISTANT_SUFFIX
cdef string CHAT_USER = _CHAT_USER
cdef string CHAT_ASSISTANT = _CHAT_ASSISTANT
cdef string END = _END


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


cdef void append_insight_record(string* out, const char* topic, size_t topic_len, const char* content,
                                size_t content_len, const char* user, size_t user_len) noexcept nogil:
    out.append(USER_PREFIX)
    append_escaped(out, topic, topic_len)
    out.append(USER_SUFFIX)
    append_escaped(out, user, user_len)
    out.append(ASSISTANT_MIDDLE)
    append_escaped(out, topic, topic_len)
    out.append(ASSISTANT_SUFFIX)
    append_escaped(out, content, content_len)
    out.append(END)


def format_insight(str topic, str content, str user) -> bytes:
    """One insight's JSONL line (what the pipeline writes), for embedding and tests."""
    cdef bytes t = topic.encode("utf-8", "surrogatepass"), c = content.encode("utf-8", "surrogatepass")
    cdef bytes u = user.encode("utf-8", "surrogatepass")
    cdef string out
    append_insight_record(&out, t, len(t), c, len(c), u, len(u))
    escape_surrogates(&out, 0)
    return out


def format_chat(str user_text, str assistant_text) -> bytes:
    """A user/assistant pair's JSONL line (history records)."""
    cdef bytes u = user_text.encode("utf-8", "surrogatepass"), a = assistant_text.encode("utf-8", "surrogatepass")
    cdef string out
    out.append(CHAT_USER)
    append_escaped(&out, u, len(u))
    out.append(CHAT_ASSISTANT)
    append_escaped(&out, a, len(a))
    out.append(END)
    escape_surrogates(&out, 0)
    return out


def escape(bytes text) -> bytes:
    """JSON string escaping of UTF-8 bytes, as json.dumps(ensure_ascii=False) does (without quotes)."""
    cdef string out
    append_escaped(&out, text, len(text))
    return out
