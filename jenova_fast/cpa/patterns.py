"""Query patterns that mean something: tracked n-grams ranked by keyness (how much more often the user
says them than people do), function-word n-grams left out, and candidate themes from the n-grams that
recur across sessions.

keyness = ln(user rate / reference rate): the user's rate is the n-gram's count (its lower bound, count -
err, taken at the low end of its one-sided 95% Poisson interval, so a word said once or twice proves
little) per word counted; the reference rate is how often people say it (`reference.frequency`). The
score weighs it by how evenly it recurs across the user's sessions (a burst in one conversation is not an
interest), the share of queries without it (a word in every question is how the user asks, not what
about) and how recently the user said it:

    score = keyness x recurrence x (1 - df / N) x 2 ** (-queries since / RECENCY_HALF_LIFE_QUERIES)
    recurrence = ln(1 + sessions) / ln(1 + sessions its queries would fall in at random), at most 1

`by="idf"` ranks by count x ln(N / df) over the user's own queries (the ranking before keyness), and
`by="count"` by raw count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from jenova_fast.cpa import config, reference
from jenova_fast.cpa.counters import HeavyHitters
from jenova_fast.cpa.function_words import FunctionWords
from jenova_fast.cpa.kernels import SESSION_ID

RANKINGS = ("keyness", "idf", "count")
_WORDS = re.compile(r"\w+")
_Z95 = 1.6448536269514722  # one-sided 95%


def idf(df: int, docs: int) -> float:
    """ln(N / df), df clamped into [1, N] (an upper-bound df may exceed N); 0 before any query."""
    if docs <= 0:
        return 0.0
    return math.log(docs / min(max(df, 1), docs))


def count_low(count: int) -> float:
    """The low end of a one-sided 95% interval for a Poisson mean, given one observed count (Wilson and
    Hilferty's approximation; positive for every count >= 1, a count below 1 taken as 1)."""
    c = max(count, 1)
    return c * (1.0 - 1.0 / (9.0 * c) - _Z95 / (3.0 * math.sqrt(c))) ** 3


def keyness(count: int, words: int, ref: float) -> float:
    """ln of how many times more often the user says it (count in `words` words, at the low end of its
    interval) than people do (`ref` occurrences per word); negative when the user says it less."""
    return math.log(count_low(count) / (max(words, 1) * ref))


def recurrence(sessions: int, df: int, all_sessions: int) -> float:
    """How well the n-gram recurs: ln(1 + its sessions) / ln(1 + the sessions its df queries would fall
    in at random among all sessions), at most 1. About 1 for a pattern spread over the user's history,
    0.21 for 50 queries in 1 of 30 sessions (a burst in one conversation is not an interest); 1 when
    unknown (no sessions counted yet: a state migrated from schema 2)."""
    if sessions <= 0 or all_sessions <= 1 or df <= 1:
        return 1.0
    expected = all_sessions * -math.expm1(df * math.log1p(-1.0 / all_sessions))
    return min(math.log1p(sessions) / math.log1p(expected), 1.0)


def spread(df: int, docs: int) -> float:
    """The share of the user's queries without the n-gram: a word in every question is how the user asks,
    not what about (a stem's `schaffe` in "wie schaffe ich es"); 1 before any query."""
    return 1.0 - min(max(df, 0), docs) / docs if docs > 0 else 1.0


def recency(last_doc: int, docs: int) -> float:
    """Halves every RECENCY_HALF_LIFE_QUERIES queries since the n-gram was last said (1 when unknown: a
    state migrated from schema 2 before its next observe)."""
    if last_doc < 0:
        return 1.0
    return 2.0 ** (-max(docs - 1 - last_doc, 0) / config.RECENCY_HALF_LIFE_QUERIES)


@dataclass(frozen=True)
class RankedPattern:
    """A listed n-gram: `score` is its keyness score (whatever the ranking), `keyness` the log ratio in it,
    `count_idf` count x IDF over the user's queries, `zipf` how often people say it (log10 per 10^9 words)."""

    text: str
    score: float
    count: int
    err: int
    df: int
    df_err: int
    sessions: int
    keyness: float
    count_idf: float
    zipf: float

    def as_dict(self) -> dict:
        return asdict(self)


def _sort_key(by: str):
    if by == "keyness":
        return lambda r: (-r.score, -r.keyness, -r.count, r.text)  # score 0 (in every query): by keyness
    if by == "idf":
        return lambda r: (-r.count_idf, -r.count, r.text)
    return lambda r: (-r.count, -r.score, r.text)


def ranked(hh: HeavyHitters, words: FunctionWords, by: str = "keyness", *, langs: Sequence[str] = ("en",),
           word_count: int | None = None) -> tuple[list[RankedPattern], int]:
    """Every tracked n-gram not made only of function words, best first; and how many were left out.
    By keyness, a bigram holding a function word is left out too: as rare as its content word and said
    at most as often, it would list each interest again (`i beekeeping`, `about beekeeping`).
    `langs`: the reference languages (the user's); `word_count`: words counted (default: the tracked
    unigrams' total, for a bare HeavyHitters)."""
    if by not in RANKINGS:
        raise ValueError(f"rank by {by!r}: expected one of {', '.join(RANKINGS)}")
    docs, sessions = hh.docs, int(hh.meta[SESSION_ID])
    pats = hh.patterns()
    if word_count is None:
        word_count = sum(p.count for p in pats if " " not in p.text)
    rows: list[RankedPattern] = []
    hidden = 0
    for p in pats:
        if words.only_function_words(p.text) or (by == "keyness" and words.holds_function_words(p.text)):
            hidden += 1
            continue
        ref = reference.frequency(p.text, langs)
        key = keyness(p.count - p.err, word_count, ref)
        score = key * recurrence(p.sessions, p.df, sessions) * spread(p.df, docs) * recency(p.last_doc, docs)
        rows.append(RankedPattern(p.text, score, p.count, p.err, p.df, p.df_err, p.sessions, key,
                                  p.count * idf(p.df, docs), reference.zipf(ref)))
    rows.sort(key=_sort_key(by))
    return rows, hidden


def _names_a_theme(words: set[str], themes: list[set[str]]) -> bool:
    return any(t <= words or words <= t for t in themes)


def _name(members: list[RankedPattern], words: FunctionWords) -> str:
    """The best content bigram, extended by the cluster's other content bigrams that continue it; with
    none, the best n-gram without its leading and trailing function words."""
    bigrams = [m.text.split(" ") for m in members
               if " " in m.text and not any(w in words.words for w in m.text.split(" "))]
    if not bigrams:
        parts = members[0].text.split(" ")
        while len(parts) > 1 and parts[0] in words.words:
            parts.pop(0)
        while len(parts) > 1 and parts[-1] in words.words:
            parts.pop()
        return " ".join(parts)
    chain = list(bigrams[0])
    grown = True
    while grown:
        grown = False
        for a, b in bigrams[1:]:
            if a == chain[-1] and b not in chain:
                chain.append(b)
            elif b == chain[0] and a not in chain:
                chain.insert(0, a)
            else:
                continue
            grown = True
    return " ".join(chain)


def candidate_themes(rows: Iterable[RankedPattern], themes: Iterable[str], words: FunctionWords,
                     top: int) -> list[dict]:
    """Interests the queries show before any insight names them.

    From the CANDIDATE_POOL patterns of the best keyness scores, made only of content words: those seen in
    at least CANDIDATE_MIN_SESSIONS sessions whose words name no known theme (a theme's words all among
    them, or theirs all in a theme).
    Two n-grams sharing a content word, with document frequencies within CANDIDATE_DF_RATIO of each
    other, belong to one candidate (connected components); a candidate sharing a word with a better one
    is left out, a facet of it. A candidate is named by its best content bigram chained with the others
    that continue it."""
    if top <= 0:
        return []
    known = [set(_WORDS.findall(t)) for t in themes]
    known = [t for t in known if t]
    pool: list[tuple[RankedPattern, set[str]]] = []
    for r in sorted(rows, key=lambda r: (-r.score, -r.count, r.text))[: config.CANDIDATE_POOL]:
        content = set(r.text.split(" "))
        if r.score > 0 and r.sessions >= config.CANDIDATE_MIN_SESSIONS and not words.holds_function_words(r.text) \
                and not _names_a_theme(content, known):
            pool.append((r, content))
    parent = list(range(len(pool)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (a, wa) in enumerate(pool):
        for j in range(i):
            b, wb = pool[j]
            if wa & wb and 1 / config.CANDIDATE_DF_RATIO <= a.df / max(b.df, 1) <= config.CANDIDATE_DF_RATIO:
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(pool)):
        groups.setdefault(root(i), []).append(i)
    out: list[dict] = []
    taken: set[str] = set()
    for members in sorted(groups.values()):  # by each group's best member
        content = set().union(*(pool[i][1] for i in members))
        if content & taken:
            continue  # a facet of a better candidate
        taken |= content
        rows_ = [pool[i][0] for i in members]
        out.append({"theme": _name(rows_, words), "score": rows_[0].score, "queries": max(m.df for m in rows_),
                    "sessions": max(m.sessions for m in rows_), "ngrams": [m.text for m in rows_]})
        if len(out) == top:
            break
    return out
