"""Write the CPA's reference frequency tables (en.txt, de.txt, fr.txt, es.txt beside this script) from
wordfreq's 'large' lists: `pip install wordfreq==3.1.1 && python jenova_fast/cpa/reference_data/make.py`.

Each wordfreq entry is split into words as the CPA's tokenizer splits a query (case-folded runs of word
characters: "don't" is `don` + `t`), and a word's frequency is the sum over the entries holding it.
Words with digits are left out (wordfreq replaces digits with 0s). Kept: words said at least once per
million words (Zipf >= 3.0, the floor of wordfreq's 'small' lists), at wordfreq's own precision (0.01
Zipf). A line is `<Zipf x 100><TAB><the words of that frequency, space-separated>`, most frequent first.

The tables are wordfreq data, so they are CC BY-SA 4.0 (LICENSE beside them), not MIT like the code.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

LANGUAGES = ("en", "de", "fr", "es")
CUTOFF_ZIPF = 3.0
HERE = Path(__file__).resolve().parent


def table(lang: str) -> dict[int, list[str]]:
    import wordfreq

    from jenova_fast.cpa.kernels_py import words

    freq: dict[str, float] = defaultdict(float)
    for entry, f in wordfreq.get_frequency_dict(lang, wordlist="large").items():
        for w in words(entry):
            if not any(ch.isdigit() for ch in w):
                freq[w] += f
    lines: dict[int, list[str]] = defaultdict(list)
    for w, f in freq.items():
        zipf = round(100 * (math.log10(f) + 9))
        if zipf >= 100 * CUTOFF_ZIPF:
            lines[zipf].append(w)
    return lines


def main() -> int:
    import wordfreq

    version = getattr(wordfreq, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("wordfreq")
    for lang in LANGUAGES:
        lines = table(lang)
        head = [f"# CPA reference frequencies, language {lang}: words said at least once per million words, as",
                f"# Zipf x 100 (log10 of occurrences per billion words, x 100). Derived from wordfreq {version}",
                "# (Robyn Speer; data CC BY-SA 4.0) by jenova_fast/cpa/reference_data/make.py: entries split",
                "# into the CPA's words and summed, digits dropped, cut at Zipf 3.0. Licence: CC BY-SA 4.0,",
                "# see LICENSE in this folder."]
        body = [f"{z}\t{' '.join(sorted(ws))}" for z, ws in sorted(lines.items(), reverse=True)]
        (HERE / f"{lang}.txt").write_text("\n".join(head + body) + "\n", encoding="utf-8")
        print(f"{lang}: {sum(map(len, lines.values()))} words, {len(body)} frequencies", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[2]))
    raise SystemExit(main())
