"""Numba kernels: UTF-8 n-gram hashing, count-min sketch, top-k heavy hitters with document frequencies.

Each has a pure-Python twin in `kernels_py.py` with identical results. Kernels are lazy dispatchers;
`jit_cache` compiles them against SIGNATURES with the on-disk cache pointed into the state dir.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from jenova_fast.cpa.config import NUMBA_OPTIONS, NumbaOptions

# hot helpers are inlined in Numba IR: a call would pass ~10 arrays (and their refcounts) per word
INLINED: NumbaOptions = {**NUMBA_OPTIONS, "inline": "always"}  # only for helpers of scalars

_U = np.uint64
FNV_OFFSET = _U(0xCBF29CE484222325)
FNV_PRIME = _U(0x100000001B3)
_M1 = _U(0xBF58476D1CE4E5B9)
_M2 = _U(0x94D049BB133111EB)
_GOLDEN = _U(0x9E3779B97F4A7C15)
_S27, _S30, _S31, _S32 = _U(27), _U(30), _U(31), _U(32)
_LOW32 = _U(0xFFFFFFFF)
_ONE = _U(1)

# fields of a slot, one 64-byte row of the int64 `slots` table [k, SLOT_FIELDS] of a top-k: count,
# document frequency, the last document that counted and sessions seen while tracked (a hit touches one
# cache line), the overcount bounds of count and document frequency, and the byte span of the text that
# stands for the item (scratch). The heap's keys live apart, in `keys` [k]: sifting reads 8 per line.
COUNT, DF, LAST_DOC, SESS, ERR, DF_ERR, REP_START, REP_END = range(8)
SLOT_FIELDS = 8
# entries of its `meta` vector: slots used, ever turned an item away, occurrences, documents counted, the
# current session's id (0: none yet) and its first document
USED, OVERFLOWED, TOTAL, DOCS, SESSION_ID, SESSION_START = range(6)
META_SIZE = 6

_BYTES = types.Array(types.uint8, 1, "C", readonly=True)  # np.frombuffer over str.encode() output
_I64 = types.int64[::1]
# sketch, hashes, slots, keys, heap, index, meta
_TOPK = (types.uint32[:, ::1], types.uint64[::1], types.int64[:, ::1], _I64, _I64, _I64, _I64)
# explicit signatures, compiled (or loaded from the state dir's cache) ahead of use
SIGNATURES = {
    "tokenize_queries": types.UniTuple(types.int64, 3)(_BYTES, types.int32[::1], types.uint32[::1], types.uint8[::1],
                                                        types.uint64[::1], _I64, _I64, _I64),
    "hash_segments": types.int64(_BYTES, types.uint64[::1], _I64, _I64),
    "count_hashes": types.void(types.uint64[::1], _I64, _I64, _I64, _I64, *_TOPK),
}


@njit(**INLINED)
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**INLINED)
def pair_hash(a, b):
    return mix64((a * _GOLDEN) ^ b)


@njit(**INLINED)
def _fnv_byte(h, b):
    return (h ^ _U(b)) * FNV_PRIME


@njit(**INLINED)
def _fnv_code_point(h, cp):
    """Feed one code point as its UTF-8 bytes."""
    if cp < 0x80:
        return _fnv_byte(h, cp)
    if cp < 0x800:
        h = _fnv_byte(h, 0xC0 | (cp >> 6))
    elif cp < 0x10000:
        h = _fnv_byte(h, 0xE0 | (cp >> 12))
        h = _fnv_byte(h, 0x80 | ((cp >> 6) & 0x3F))
    else:
        h = _fnv_byte(h, 0xF0 | (cp >> 18))
        h = _fnv_byte(h, 0x80 | ((cp >> 12) & 0x3F))
        h = _fnv_byte(h, 0x80 | ((cp >> 6) & 0x3F))
    return _fnv_byte(h, 0x80 | (cp & 0x3F))


# The top-k's min-heap is lazy: it orders slots by their key (keys[s]), a count that may lag behind COUNT
# (increments never touch the heap). A key <= its COUNT always, so the root's key bounds the minimum from
# below; it is brought up to date only when a newcomer's estimate beats it.
@njit(**NUMBA_OPTIONS)
def _sift_up(heap, keys, pos):
    s = heap[pos]
    c = keys[s]
    while pos > 0:
        parent = (pos - 1) >> 1
        p = heap[parent]
        if keys[p] <= c:
            break
        heap[pos] = p
        pos = parent
    heap[pos] = s


@njit(**NUMBA_OPTIONS)
def _sift_down(heap, keys, pos, n):
    s = heap[pos]
    c = keys[s]
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and keys[heap[child + 1]] < keys[heap[child]]:
            child += 1
        q = heap[child]
        if keys[q] >= c:
            break
        heap[pos] = q
        pos = child
    heap[pos] = s


@njit(**NUMBA_OPTIONS)
def _true_min_slot(heap, keys, slots, n):
    """Refresh stale keys at the root until the root holds the true minimum count."""
    while True:
        s = heap[0]
        if keys[s] == slots[s, COUNT]:
            return s
        keys[s] = slots[s, COUNT]
        _sift_down(heap, keys, 0, n)


@njit(**NUMBA_OPTIONS)
def _find(index, hashes, h):
    """Linear probing: (slot, position) or (-1, free position)."""
    mask = index.size - 1
    i = np.int64(h & _U(mask))
    while True:
        s = index[i]
        if s < 0 or hashes[s] == h:
            return s, i
        i = (i + 1) & mask


@njit(**NUMBA_OPTIONS)
def _remove(index, hashes, i):
    """Delete position i, shifting later entries of the probe run back (no tombstones)."""
    mask = index.size - 1
    index[i] = -1
    j = i
    while True:
        j = (j + 1) & mask
        s = index[j]
        if s < 0:
            return
        home = np.int64(hashes[s] & _U(mask))
        if (i <= j and (i < home <= j)) or (i > j and (home > i or home <= j)):
            continue
        index[i] = s
        index[j] = -1
        i = j


@njit(**NUMBA_OPTIONS)
def _sketch_raise(sketch, h, value):
    """Make the sketch's estimate for h at least `value` (an evicted item keeps its bound)."""
    depth, width = sketch.shape
    mask = _U(width - 1)
    h1 = h & _LOW32
    h2 = (h >> _S32) | _ONE
    for r in range(depth):
        i = np.int64((h1 + _U(r) * h2) & mask)
        if np.int64(sketch[r, i]) < value:
            sketch[r, i] = value


