"""Every tunable of the CPA in one place: Numba options and the sizes that bound its memory."""

from __future__ import annotations

from typing import Literal, TypedDict


# Numba: nopython, GIL released so an embedding app's threads keep running; no fastmath (counts must be
# exact and identical to the pure twins); caching is switched on per state dir by `jit_cache`, never at
# import, so compiled kernels land in `.cpa_state/numba_cache/` and nowhere else.
class NumbaOptions(TypedDict, total=False):
    """The keywords of `numba.njit` used here (typed, so the decorators type-check)."""

    nogil: bool
    fastmath: bool
    boundscheck: bool
    inline: Literal["never", "always"]


NUMBA_OPTIONS: NumbaOptions = {"nogil": True, "fastmath": False, "boundscheck": False}

# Query n-grams: count-min sketch (depth x width, conservative update) + top-k heavy hitters.
NGRAM_SKETCH_DEPTH = 4
NGRAM_SKETCH_WIDTH = 1 << 14  # 256 KiB at depth 4: stays in L2; only untracked n-grams land here
NGRAM_TOPK = 4096

# Memory items and co-accessed pairs share the same structure, smaller.
ITEM_SKETCH_DEPTH = 4
ITEM_SKETCH_WIDTH = 1 << 14
ITEM_TOPK = 2048
PAIR_TOPK = 2048

# At most this many ids of one access group form pairs (pairs grow quadratically).
MAX_PAIR_GROUP = 32
# Access-log entries closer than this (seconds) to their group's first entry are co-accessed.
ACCESS_GROUP_SECONDS = 60.0

# Themes: a mention's weight halves every THEME_HALF_LIFE_DAYS.
THEME_HALF_LIFE_DAYS = 30.0

# Sessions: a query more than this many seconds from the previous one starts a new session (so does an
# observe call whose first query has no time).
SESSION_GAP_SECONDS = 30 * 60.0
# Keyness: a query pattern's score halves for every RECENCY_HALF_LIFE_QUERIES queries since it was last
# said (2,000: about two months at 30 questions a day).
RECENCY_HALF_LIFE_QUERIES = 2000.0
# Candidate themes: among the CANDIDATE_POOL patterns with the best scores, those seen in at least
# CANDIDATE_MIN_SESSIONS sessions that name no known theme, n-grams sharing a word (with document
# frequencies within CANDIDATE_DF_RATIO of each other) grouped into one candidate.
CANDIDATE_POOL = 60
CANDIDATE_MIN_SESSIONS = 2
CANDIDATE_DF_RATIO = 2.0

# Function words: a built-in language's list applies (besides English, always) once the words only it
# holds make up this share of the words counted.
FUNCTION_WORD_LANGUAGE_SHARE = 0.01

# Hot functions kept (by cumulative time) after each profile merge.
MAX_FUNCTIONS = 4096

# Queries per kernel call: bounds the UTF-8 buffer and the n-gram arrays of a batch (~1 MB and ~25 MB of
# address space, two batches at a time); small enough that tokenizing the next overlaps counting this one.
QUERY_BATCH = 16384
