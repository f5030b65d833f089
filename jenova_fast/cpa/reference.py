"""How often people at large say a word: the reference frequencies that keyness compares a user with.

Tables in `reference_data/` (one per built-in language, derived from wordfreq, CC BY-SA 4.0: see the
LICENSE there) hold every word said at least once per million words (Zipf >= 3.0). A word a table does not
hold is rare: it gets RARE_ZIPF, half a step under the cutoff, so that a pair of common words (whose
frequency is at least half the cutoff's, see `frequency`) is never rarer than one rare word. Loaded once
per process and language, from package data: no network, no extra.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from importlib import resources

CUTOFF_ZIPF = 3.0
RARE_ZIPF = 2.5
RARE = 10.0 ** (RARE_ZIPF - 9.0)  # occurrences per word
LANGUAGES = ("en", "de", "fr", "es")


class ReferenceTableError(RuntimeError):
    """The package's reference table is missing or damaged (a broken install)."""


@functools.cache
def table(lang: str) -> dict[str, float]:
    """word -> occurrences per word, for one language (read once per process)."""
    if lang not in LANGUAGES:
        raise ValueError(f"no reference table for language {lang!r}; there are: {', '.join(LANGUAGES)}")
    name = f"{lang}.txt"
    try:
        text = resources.files(__package__).joinpath("reference_data", name).read_text(encoding="utf-8")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                zipf, words = line.split("\t")
                out.update(dict.fromkeys(words.split(" "), 10.0 ** (int(zipf) / 100 - 9.0)))
    except (OSError, ValueError) as exc:
        raise ReferenceTableError(f"the CPA's reference table jenova_fast/cpa/reference_data/{name} is missing or "
                             f"damaged ({exc}); reinstall jenova-fast (pip install --force-reinstall "
                             "jenova-fast)") from exc
    return out


def word_frequency(word: str, langs: Iterable[str]) -> float:
    """The word's occurrences per word in the most frequent of `langs` that holds it; RARE if none does."""
    return max((table(lang).get(word, RARE) for lang in langs), default=RARE)


def frequency(ngram: str, langs: Iterable[str]) -> float:
    """An n-gram's reference frequency: its words' combined as wordfreq combines the tokens of a phrase,
    1/f = sum of 1/f_i (about its rarest word's; words joined by single spaces)."""
    langs = tuple(langs)
    return 1.0 / sum(1.0 / word_frequency(w, langs) for w in ngram.split(" "))


def zipf(freq: float) -> float:
    """Occurrences per word on the Zipf scale: log10 of occurrences per billion words."""
    return math.log10(freq) + 9.0
