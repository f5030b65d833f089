"""Cognitive Process Accelerator: what the user asks, talks about, recalls and runs, counted by Numba
kernels in bounded memory and kept in `~/.jenova-ai/users/<user>/.cpa_state/` across sessions and
fine-tunes. `JENOVA_FAST_PURE=1` selects the pure-Python twins."""

from __future__ import annotations

from jenova_fast.cpa.accelerator import CPA
from jenova_fast.cpa.counters import Counted
from jenova_fast.cpa.function_words import StopwordsError
from jenova_fast.cpa.observe import ObserveError, ObserveReport
from jenova_fast.cpa.patterns import RankedPattern
from jenova_fast.cpa.state import StateError, default_state_dir
from jenova_fast.cpa.themes import theme_key, topic_caps

__all__ = ["CPA", "Counted", "ObserveError", "ObserveReport", "RankedPattern", "StateError", "StopwordsError",
           "default_state_dir", "theme_key", "topic_caps"]
