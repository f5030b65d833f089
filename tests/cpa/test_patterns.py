"""Query patterns that mean something: document frequency, count x IDF, function words, candidate
themes, the migration from schema 2, and the CLI's --json / --by / --stopwords / --plot, on real files."""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jenova_fast.cpa import CPA, counters, function_words, patterns, state
from jenova_fast.cpa import counting as counting_native
from jenova_fast.cpa._impl import counting
from jenova_fast.cpa.accelerator import assign_sessions
from jenova_fast.cpa.cli import main
from jenova_fast.cpa.kernels import DOCS, REP_START
from tests.cpa.conftest import ROOT
from tests.cpa.reference import document_frequency, ngram_counts

PLANTED = {
    "sourdough starter": ["how do I feed my sourdough starter", "why is my sourdough starter so runny",
                          "what flour should a sourdough starter get", "can a sourdough starter live in the fridge",
                          "sourdough starter smells like acetone, is it dead"],
    "sicilian defence": ["what is the main line of the sicilian defence", "how do I play against a sicilian defence",
                         "is sicilian defence good for beginners", "which sicilian defence setup suits me as black"],
    "raised garden beds": ["how deep should raised garden beds be", "what soil mix do raised garden beds need",
                           "should I line raised garden beds with cardboard", "when to water raised garden beds"],
}
PLANTED_NGRAMS = {"sourdough", "starter", "sourdough starter", "sicilian", "defence", "sicilian defence", "raised",
                  "garden", "beds", "raised garden", "garden beds"}
OPENERS = ["how do I", "what is the best way to", "can you help me", "how can I", "why can't I",
           "what happens if I", "should I", "is there a way to", "please tell me how to", "I need to"]
VERBS = ["fix", "start", "update", "clean", "open", "find", "change", "check", "reset", "save", "move", "remove",
         "share", "install", "close", "send", "print", "charge", "connect", "test"]
OBJECTS = ["it", "this", "that", "them", "my phone", "the laptop", "my email", "the printer", "my files", "the car",
           "my account", "the wifi", "the router", "my calendar", "the kettle", "my bike"]


