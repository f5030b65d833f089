"""How `state.npz` and `expected.json` here were made: this script, run with the jenova_fast of commit
fab3141 (CPA state schema 2) on the path, `JENOVA_FAST_PURE=1`:

    git archive fab3141 jenova_fast | tar -x -C /tmp/head
    JENOVA_FAST_PURE=1 PYTHONPATH=/tmp/head python tests/cpa/data/schema2/make.py tests/cpa/data/schema2

The members of state.npz are those schema 2 wrote, byte for byte, re-zipped with deflate to keep the
repository small (np.load reads either). expected.json holds what that version's `stats` reported.
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

from jenova_fast.cpa import CPA, state

QUERIES = [
    "How do I feed my sourdough starter?", "sourdough starter smells sour, sourdough again",
    "What is the Sicilian defence?", "Straße STRASSE strasse", "how do I water the tomatoes",
    "water water water", "", "tomato plants and raised garden beds", "a b\x00c d",
]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cpa = CPA(tmp)
        with cpa.batch():
            cpa.observe_topics(["Sourdough", ("Chess openings", 1_700_000_000.0)], when=1_700_100_000.0)
            cpa.observe_queries(QUERIES, match_themes=True)
            cpa.observe_queries(QUERIES[:3], match_themes=False)
            cpa.observe_access("episodic", ["e1", "e2", 3])
            cpa.observe_access("semantic", ["e1", "x"])
            cpa.observe_functions({"f (a.py:1)": (3, 0.5, 1.0)})
        stats = cpa.stats(top=10_000)
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(Path(tmp) / state.STATE_FILE) as src, \
                zipfile.ZipFile(out / state.STATE_FILE, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in src.namelist():
                dst.writestr(name, src.read(name))
    expected = {
        "schema": stats["schema"],
        "queries": stats["queries"]["queries"], "words": stats["queries"]["words"],
        "ngrams": stats["queries"]["ngrams"],
        "ngram_counts": {c["text"]: [c["count"], c["err"]] for c in stats["queries"]["top"]},
        "items": {c["text"]: [c["count"], c["err"]] for c in stats["memory"]["top_items"]},
        "pairs": {c["text"]: [c["count"], c["err"]] for c in stats["memory"]["top_pairs"]},
        "kinds": stats["memory"]["kinds"],
        "themes": {t["theme"]: t["mentions"] for t in stats["themes"]},
        "functions": {f["function"]: f["ncalls"] for f in stats["functions"]},
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                                       encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
