"""Query patterns that mean something: tracked n-grams ranked by count x IDF over the user's own
queries, function-word n-grams left out, and candidate themes from n-grams that recur across sessions.

score = count x ln(N / df): N the queries counted (documents), df the queries holding the n-gram (a query
counts once). An n-gram in every query scores 0; one said often, but in few of the user's queries,
scores high. No outside corpus: the user's own history is the background.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from jenova_fast.cpa import config
from jenova_fast.cpa.counters import HeavyHitters
from jenova_fast.cpa.function_words import FunctionWords

RANKINGS = ("score", "count")
_WORDS = re.compile(r"\w+")


def idf(df: int, docs: int) -> float:
    """ln(N / df), df clamped into [1, N] (an upper-bound df may exceed N); 0 before any query."""
    if docs <= 0:
        return 0.0
    return math.log(docs / min(max(df, 1), docs))


@dataclass(frozen=True)
class RankedPattern:
    text: str
    score: float
    count: int
    err: int
    df: int
    df_err: int
    sessions: int

    def as_dict(self) -> dict:
        return asdict(self)


def ranked(hh: HeavyHitters, words: FunctionWords, by: str = "score") -> tuple[list[RankedPattern], int]:
    """Every tracked n-gram not made only of function words, best first; and how many were left out."""
    if by not in RANKINGS:
        raise ValueError(f"rank by {by!r}: expected one of {', '.join(RANKINGS)}")
    docs = hh.docs
    rows: list[RankedPattern] = []
    hidden = 0
    for p in hh.patterns():
        if words.only_function_words(p.text):
            hidden += 1
            continue
        rows.append(RankedPattern(p.text, p.count * idf(p.df, docs), p.count, p.err, p.df, p.df_err, p.sessions))
    if by == "score":
        rows.sort(key=lambda r: (-r.score, -r.count, r.text))
    else:
        rows.sort(key=lambda r: (-r.count, -r.score, r.text))
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

    From the CANDIDATE_POOL best-scoring patterns: those seen in at least CANDIDATE_MIN_SESSIONS sessions
    whose content words name no known theme (a theme's words all among them, or theirs all in a theme).
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
        content = {w for w in r.text.split(" ") if w not in words.words}
        if r.score > 0 and r.sessions >= config.CANDIDATE_MIN_SESSIONS and content \
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
