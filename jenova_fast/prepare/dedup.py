"""`--dedup exact|near`: insights whose content says the same thing, grouped; the newest of each is kept.

Judged on the insight's content alone (not its topic, nor the wording the record wraps it in), after
normalizing it: NFKC, case folding, whitespace collapsed to single spaces.

- exact: the same normalized content.
- near: the Jaccard similarity of the word 5-gram shingle sets is at least `threshold`. MinHash signatures
  (128 permutations, Numba kernels in `minhash.py`, pure twins in `minhash_py.py`) and LSH banding find the
  candidate pairs: bands of `rows` values are chosen so that a pair exactly at the threshold shares a band
  with probability >= 99%; each candidate pair is then checked on its exact shingle sets, so no pair below
  the threshold is ever grouped. Groups are the connected components of the near pairs (after exact groups).

The newest member of a group (by its `timestamp` field, then its path; a missing timestamp is oldest) is
kept; the rest are dropped and named in the report.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jenova_fast.prepare import minhash_py
from jenova_fast.prepare._impl import minhash

MODES = ("exact", "near")
DEFAULT_THRESHOLD = 0.8
RECALL_AT_THRESHOLD = 0.99


@dataclass
class DedupResult:
    mode: str
    threshold: float | None
    groups: list[dict[str, object]] = field(default_factory=list)  # {"kept": path, "dropped": [paths]}
    candidates: int = 0  # near: pairs that shared a band and were checked
    bands: int = 0
    rows: int = 0

    @property
    def dropped(self) -> frozenset[str]:
        return frozenset(p for g in self.groups for p in g["dropped"])  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "threshold": self.threshold,
            "bands": self.bands,
            "rows": self.rows,
            "candidate_pairs": self.candidates,
            "groups": len(self.groups),
            "dropped": sum(len(g["dropped"]) for g in self.groups),  # type: ignore[arg-type, misc]
            "members": self.groups,
        }


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def choose_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest chance candidates) for which a pair whose similarity
    is exactly `threshold` still shares a band with probability >= RECALL_AT_THRESHOLD."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= RECALL_AT_THRESHOLD:
            return bands, rows
    return num_perm, 1


def find_duplicates(
    insights: Sequence[tuple[str, str, str]], mode: str, threshold: float = DEFAULT_THRESHOLD, threads: int = 1
) -> DedupResult:
    """`insights`: (path, timestamp or "", content) in output order. Returns the groups with 2+ members.
    `threads`: how many cores the signature kernel may use."""
    if mode not in MODES:
        raise ValueError(f"unknown --dedup mode {mode!r}; one of {', '.join(MODES)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--near-threshold {threshold} must be above 0 and at most 1")
    result = DedupResult(mode, threshold if mode == "near" else None)
    parent = list(range(len(insights)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    texts = [normalize(content) for _, _, content in insights]
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        union(i, first.setdefault(text, i))
    if mode == "near":
        reps = [i for i in range(len(texts)) if first[texts[i]] == i]
        encoded = [texts[i].encode("utf-8", "surrogatepass") for i in reps]
        _near(result, encoded, reps, threshold, union, find, threads)
    members: dict[int, list[int]] = {}
    for i in range(len(insights)):
        members.setdefault(find(i), []).append(i)
    for group in members.values():
        if len(group) < 2:
            continue
        newest = max(group, key=lambda i: (insights[i][1], i))
        result.groups.append(
            {"kept": insights[newest][0], "dropped": [insights[i][0] for i in group if i != newest]}
        )
    result.groups.sort(key=lambda g: str(g["kept"]))
    return result


def _near(result, encoded, reps, threshold, union, find, threads) -> None:  # type: ignore[no-untyped-def]
    k = minhash()
    if k is not minhash_py:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    a, b = minhash_py.permutations()
    result.bands, result.rows = choose_bands(threshold, len(a))
    starts = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in encoded], out=starts[1:])
    sig = k.signatures(b"".join(encoded), starts, a, b)
    keys = k.band_keys(sig, result.bands, result.rows)
    checked: set[tuple[int, int]] = set()
    cache: dict[bytes, int] = {}
    shingle_sets: dict[int, set[int]] = {}

    def shingles(i: int) -> set[int]:
        if i not in shingle_sets:
            shingle_sets[i] = set(minhash_py.shingles(encoded[i], cache))
        return shingle_sets[i]

    for band in range(result.bands):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        shared = np.flatnonzero(ordered[1:] == ordered[:-1])  # p: items p and p + 1 share a bucket
        if not len(shared):
            continue
        for run in np.split(shared, np.flatnonzero(np.diff(shared) != 1) + 1):
            members = sorted(int(x) for x in order[run[0] : run[-1] + 2])
            for x, i in enumerate(members):
                for j in members[x + 1 :]:
                    if (i, j) in checked or find(reps[i]) == find(reps[j]):
                        continue
                    checked.add((i, j))
                    si, sj = shingles(i), shingles(j)
                    if len(si & sj) >= threshold * len(si | sj):
                        union(reps[i], reps[j])
    result.candidates = len(checked)
