"""Kernels vs pure twins vs a Counter reference: exact where the structure is exact, bounded elsewhere."""

from __future__ import annotations

import json
import os
import random
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jenova_fast.cpa import counters, kernels_py, unicode_tables
from jenova_fast.cpa import counting as counting_native
from jenova_fast.cpa._impl import counting
from jenova_fast.cpa.kernels import COUNT, ERR, REP_START
from tests.cpa.conftest import run_python
from tests.cpa.reference import document_frequency, document_ngrams, is_word, ngram_counts

QUERIES = [
    "Hello, World! hello WORLD", "Straße STRASSE strasse", "ΣΊΣΥΦΟΣ Σίσυφος", "हिन्दी भाषा सीखना",
    "snake_case and ǰ", "emoji 😀 split😀words", "a b\x00c d", "lone \ud800 surrogate", "", "   ",
    "日本語の テキスト", "don't stop", "x" * 300,
]


def _random_queries(seed: int, n: int, vocab: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)] + ["Über", "naïve", "ÉCOLE", "école", "ß"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def _count(impl_pure: bool, queries: list[str], k: int = 4096, width: int = 1 << 12):
    os.environ["JENOVA_FAST_PURE"] = "1" if impl_pure else "0"
    hh = counters.HeavyHitters(k, 4, width)
    words = counting().count_queries(hh, queries)
    return words, hh


def test_exact_regime_equals_counter(cpa_impl: str) -> None:
    queries = QUERIES + _random_queries(1, 300, 50)
    hh = counters.HeavyHitters(4096, 4, 1 << 12)
    counting().count_queries(hh, queries)
    ref = ngram_counts(queries)
    assert {c.text: c.count for c in hh.top()} == dict(ref)
    assert all(c.err == 0 for c in hh.top())
    assert hh.total == sum(ref.values())


def test_twins_agree_exactly_when_the_top_k_overflows(compiled_state, monkeypatch) -> None:
    queries = _random_queries(7, 2000, 400)
    results = []
    for pure in (False, True):
        words, hh = _count(pure, queries, k=64, width=1 << 10)
        results.append((words, hh))
    monkeypatch.delenv("JENOVA_FAST_PURE", raising=False)
    (wa, a), (wb, b) = results
    assert wa == wb
    assert a.meta.tolist() == b.meta.tolist() and a.meta[1] == 1  # overflowed
    for name in ("sketch", "hashes", "heap"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.slots[:, :REP_START], b.slots[:, :REP_START])
    assert a.top() == b.top()


def test_many_batches_through_the_tokenizer_thread_count_exactly_as_the_twin(compiled_state, monkeypatch) -> None:
    """Batches are tokenized on a helper thread ahead of the counting and their arrays reused in turn."""
    monkeypatch.setattr(counting_native, "QUERY_BATCH", 37)
    queries = QUERIES + _random_queries(11, 3000, 400)
    (wa, a), (wb, b) = (_count(pure, queries, k=64, width=1 << 10) for pure in (False, True))
    monkeypatch.delenv("JENOVA_FAST_PURE", raising=False)
    assert wa == wb and a.meta.tolist() == b.meta.tolist()
    for name in ("sketch", "hashes", "heap"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.slots[:, :REP_START], b.slots[:, :REP_START])
    assert a.top() == b.top()


def test_overflow_bounds_hold(cpa_impl: str) -> None:
    queries = _random_queries(11, 1500, 300)
    hh = counters.HeavyHitters(128, 4, 1 << 10)
    counting().count_queries(hh, queries)
    ref = ngram_counts(queries)
    top = hh.top()
    assert len(top) == 128
    for c in top:
        assert c.count - c.err <= ref[c.text] <= c.count, c
    # every n-gram heavier than total/k is tracked (space-saving style guarantee via the sketch)
    heavy = {t for t, n in ref.items() if n > hh.total / 128}
    assert heavy <= {c.text for c in top}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(
    ["\x00", " ", "ß", "İ", "Σ", "\u0301", "_", "\ud83d"]), max_size=40), max_size=12))
