"""Case-folding and word-character tables over all code points, for the n-gram kernel.

Built once from `str.casefold` and `kernels_py.is_word_char` (the pure twin's own rules, so both agree by
construction) and cached as `.npz` in the state dir, keyed by the Unicode database version.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jenova_fast.cpa import state
from jenova_fast.cpa.kernels_py import is_word_char

log = logging.getLogger(__name__)

N_CODE_POINTS = 0x110000


class UnicodeTables(NamedTuple):
    fold_off: np.ndarray  # int32[N+1]: folded code points of cp are fold_cp[fold_off[cp]:fold_off[cp+1]]
    fold_cp: np.ndarray  # uint32
    is_word: np.ndarray  # uint8[N], indexed by a folded code point


_tables: UnicodeTables | None = None


def _build() -> UnicodeTables:
    fold_off = np.empty(N_CODE_POINTS + 1, dtype=np.int32)
    folded: list[int] = []
    for cp in range(N_CODE_POINTS):
        fold_off[cp] = len(folded)
        folded.extend(map(ord, chr(cp).casefold()))
    fold_off[N_CODE_POINTS] = len(folded)
    is_word = np.fromiter((is_word_char(chr(cp)) for cp in range(N_CODE_POINTS)), dtype=np.uint8,
                          count=N_CODE_POINTS)
    fold_cp = np.array(folded, dtype=np.uint32)
    # the kernel classifies a character by its first folded code point: all of them must agree
    for cp in np.flatnonzero(np.diff(fold_off) > 1).tolist():
        classes = is_word[fold_cp[fold_off[cp]: fold_off[cp + 1]]]
        if classes.min() != classes.max():
            raise RuntimeError(f"U+{cp:04X} folds to word and non-word characters; the CPA tokenizer "
                               "needs a per-code-point flush for this Unicode version")
    return UnicodeTables(fold_off, fold_cp, is_word)


def tables(cache_dir: Path | None = None) -> UnicodeTables:
    """The tables, from memory, from `cache_dir`, or built (about a second) and saved there."""
    global _tables
    if _tables is not None:
        return _tables
    path = None if cache_dir is None else Path(cache_dir) / f"unicode-{unicodedata.unidata_version}.npz"
    if path is not None and path.exists():
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                loaded = UnicodeTables(z["fold_off"], z["fold_cp"], z["is_word"])
            if loaded.fold_off.shape == (N_CODE_POINTS + 1,) and loaded.is_word.shape == (N_CODE_POINTS,):
                _tables = loaded
                return _tables
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s is unreadable (%s); rebuilding it", path, exc)
    _tables = _build()
    if path is not None:
        state.write_npz(path, _tables._asdict())
    return _tables
