"""A slow, obviously-correct reference: the documented word rule restated, and collections.Counter."""

from __future__ import annotations

import unicodedata
from collections import Counter
from itertools import pairwise


def is_word(ch: str) -> bool:
    # UTS #18 \w: alphanumerics, marks, connector punctuation
    return ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc", "Me", "Pc")


def ngram_counts(queries: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for q in queries:
        for part in q.split("\x00"):
            words, cur = [], ""
            for ch in part.casefold() + " ":
                if is_word(ch):
                    cur += ch
                elif cur:
                    words.append(cur)
                    cur = ""
            counts.update(words)
            counts.update(f"{a} {b}" for a, b in pairwise(words))
    return counts