def test_unicode_queries_native_pure_counter(compiled_state, queries: list[str]) -> None:
    ref = ngram_counts(queries)
    df = document_frequency(queries)
    got = []
    for pure in (False, True):
        _, hh = _count(pure, queries)
        got.append({p.text: (p.count, p.err, p.df, p.df_err) for p in hh.patterns()})
    os.environ.pop("JENOVA_FAST_PURE", None)
    assert got[0] == got[1] == {t: (n, 0, df[t], 0) for t, n in ref.items()}


@settings(max_examples=200, deadline=None)
@given(st.characters())
def test_unicode_tables_follow_the_rule(ch: str) -> None:
    t = unicode_tables.tables()
    cp = ord(ch)
    folded = "".join(map(chr, t.fold_cp[t.fold_off[cp]: t.fold_off[cp + 1]]))
    assert folded == ch.casefold()
    assert bool(t.is_word[cp]) == is_word(ch)


def test_python_w_is_a_subset_of_the_word_characters() -> None:
    """The pure twin cuts words only where `\\W` matches (then asks is_word_char): every `\\w` character of
    every code point must be a word character, and no ASCII `\\W` one may be."""
    w = re.compile(r"\w")
    for cp in range(0x110000):
        ch = chr(cp)
        if w.match(ch):
            assert is_word(ch), hex(cp)
        elif cp < 0x80:
            assert not is_word(ch), hex(cp)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00") | st.sampled_from(
    [" ", "_", "\u0301", "\u20dd", "\u0903", "\u203f", "\ufe4f", "ǰ", "İ", "-", "😀"]), max_size=60))
def test_words_are_the_runs_of_word_characters(text: str) -> None:
    (ngrams,) = document_ngrams([text])
    expected = [g for g in ngrams if " " not in g]
    assert kernels_py.words(text) == expected


def test_item_and_pair_hashes_agree(cpa_impl: str, monkeypatch) -> None:
    keys = ["episodic:1", "semantic:é", "procedural:😀", "x:"]
    native = counting().item_hashes(keys)
    assert native.tolist() == [kernels_py.hash_bytes(k.encode()) for k in keys]
    pairs = counting().pair_hashes(native[:2], native[2:])
    assert pairs.tolist() == [kernels_py.pair_hash(int(a), int(b)) for a, b in zip(native[:2], native[2:],
                                                                                    strict=True)]


def test_count_items_exact(cpa_impl: str) -> None:
    keys = [f"k{i % 7}" for i in range(100)]
    hh = counters.HeavyHitters(16, 4, 1 << 8)
    counting().count_items(hh, counting().item_hashes(keys), keys)
    assert {c.text: c.count for c in hh.top()} == {f"k{i}": len(range(i, 100, 7)) for i in range(7)}
    assert int(hh.slots[:, COUNT].sum()) == 100 and int(hh.slots[:, ERR].sum()) == 0


_DISABLED_JIT = """
import json, sys
from jenova_fast.cpa import counters, jit_cache
from jenova_fast.cpa._impl import counting
assert not jit_cache.jit_enabled()
hh = counters.HeavyHitters(32, 4, 256)
words = counting().count_queries(hh, json.loads(sys.argv[1]))
print(json.dumps([words, [list(c) for c in hh.top()], hh.sketch.sum().item(), hh.slots[:, :6].tolist(),
                  hh.meta.tolist()]))
"""


def test_kernels_as_python_under_numba_disable_jit(compiled_state) -> None:
    queries = QUERIES + _random_queries(3, 60, 30)
    proc = run_python(_DISABLED_JIT, json.dumps(queries), env={"NUMBA_DISABLE_JIT": "1", "JENOVA_FAST_PURE": "0",
                                                                "PYTHONWARNINGS": "ignore::RuntimeWarning"})
    assert proc.returncode == 0, proc.stderr
    words, top, sketch_sum, slots, meta = json.loads(proc.stdout)
    for pure in (False, True):
        w, hh = _count(pure, queries, k=32, width=256)
        assert (w, [list(c) for c in hh.top()], int(hh.sketch.sum())) == (words, top, sketch_sum)
        assert (hh.slots[:, :6].tolist(), hh.meta.tolist()) == (slots, meta)  # df, sessions and their bounds
    os.environ.pop("JENOVA_FAST_PURE", None)
    assert len(top) == 32  # overflowed: the comparison covers evictions too
