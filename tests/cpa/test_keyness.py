"""Keyness: the user's topics rank above everyday phrasing (issue 21), in English, German and French; a
pattern of common words never outranks a rare word of equal count; the reference tables; states of the
previous schema; the CLI's --by keyness / idf / count. Both implementations, real states."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jenova_fast.cpa import CPA, patterns, reference, state
from jenova_fast.cpa.cli import main
from jenova_fast.cpa.function_words import BUILT_IN
from jenova_fast.cpa.kernels_py import words
from tests.cpa.conftest import ROOT, run_cpa
from tests.cpa.histories import EVERYDAY, INTERESTS, STEMS, everyday_history, write_demo

DAY = 86400.0
T0 = 1_760_000_000.0
FIXTURE = ROOT / "tests" / "cpa" / "data" / "schema2"
_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _observe_sessions(cpa: CPA, sessions: list[list[str]]) -> None:
    with cpa.batch():
        for day, queries in enumerate(sessions):
            cpa.observe_queries(queries, when=T0 + day * DAY)


def _assert_interests_on_top(rows: list[patterns.RankedPattern], interests, top: int = 5) -> None:
    """Each interest's best n-gram (one holding a key word) within `top`, and only interests above the last
    of them."""
    about = [next(i for i, r in enumerate(rows) if set(r.text.split(" ")) & it.key) for it in interests]
    keys = frozenset().union(*(it.key for it in interests))
    above = [r.text for r in rows[: max(about) + 1]]
    assert max(about) < top and all(set(t.split(" ")) & keys for t in above), above


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
@_SETTINGS
@given(data=st.data())
def test_interests_outrank_everyday_phrasing(cpa_impl: str, lang: str, data: st.DataObject) -> None:
    """The issue's scenario: everyday phrasing 80%, three interests 20%, each interest rarer than each
    everyday phrase and recurring in as many sessions as the others; phrases, interests, stems, sizes and
    order drawn."""
    everyday = data.draw(st.lists(st.sampled_from(EVERYDAY[lang]), min_size=3, max_size=8, unique=True))
    interests = data.draw(st.lists(st.sampled_from(INTERESTS[lang]), min_size=3, max_size=3, unique=True))
    stems = data.draw(st.lists(st.sampled_from(STEMS[lang]), min_size=1, max_size=4, unique=True))
    n = data.draw(st.integers(300, 1500))
    days = data.draw(st.integers(3, 30))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    sessions = everyday_history(rng, lang, stems, everyday, interests, n, days, steady=True)
    cpa = CPA.in_memory()
    _observe_sessions(cpa, sessions)
    assert lang in cpa.languages()
    assert all(reference.word_frequency(w, [lang]) == reference.RARE for it in interests for w in it.key)
    queries = [words(q) for day in sessions for q in day]
    assert max(sum(bool(it.key & set(q)) for q in queries) for it in interests) < min(  # each interest rarer
        sum(q[-len(words(p)):] == words(p) for q in queries) for p in everyday)        # than each phrase
    _assert_interests_on_top(cpa.query_patterns(), interests)
    # candidate themes come from the same score: the interests lead them, and no everyday phrasing is among
    # them. Which interest word names a candidate can vary: two interests can share one when their bigrams
    # share a common word ("kalligrafie lernen", "bouldern lernen"), and an interest can then surface by
    # another of its words ("tusche"); docs/cpa.md, "What keyness cannot do".
    themes = cpa.stats(top=3)["candidate_themes"]
    vocabulary = {w for it in interests for phrasing in it.phrasings for w in words(phrasing)}
    everyday_words = {w for phrase in everyday for w in words(phrase)} - vocabulary
    assert themes and all(set(c["theme"].split(" ")) <= vocabulary for c in themes), themes
    assert not {w for c in themes for n in c["ngrams"] for w in n.split(" ")} & everyday_words, themes


_FUNCTION = frozenset().union(*BUILT_IN.values())  # no language's: common English words may be Spanish markers
_COMMON = sorted(w for w, f in reference.table("en").items()
                 if f >= 10 ** (4.0 - 9) and w.isalpha() and w.isascii() and w not in _FUNCTION)
_RARE_LETTERS = "bcdfghjklmnpqrstvwxz"


@_SETTINGS
@given(common=st.lists(st.sampled_from(_COMMON), min_size=1, max_size=2, unique=True),
       rare=st.text(_RARE_LETTERS, min_size=7, max_size=12),
       repeat=st.integers(1, 40), background=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_common_words_never_outrank_a_rare_word_of_equal_count(cpa_impl: str, common: list[str], rare: str,
                                                                 repeat: int, background: int, seed: int) -> None:
    """A rare word and a pattern of common words (one word, or a bigram) in exactly the same queries, so
    equal in count, queries, sessions and recency; other queries around them."""
    assert reference.word_frequency(rare, ["en"]) == reference.RARE
    rng = random.Random(seed)
    others = [w for w in rng.sample(_COMMON, 50) if w not in common]
    pattern = " ".join(common)
    queries = [f"{rare} {pattern}"] * repeat + [" ".join(rng.sample(others, 4)) for _ in range(background)]
    rng.shuffle(queries)
    cpa = CPA.in_memory()
    cpa.observe_queries(queries, when=T0)
    rows = {r.text: (i, r) for i, r in enumerate(cpa.query_patterns())}
    (i_rare, r_rare), (i_common, r_common) = rows[rare], rows[pattern]
    assert (r_rare.count, r_rare.df, r_rare.sessions) == (r_common.count, r_common.df, r_common.sessions)
    assert i_rare < i_common and r_rare.keyness > r_common.keyness
    assert r_rare.score > r_common.score or r_rare.score == r_common.score == 0.0  # 0: in every query


def test_reference_tables() -> None:
    en = reference.table("en")
    assert max(en, key=en.__getitem__) == "the" and 25_000 < len(en) < 40_000
    assert reference.zipf(en["the"]) == pytest.approx(7.73)
    assert min(map(reference.zipf, en.values())) >= reference.CUTOFF_ZIPF
    assert "don" in en and "t" in en and "don't" not in en  # split as the tokenizer splits
    assert not any(ch.isdigit() for w in en for ch in w)
    for lang in reference.LANGUAGES:
        assert reference.table(lang) is reference.table(lang)  # read once
    assert reference.word_frequency("beekeeping", ["en"]) == reference.RARE  # under the cutoff: rare
    assert reference.word_frequency("und", ["en", "de"]) == reference.table("de")["und"]
    # a phrase as wordfreq combines its words: about its rarest word's frequency, never rarer than half
    both = reference.frequency("keep going", ["en"])
    assert both == pytest.approx(1 / (1 / en["keep"] + 1 / en["going"])) and both > reference.RARE
    assert 2 * reference.RARE < 10 ** (reference.CUTOFF_ZIPF - 9)  # two common words beat one rare word
    with pytest.raises(ValueError, match="no reference table"):
        reference.table("xx")


def test_keyness_arithmetic() -> None:
    # the low end of a 95% Poisson interval: exact values 0.0513, 5.43, 84.14 (chi-square quantiles / 2)
    assert patterns.count_low(1) == pytest.approx(0.0513, abs=0.012)
    assert patterns.count_low(10) == pytest.approx(5.43, rel=0.01)
    assert patterns.count_low(100) == pytest.approx(84.14, rel=0.01)
    assert patterns.keyness(100, 10_000, 1e-3) == pytest.approx(math.log(patterns.count_low(100) / 10))
    assert patterns.recency(-1, 5000) == 1.0 and patterns.recency(4999, 5000) == 1.0
    assert patterns.recency(4999 - 2000, 5000) == pytest.approx(0.5)


def test_an_old_interest_fades(cpa_impl: str) -> None:
    """Same counts, queries and sessions: the interest said lately ranks above the one said long ago."""
    cpa = CPA.in_memory()
    _observe_sessions(cpa, [["how do I start beekeeping"] * 20] + [["what should I do about it"] * 300] * 10
                      + [["how do I start bouldering"] * 20])
    rows = [r.text for r in cpa.query_patterns()]
    assert rows.index("bouldering") < rows.index("beekeeping")


def test_stats_on_a_state_of_the_previous_schema(cpa_impl: str, tmp_path: Path) -> None:
    """The schema 2 fixture (no document frequencies, sessions or last queries) ranks by keyness as it is,
    and after the next observe."""
    shutil.copy(FIXTURE / state.STATE_FILE, tmp_path / state.STATE_FILE)
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    cpa = CPA(tmp_path)
    q = cpa.stats(top=10_000)["queries"]
    assert q["ranked_by"] == "keyness" and q["top"]
    assert {c["text"]: [c["count"], c["err"]] for c in q["top"]}.items() <= expected["ngram_counts"].items()
    assert all(math.isfinite(c["score"]) and c["sessions"] == 0 for c in q["top"])
    texts = [c["text"] for c in q["top"]]
    assert texts.index("sourdough") < texts.index("starter") < texts.index("water")  # rarer first, at equal count
    cpa.observe_queries(["sourdough starter smells sour"], when=T0)
    texts = [r.text for r in cpa.query_patterns()]
    assert texts.index("sourdough") < texts.index("starter") < texts.index("water")


def test_cli_by_keyness_idf_and_count(compiled_state, warm_state: Path, tmp_path: Path, capsys) -> None:
    history = write_demo(tmp_path / "everyday.jsonl", n=900)
    assert main(["observe", "--state-dir", str(warm_state), "--history", str(history)]) == 0
    capsys.readouterr()
    got = {}
    for by in ("keyness", "idf", "count"):
        assert main(["stats", "--state-dir", str(warm_state), "--json", "--top", "5", "--by", by]) == 0
        got[by] = json.loads(capsys.readouterr().out)["queries"]
        assert got[by]["ranked_by"] == by and got[by]["reference_languages"] == ["en"]
    top = got["keyness"]["top"]
    assert {c["text"] for c in top[:3]} == {"beekeeping", "bouldering", "joinery"}
    assert set(top[0]) == {"text", "score", "count", "err", "df", "df_err", "sessions", "keyness", "count_idf",
                           "zipf"}
    assert [c["score"] for c in top] == sorted((c["score"] for c in top), reverse=True)
    assert [c["count_idf"] for c in got["idf"]["top"]] == sorted((c["count_idf"] for c in got["idf"]["top"]),
                                                                  reverse=True)
    assert not {c["text"] for c in got["idf"]["top"]} & {"beekeeping", "bouldering", "joinery"}  # the old ranking
    assert [c["count"] for c in got["count"]["top"]] == sorted((c["count"] for c in got["count"]["top"]),
                                                                reverse=True)
    assert main(["stats", "--state-dir", str(warm_state), "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "query patterns (by keyness: how much more you say it than people do)" in table and "x people" in table
    with pytest.raises(SystemExit):  # "score" named count x IDF before keyness: no longer a ranking
        main(["stats", "--state-dir", str(warm_state), "--by", "score"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_stats_loads_no_kernel(compiled_state, warm_state: Path, tmp_path: Path) -> None:
    """`cpa stats` counts nothing, so a new process opens the state without loading the compiled kernels
    (each load is a line of compile_history.jsonl); `observe` loads them ahead of counting."""
    history = write_demo(tmp_path / "everyday.jsonl", n=300)
    journal = warm_state / "compile_history.jsonl"
    assert run_cpa("observe", "--state-dir", warm_state, "--history", history).returncode == 0
    before = journal.read_text(encoding="utf-8").count("\n")
    proc = run_cpa("stats", "--state-dir", warm_state, "--top", "3")
    assert proc.returncode == 0 and "beekeeping" in proc.stdout, proc.stderr
    assert journal.read_text(encoding="utf-8").count("\n") == before
    assert run_cpa("observe", "--state-dir", warm_state, "--history", history).returncode == 0
    assert journal.read_text(encoding="utf-8").count("\n") > before
