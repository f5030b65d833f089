"""Theme arithmetic: how topics are keyed, how their weight decays, and the caps that --balance-topics
derives from the weights."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from math import ceil
from pathlib import Path
from statistics import median_low

from jenova_fast.cpa import config, state


def theme_key(topic: str) -> str:
    """Themes are compared case-folded with whitespace collapsed; an empty topic is 'general'."""
    return " ".join(topic.casefold().split()) or "general"


def decayed_weights(themes: Mapping[str, list[float]], now: float | None = None) -> dict[str, float]:
    now = time.time() if now is None else now
    half_life = config.THEME_HALF_LIFE_DAYS * 86400.0
    return {k: w * 2.0 ** (-max(0.0, now - t) / half_life) for k, (w, t, _) in themes.items()}


def topic_caps(state_dir: str | os.PathLike[str] | None, topic_counts: Mapping[str, int]) -> dict[str, int]:
    """How many records of each store topic to keep, from the CPA's decayed theme weights.

    Rule: each topic t has a weight w_t (its theme weight decayed to now; topics are matched
    case-folded with whitespace collapsed) and a record density c_t / w_t. A topic may keep at most
    ceil(D * w_t) records, D being the median density over the store's topics, so no topic is
    over-represented relative to the typical topic, and a runaway topic is trimmed to its weight.
    - Topics the CPA never saw get the smallest weight among the store's seen topics (or, when it saw
      none of them, all weigh the same and the caps come out even at the median count).
    - An empty state (no themes, or no state at all) keeps everything: without evidence there is
      nothing to balance against.
    Every topic keeps at least one record when it has any. `state_dir=None` is the current user's.
    """
    counts = {t: int(n) for t, n in topic_counts.items()}
    path = (state.default_state_dir() if state_dir is None else Path(state_dir)) / state.STATE_FILE
    loaded, _ = state.load_or_fresh(path)  # a damaged state is moved aside (warned) and counts as empty
    weights = decayed_weights(loaded.themes)
    if not weights:
        return dict(counts)
    seen = {t: weights[theme_key(t)] for t in counts if weights.get(theme_key(t), 0.0) > 0.0}
    floor = min(seen.values()) if seen else 1.0
    w = {t: seen.get(t, floor) for t in counts}
    live = [t for t, n in counts.items() if n > 0]
    if not live:
        return dict(counts)
    density = median_low(counts[t] / w[t] for t in live)
    return {t: min(n, max(1 if n else 0, ceil(density * w[t] - 1e-9))) for t, n in counts.items()}