@njit(**NUMBA_OPTIONS)
def _topk_miss(h, i, est, start, end, doc, sketch, hashes, slots, keys, heap, index, meta):
    """An occurrence of an untracked h (i: its free index position; est: its sketch estimate after this
    occurrence) in document `doc`. The sketch sees only untracked items (and an
    evicted item's count), so a slot's count or the sketch's estimate is always an upper bound.

    Document frequency: at most est - 1 earlier occurrences went untracked, so at most est - 1 earlier
    documents held it; DF starts at est (an upper bound) with DF_ERR = est - 1, exactly like the count.
    Sessions count only while tracked (a lower bound)."""
    n = meta[USED]
    if n < hashes.size:
        s = n
        meta[USED] = n + 1
        hashes[s] = h
        index[i] = s
        if meta[OVERFLOWED]:
            slots[s, COUNT] = est
            slots[s, ERR] = est - 1
        else:  # nothing was ever turned away, so this is the first occurrence: exact
            slots[s, COUNT] = 1
            slots[s, ERR] = 0
        keys[s] = slots[s, COUNT]
        slots[s, DF] = slots[s, COUNT]
        slots[s, DF_ERR] = slots[s, ERR]
        heap[n] = s
        _sift_up(heap, keys, n)
    else:
        meta[OVERFLOWED] = 1
        if est <= keys[heap[0]]:
            return
        s = _true_min_slot(heap, keys, slots, n)
        if est <= slots[s, COUNT]:
            return
        _sketch_raise(sketch, hashes[s], slots[s, COUNT])
        _, j = _find(index, hashes, hashes[s])
        _remove(index, hashes, j)
        hashes[s] = h
        _, i = _find(index, hashes, h)
        index[i] = s
        slots[s, COUNT] = est
        slots[s, ERR] = est - 1
        keys[s] = est
        slots[s, DF] = est
        slots[s, DF_ERR] = est - 1
        _sift_down(heap, keys, 0, n)
    slots[s, REP_START] = start
    slots[s, REP_END] = end
    slots[s, LAST_DOC] = doc
    slots[s, SESS] = 1