def planted_history(path: Path, n: int = 3000, seed: int = 5) -> Path:
    """n queries over 30 days (one session a day): every fifth about one of three planted interests, the
    rest everyday questions, nine in ten signed off "thanks jenova" (the assistant's name: a built-in
    function word)."""
    rng = random.Random(seed)
    topics = list(PLANTED.values())
    everyday = n - n // 5

    def balanced(words: list[str]) -> list[str]:  # each word equally often (within one), in seeded order
        out = (words * (everyday // len(words) + 1))[:everyday]
        rng.shuffle(out)
        return out

    openers, verbs, objects = balanced(OPENERS), balanced(VERBS), balanced(OBJECTS)
    lines = []
    for i in range(n):
        if i % 5 == 0:
            templates = topics[(i // 5) % 3]
            q = templates[(i // 15) % len(templates)]
        else:
            q = f"{openers.pop()} {verbs.pop()} {objects.pop()}"
        if i % 10 != 9:
            q += " thanks jenova"
        ts = 1_760_000_000 + (i * 30 // n) * 86400 + (i % (n // 30)) * 60
        lines.append(json.dumps({"user_message": q, "ai_message": "...", "timestamp": ts}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_query_counts_once_in_document_frequency(cpa_impl: str) -> None:
    cpa = CPA.in_memory()
    cpa.observe_queries(["tomato tomato tomato", "tomato soup", "soup", "a b\x00c d"])
    got = {p.text: (p.count, p.err, p.df, p.df_err) for p in cpa.query_patterns(by="count")}
    assert got["tomato"] == (4, 0, 2, 0) and got["tomato tomato"] == (2, 0, 1, 0) and got["soup"] == (2, 0, 2, 0)
    assert cpa.state.ngrams.docs == 5  # a NUL inside a query splits it into two documents
    score = {p.text: p.count_idf for p in cpa.query_patterns(by="idf")}
    assert score["tomato"] == pytest.approx(4 * np.log(5 / 2)) and score["soup"] == pytest.approx(2 * np.log(5 / 2))


def test_planted_phrases_are_the_top_patterns_by_idf(cpa_impl: str, tmp_path: Path) -> None:
    cpa = CPA(tmp_path / "state")
    cpa.observe_history(planted_history(tmp_path / "history.jsonl"))
    by_idf = cpa.query_patterns(by="idf")
    assert {p.text for p in by_idf[: len(PLANTED_NGRAMS)]} == PLANTED_NGRAMS
    shown = {p.text for p in by_idf}
    assert not shown & {"do", "how", "to", "i", "what", "how do", "do i", "thanks", "is there", "jenova"}
    assert {"water raised", "feed my"} <= shown  # by IDF, function words stay inside bigrams
    by_keyness = [p.text for p in cpa.query_patterns()]
    assert by_keyness[0] == "sourdough starter" and "feed my" not in by_keyness  # by keyness: content n-grams
    by_count = cpa.query_patterns(by="count")
    assert [p.count for p in by_count] == sorted((p.count for p in by_count), reverse=True)
    stats = cpa.stats(top=10)
    assert stats["queries"]["sessions"] == 30 and stats["queries"]["documents"] == 3000
    # by keyness, rare words lead: "acetone" (a fifth of the starter's questions) before "sicilian defence";
    # "raised garden beds", all common words, comes after the rarer everyday "router" and "kettle"
    themes = [c["theme"] for c in stats["candidate_themes"]]
    assert themes[:3] == ["sourdough starter", "acetone", "sicilian defence"] and "raised garden beds" in themes
    assert stats["candidate_themes"][0]["sessions"] == 30 and stats["candidate_themes"][0]["queries"] == 200
    # an insight about it makes it a known theme: no longer a candidate
    cpa.observe_topics(["Sourdough Starter"])
    themes = [c["theme"] for c in cpa.stats(top=10)["candidate_themes"]]
    assert "sourdough starter" not in themes and themes[:2] == ["acetone", "sicilian defence"]


def _pattern_rows(pure: bool, history: Path, state_dir: Path) -> list[patterns.RankedPattern]:
    os.environ["JENOVA_FAST_PURE"] = "1" if pure else "0"
    cpa = CPA(state_dir)
    cpa.observe_history(history)
    return cpa.query_patterns() + cpa.query_patterns(by="idf")


def test_pure_and_native_give_identical_scores(compiled_state, tmp_path: Path) -> None:
    history = planted_history(tmp_path / "history.jsonl", n=900)
    try:
        native, pure = (_pattern_rows(p, history, tmp_path / f"s{p}") for p in (False, True))
    finally:
        os.environ.pop("JENOVA_FAST_PURE", None)
    assert native == pure and len(native) > 100  # every field, the float scores included


def _random_queries(seed: int, n: int, vocab: int) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)] + ["Über", "école", "ß"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 10))) for _ in range(n)]


def test_document_frequency_bounds_and_twins_when_the_top_k_overflows(compiled_state, monkeypatch) -> None:
    queries = _random_queries(3, 2500, 300)
    sessions = np.repeat(np.arange(1, 26), 100)
    monkeypatch.setattr(counting_native, "QUERY_BATCH", 97)  # many batches through the tokenizer threads
    built = []
    for pure in ("0", "1"):
        monkeypatch.setenv("JENOVA_FAST_PURE", pure)
        hh = counters.HeavyHitters(64, 4, 1 << 9)
        counting().count_queries(hh, queries, sessions=sessions)
        built.append(hh)
    native, pure_hh = built
    np.testing.assert_array_equal(native.slots[:, :REP_START], pure_hh.slots[:, :REP_START])  # all but scratch
    assert native.meta.tolist() == pure_hh.meta.tolist() and native.meta[1] == 1 and native.meta[DOCS] == 2500
    assert native.patterns() == pure_hh.patterns()
    counts, df = ngram_counts(queries), document_frequency(queries)
    for p in native.patterns():
        assert p.count - p.err <= counts[p.text] <= p.count, p
        assert p.df - p.df_err <= df[p.text] <= p.df, p
        assert p.df <= p.count and 1 <= p.sessions <= 25


def test_sessions_by_time() -> None:
    gap = 1800.0
    ids, last, sid = assign_sessions([100.0, 200.0, 100.0 + 3 * gap, None, 50.0], None, 0, gap)
    assert ids == [1, 1, 2, 2, 3] and last == 50.0 and sid == 3
    ids, _, _ = assign_sessions([None, None, 10.0], 10.0, 3, gap)  # an undated call starts a session
    assert ids == [4, 4, 4]
    ids, _, _ = assign_sessions([60.0], 10.0, 4, gap)  # a query soon after the last one stays in its session
    assert ids == [4]


def test_function_words_languages_and_file(tmp_path: Path, cpa_impl: str) -> None:
    cpa = CPA.in_memory()
    cpa.observe_queries(["the man in the hat", "why did my plants die", "what is a fox den"])
    assert cpa.active_function_words().languages == ("en",)
    assert {"man", "hat", "die", "den"} <= {p.text for p in cpa.query_patterns()}  # German function words
    cpa.observe_queries(["ich habe die Katze und der Hund nicht gesehen", "das ist nicht der Hund"] * 3)
    fw = cpa.active_function_words()
    assert fw.languages == ("en", "de") and "die" not in {p.text for p in cpa.query_patterns()}
    words = tmp_path / "stop.txt"
    words.write_text("# mine\nKatze  hund\n\n", encoding="utf-8")
    shown = {p.text for p in cpa.query_patterns(by="idf", stopwords=words)}
    assert {"katze", "hund", "katze und"} & shown == {"katze und"} and "the" in shown
    shown = {p.text for p in cpa.query_patterns(stopwords=words)}  # by keyness: no bigram with a function word
    assert not {"katze", "hund", "katze und", "der hund"} & shown and {"the", "und der"} <= shown
    with pytest.raises(function_words.StopwordsError, match="stopwords file"):
        cpa.query_patterns(stopwords=tmp_path / "missing.txt")


FIXTURE = ROOT / "tests" / "cpa" / "data" / "schema2"


def test_a_schema_2_state_migrates_with_the_same_counts(cpa_impl: str, tmp_path: Path) -> None:
    """state.npz was written by the schema 2 code (see make.py beside it); expected.json is what it reported."""
    shutil.copy(FIXTURE / state.STATE_FILE, tmp_path / state.STATE_FILE)
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    assert expected["schema"] == 2
    cpa = CPA(tmp_path)
    stats = cpa.stats(top=10_000, by="count", stopwords=os.devnull)  # every n-gram listed
    q = stats["queries"]
    assert (q["queries"], q["words"], q["ngrams"], q["documents"]) == (expected["queries"], expected["words"],
                                                                      expected["ngrams"], expected["queries"])
    assert {c["text"]: [c["count"], c["err"]] for c in q["top"]} == expected["ngram_counts"]
    assert {c["text"]: [c["count"], c["err"]] for c in stats["memory"]["top_items"]} == expected["items"]
    assert {c["text"]: [c["count"], c["err"]] for c in stats["memory"]["top_pairs"]} == expected["pairs"]
    assert stats["memory"]["kinds"] == expected["kinds"]
    assert {t["theme"]: t["mentions"] for t in stats["themes"]} == expected["themes"]
    assert {f["function"]: f["ncalls"] for f in stats["functions"]} == expected["functions"]
    for c in q["top"]:  # df unknown before: the count capped at the queries, at least one query
        assert c["df"] == min(c["count"], expected["queries"]) and c["df_err"] == c["df"] - 1 and c["sessions"] == 0
    # counting goes on from there, and the next save is schema 3
    cpa.observe_queries(["sourdough starter smells sour", "sourdough starter"])
    top = {p.text: p for p in cpa.query_patterns(by="count")}
    assert top["sourdough starter"].count == expected["ngram_counts"]["sourdough starter"][0] + 2
    assert top["sourdough starter"].df == min(expected["ngram_counts"]["sourdough starter"][0],
                                              expected["queries"]) + 2
    assert top["sourdough starter"].sessions == 1
    with zipfile.ZipFile(tmp_path / state.STATE_FILE) as zf:
        header = json.loads(np.load(zf.open("header.npy")).tobytes())
    assert header["schema"] == state.SCHEMA == 3


def test_cli_json_by_and_plot(compiled_state, warm_state: Path, tmp_path: Path, capsys) -> None:
    history = planted_history(tmp_path / "history.jsonl", n=600)
    assert main(["observe", "--state-dir", str(warm_state), "--history", str(history)]) == 0
    capsys.readouterr()
    png = tmp_path / "stats.png"
    assert main(["stats", "--state-dir", str(warm_state), "--json", "--top", "11", "--by", "idf", "--plot",
                 str(png)]) == 0
    stats = json.loads(capsys.readouterr().out)
    top = stats["queries"]["top"]
    assert {c["text"] for c in top} == PLANTED_NGRAMS and stats["queries"]["ranked_by"] == "idf"
    assert [c["count_idf"] for c in top] == sorted((c["count_idf"] for c in top), reverse=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["stats", "--state-dir", str(warm_state), "--by", "count", "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "query patterns (by count)" in table and "jenova" not in table and "candidate themes" in table
    stop = tmp_path / "stop.txt"
    stop.write_text("thanks\nsourdough\n", encoding="utf-8")  # replaces the built-in lists
    assert main(["stats", "--state-dir", str(warm_state), "--by", "count", "--stopwords", str(stop), "--json",
                 "--top", "1000"]) == 0
    shown = {c["text"] for c in json.loads(capsys.readouterr().out)["queries"]["top"]}
    assert "sourdough" not in shown and {"jenova", "how", "sourdough starter"} <= shown
    assert main(["stats", "--state-dir", str(warm_state), "--stopwords", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_a_schema_1_state_migrates_through_2_to_3(cpa_impl: str, tmp_path: Path) -> None:
    """Schema 1 made from the schema 2 fixture (no pairs, raw theme counts): both migrations in a row."""
    with np.load(FIXTURE / state.STATE_FILE, allow_pickle=False) as z:
        members = {n: z[n] for n in z.files if not n.startswith(("pairs.", "themes.weight", "themes.time"))}
    members["themes.counts"] = members.pop("themes.count")
    header = json.loads(members["header"].tobytes())
    members["header"] = np.frombuffer(json.dumps({**header, "schema": 1}).encode(), dtype=np.uint8)
    with open(tmp_path / state.STATE_FILE, "wb") as f:
        np.savez(f, **members)
    expected = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))
    stats = CPA(tmp_path).stats(top=10_000, by="count", stopwords=os.devnull)
    assert {c["text"]: [c["count"], c["err"]] for c in stats["queries"]["top"]} == expected["ngram_counts"]
    assert {c["text"]: [c["count"], c["err"]] for c in stats["memory"]["top_items"]} == expected["items"]
    assert stats["memory"]["top_pairs"] == [] and stats["queries"]["documents"] == expected["queries"]
    assert {t["theme"]: t["mentions"] for t in stats["themes"]} == expected["themes"]
