from libcpp.string cimport string

cdef void append_escaped(string* out, const char* s, size_t n) noexcept nogil
cdef void append_insight_record(string* out, const char* topic, size_t topic_len, const char* content,
                                size_t content_len, const char* user, size_t user_len) noexcept nogil
cdef void escape_surrogates(string* out, size_t start) noexcept nogil
