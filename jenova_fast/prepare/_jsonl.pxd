from libcpp.string cimport string


cdef struct Text:
    const char* data
    size_t size


# One record's strings as UTF-8 views (lone surrogates in generalized UTF-8, see escape_surrogates).
cdef struct Parts:
    Text topic
    Text content
    Text user
    Text source
    Text path
    Text timestamp
    bint has_timestamp


cdef void append_escaped(string* out, const char* s, size_t n) noexcept nogil
cdef void append_insight_record(string* out, const Parts* r, int fmt, bint metadata) noexcept nogil
cdef void append_chat_record(string* out, Text user_text, Text assistant_text, int fmt,
                             const Parts* metadata) noexcept nogil
cdef void escape_surrogates(string* out, size_t start) noexcept nogil
