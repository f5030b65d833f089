"""A slow, obviously-correct reference: the documented word rule restated, and collections.Counter."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise


def is_word(ch: str) -> bool:
    # UTS #18 \w: alphanumerics, marks, connector punctuation
    return ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc", "Me", "Pc")


def document_ngrams(queries: list[str]) -> Iterator[list[str]]:
    """The unigrams and bigrams of each document (a query, or each NUL-separated part of one)."""
    for q in queries:
        for part in q.split("\x00"):
            words, cur = [], ""
            for ch in part.casefold() + " ":
                if is_word(ch):
                    cur += ch
                elif cur:
                    words.append(cur)
                    cur = ""
            yield words + [f"{a} {b}" for a, b in pairwise(words)]


def ngram_counts(queries: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for ngrams in document_ngrams(queries):
        counts.update(ngrams)
    return counts


def document_frequency(queries: list[str]) -> Counter[str]:
    """In how many documents each n-gram occurs (a document counts once)."""
    df: Counter[str] = Counter()
    for ngrams in document_ngrams(queries):
        df.update(set(ngrams))
    return df