@njit(**NUMBA_OPTIONS)
def tokenize_queries(buf, fold_off, fold_cp, is_word, out_hash, out_start, out_end, out_doc_end):
    """Case-fold and tokenize NUL-separated UTF-8 queries: each word's hash, then its bigram's, in order,
    with the byte span that stands for it. Returns (n-grams written, words, documents).

    A word is a maximal run of characters whose case folding is word characters (is_word); NUL ends a
    query (no bigram spans it), which is one document: out_doc_end[d] is the number of n-grams written
    up to the end of document d. Words are never adjacent, so out_* need buf.size + 1 entries at most.
    Counting is a separate kernel (count_hashes), so the next batch is tokenized while this one counts.
    """
    # ASCII byte -> its folded byte when that is a word character, else 0 (the hot path: no table walk)
    ascii_word = np.zeros(128, dtype=np.int64)
    for c in range(128):
        lo = c + 32 if 65 <= c <= 90 else c
        if is_word[lo]:
            ascii_word[c] = lo
    n = buf.size
    words = 0
    docs = 0
    m = 0  # n-grams written
    h = FNV_OFFSET
    in_word = False
    start = 0
    end = 0
    have_prev = False
    prev_h = _U(0)
    prev_start = 0
    i = 0
    while i <= n:
        width = 1
        boundary = i == n
        if not boundary:
            b = np.int64(buf[i])
            if b < 0x80:
                c = ascii_word[b]
                if c:
                    if not in_word:
                        in_word = True
                        start = i
                        h = FNV_OFFSET
                    h = _fnv_byte(h, c)
                    i += 1
                    end = i
                    continue
                boundary = b == 0
            else:
                if b < 0xE0:
                    cp = ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F)
                    width = 2
                elif b < 0xF0:
                    cp = ((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F)
                    width = 3
                else:
                    cp = (((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
                          | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F))
                    width = 4
                k0 = np.int64(fold_off[cp])
                k1 = np.int64(fold_off[cp + 1])
                if is_word[fold_cp[k0]]:  # a character folds to all-word or all-non-word (checked at build)
                    if not in_word:
                        in_word = True
                        start = i
                        h = FNV_OFFSET
                    for k in range(k0, k1):
                        h = _fnv_code_point(h, np.int64(fold_cp[k]))
                    i += width
                    end = i
                    continue
        if in_word:  # a word ended: write it and its bigram
            in_word = False
            words += 1
            uh = mix64(h)
            out_hash[m] = uh
            out_start[m] = start
            out_end[m] = end
            m += 1
            if have_prev:
                out_hash[m] = pair_hash(prev_h, uh)
                out_start[m] = prev_start
                out_end[m] = end
                m += 1
            have_prev = True
            prev_h = uh
            prev_start = start
        if boundary:
            have_prev = False
            out_doc_end[docs] = m
            docs += 1
        i += width
    return m, words, docs


@njit(**NUMBA_OPTIONS)
def hash_segments(buf, out_hash, out_start, out_end):
    """Hash each NUL-separated segment's raw bytes; returns the number of segments."""
    n = buf.size
    k = 0
    h = FNV_OFFSET
    start = 0
    for i in range(n + 1):
        if i == n or buf[i] == 0:
            out_hash[k] = mix64(h)
            out_start[k] = start
            out_end[k] = i
            k += 1
            h = FNV_OFFSET
            start = i + 1
        else:
            h = _fnv_byte(h, np.int64(buf[i]))
    return k


@njit(**NUMBA_OPTIONS)
def count_hashes(items, starts, ends, doc_ends, doc_session, sketch, hashes, slots, keys, heap, index, meta):
    """One occurrence of each item, in order; (starts, ends) is the span that stands for it. Items
    doc_ends[d-1]:doc_ends[d] form document d, of session doc_session[d] (ids never decrease); documents
    are numbered on from meta[DOCS].

    A tracked item counts in its slot, and in its document frequency the first time in a document (and
    in its sessions when its last document came before the session's first); an untracked one updates the
    sketch (conservative update) and enters the top-k when its estimate beats the minimum. The hot path
    is written out here rather than called: passing the arrays to a helper per item costs more than the
    counting."""
    mask = index.size - 1
    depth = sketch.shape[0]
    smask = _U(sketch.shape[1] - 1)
    doc = meta[DOCS]
    first = 0
    for d in range(doc_ends.size):
        if doc_session[d] != meta[SESSION_ID]:
            meta[SESSION_ID] = doc_session[d]
            meta[SESSION_START] = doc
        session_start = meta[SESSION_START]
        stop = doc_ends[d]
        meta[TOTAL] += stop - first  # per document, not per item: a store the loop need not repeat
        for k in range(first, stop):
            hx = items[k]
            p = np.int64(hx & _U(mask))
            s = index[p]
            while s >= 0 and hashes[s] != hx:
                p = (p + 1) & mask
                s = index[p]
            if s >= 0:
                slots[s, COUNT] += 1
                last = slots[s, LAST_DOC]
                if last != doc:  # a query counts once
                    slots[s, LAST_DOC] = doc
                    slots[s, DF] += 1
                    if last < session_start:
                        slots[s, SESS] += 1
                continue
            h1 = hx & _LOW32
            h2 = (hx >> _S32) | _ONE
            est = np.int64(sketch[0, np.int64(h1 & smask)])
            for r in range(1, depth):
                est = min(est, np.int64(sketch[r, np.int64((h1 + _U(r) * h2) & smask)]))
            est += 1
            for r in range(depth):
                col = np.int64((h1 + _U(r) * h2) & smask)
                if np.int64(sketch[r, col]) < est:
                    sketch[r, col] = est
            if meta[USED] < hashes.size or est > keys[heap[0]]:
                _topk_miss(hx, p, est, starts[k], ends[k], doc, sketch, hashes, slots, keys, heap, index, meta)
            else:  # turned away without a call: what _topk_miss would do
                meta[OVERFLOWED] = 1
        first = stop
        doc += 1
    meta[DOCS] = doc
