"""`stats`: everything counted as JSON-able data, a readable table of it, and an optional PNG bar chart (the
`plot` extra)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from jenova_fast import _fs
from jenova_fast.cpa import counters, jit_cache, patterns, state
from jenova_fast.cpa.kernels import SESSION_ID

if TYPE_CHECKING:
    from jenova_fast.cpa.accelerator import CPA


def stats(cpa: CPA, top: int = 20, *, by: str = "keyness", stopwords: str | os.PathLike[str] | None = None) -> dict:
    """Everything counted, as plain JSON-able data. Query patterns are ranked `by` "keyness" (how much
    more the user says them than people do), "idf" (count x IDF over the user's queries) or "count";
    n-grams made only of function words are never listed. Candidate themes come from the keyness score."""
    st = cpa.state
    rows, words, hidden, langs = cpa.ranked_patterns(by, stopwords)
    candidates = patterns.candidate_themes(rows, st.themes, words, top)
    weights = cpa.theme_weights()
    themes = sorted(st.themes.items(), key=lambda kv: (-weights[kv[0]], kv[0]))[:top]
    funcs = sorted(st.functions.items(), key=lambda kv: (-kv[1][2], kv[0]))[:top]
    history = jit_cache.read_history(cpa.state_dir)[0] if cpa.state_dir is not None else []

    def counted(hh: counters.HeavyHitters) -> list[dict]:
        return [c._asdict() for c in hh.top(top)]

    return {
        "state_dir": None if cpa.state_dir is None else str(cpa.state_dir),
        "schema": state.SCHEMA,
        "generation": st.generation,
        "queries": {"queries": st.queries, "words": st.words, "ngrams": st.ngrams.total,
                    "tracked": st.ngrams.used, "documents": st.ngrams.docs,
                    "sessions": int(st.ngrams.meta[SESSION_ID]), "ranked_by": by,
                    "function_words": {**words.describe(), "hidden": hidden},
                    "reference_languages": list(langs),
                    "top": [r.as_dict() for r in rows[:top]]},
        "candidate_themes": candidates,
        "themes": [{"theme": k, "weight": round(weights[k], 6), "mentions": int(c), "last_seen": t}
                   for k, (_, t, c) in themes],
        "memory": {"kinds": dict(sorted(st.kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
                   "accesses": st.items.total, "top_items": counted(st.items),
                   "top_pairs": counted(st.pairs)},
        "functions": [{"function": k, "ncalls": int(n), "tottime": tt, "cumtime": ct}
                      for k, (n, tt, ct) in funcs],
        "compilation": {
            "records": len(history),
            "cache_hits": sum(r.get("cache") == "hit" for r in history),
            "cache_misses": sum(r.get("cache") == "miss" for r in history),
            "seconds": round(sum(float(r.get("seconds", 0.0)) for r in history), 6),
            "last": history[-top:] if top else [],
        },
    }


class PlotUnavailable(Exception):
    pass


def _table(title: str, header: tuple[str, ...], rows: list[tuple], left: frozenset[int] = frozenset({0})) -> list[str]:
    if not rows:
        return [f"{title}: none yet", ""]
    cells = [tuple(map(str, header))] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    return [title, fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:]), ""]


def _count(c: dict) -> str:
    return str(c["count"]) if not c["err"] else f"{c['count']} (±{c['err']})"


def _df(c: dict) -> str:
    return str(c["df"]) if not c["df_err"] else f"{c['df']} (±{c['df_err']})"


def _times(keyness: float) -> str:
    """exp(keyness): how many times more often than people (at the low end of its interval)."""
    times = math.exp(keyness)
    return f"{times:.3g}" if times < 1e5 else f"{times:.1e}"


def format_stats(stats: dict) -> str:
    q, m = stats["queries"], stats["memory"]
    comp = stats["compilation"]
    fw = q["function_words"]
    source = f"built-in ({', '.join(fw['languages'])})" if fw["source"] == "built-in" else fw["source"]
    lines = [f"CPA state: {stats['state_dir'] or '(in memory)'}  (schema {stats['schema']}, "
             f"generation {stats['generation']})",
             f"queries {q['queries']} in {q['sessions']} session(s), words {q['words']}, n-grams {q['ngrams']} "
             f"({q['tracked']} tracked; {fw['hidden']} made only of function words, {source}, not listed)", ""]
    by = {"keyness": "keyness: how much more you say it than people do", "idf": "count x IDF over your queries",
          "count": "count"}[q["ranked_by"]]
    lines += _table(f"query patterns (by {by})", ("n-gram", "score", "x people", "zipf", "count x IDF", "count",
                                                   "queries", "sessions"),
                    [(c["text"], f"{c['score']:.1f}", _times(c["keyness"]), f"{c['zipf']:.1f}",
                      f"{c['count_idf']:.1f}", _count(c), _df(c), c["sessions"]) for c in q["top"]])
    lines += _table("candidate themes (recurring in queries, no insight yet)", ("theme", "score", "queries",
                                                                                 "sessions", "n-grams"),
                    [(t["theme"], f"{t['score']:.1f}", t["queries"], t["sessions"], ", ".join(t["ngrams"]))
                     for t in stats["candidate_themes"]], left=frozenset({0, 4}))
    lines += _table("themes (insight topics)", ("theme", "weight", "mentions"),
                    [(t["theme"], f"{t['weight']:.4g}", t["mentions"]) for t in stats["themes"]])
    lines += _table("memory kinds", ("kind", "accesses"), list(m["kinds"].items()))
    lines += _table("memory items", ("item", "accesses"), [(c["text"], _count(c)) for c in m["top_items"]])
    lines += _table("co-accessed pairs", ("pair", "count"), [(c["text"], _count(c)) for c in m["top_pairs"]])
    lines += _table("hot functions", ("function", "calls", "tottime s", "cumtime s"),
                    [(f["function"], f["ncalls"], f"{f['tottime']:.4f}", f"{f['cumtime']:.4f}")
                     for f in stats["functions"]])
    lines.append(f"compilation: {comp['records']} record(s), {comp['cache_hits']} cache hit(s), "
                 f"{comp['cache_misses']} miss(es), {comp['seconds']:.2f}s in total")
    return "\n".join(lines)


# each ranking's value in the chart: (pattern field, label)
_PLOTTED = {"keyness": ("score", "keyness score"), "idf": ("count_idf", "count x IDF"), "count": ("count", "count")}


def plot_stats(stats: dict, path: os.PathLike[str] | str) -> Path:
    """Bar charts of the top query patterns (by the value they are ranked by), themes and memory items,
    written atomically as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib; install it with: pip install 'jenova-fast[plot]'") from exc
    field, label = _PLOTTED[stats["queries"]["ranked_by"]]
    panels = [
        (f"query patterns ({label})", [(c["text"], c[field]) for c in stats["queries"]["top"]]),
        ("themes (decayed weight)", [(t["theme"], t["weight"]) for t in stats["themes"]]),
        ("memory items", [(c["text"], c["count"]) for c in stats["memory"]["top_items"]]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.35 * max(
        [len(p[1]) for p in panels] + [8]) + 1.5))
    for ax, (title, rows) in zip(axes, panels, strict=True):
        rows = rows[::-1]
        ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#4c72b0")
        ax.set_title(title)
        if not rows:
            ax.text(0.5, 0.5, "none yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out = Path(path)
    _fs.write_bytes_via(out, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return out
