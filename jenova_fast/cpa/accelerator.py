"""The Cognitive Process Accelerator: observe -> count -> persist, one locked transaction per observe."""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from jenova_fast._fs import private_dir
from jenova_fast._implementation import pure_requested
from jenova_fast.cpa import config, function_words, jit_cache, observe, patterns, report, state, unicode_tables
from jenova_fast.cpa._impl import counting
from jenova_fast.cpa.kernels import COUNT, SESSION_ID
from jenova_fast.cpa.observe import ObserveReport
from jenova_fast.cpa.state import default_state_dir
from jenova_fast.cpa.themes import decayed_weights, theme_key

PathLike = str | os.PathLike[str]
_WORDS = re.compile(r"\w+")


def assign_sessions(times: Sequence[float | None], last_time: float | None, last_id: int,
                    gap: float = config.SESSION_GAP_SECONDS, *,
                    first: bool = True) -> tuple[list[int], float | None, int]:
    """Each query's session id, the latest query time and the latest session id.

    A dated query more than `gap` seconds from the previous dated one (before or after) starts a new
    session; so does a first query when no time is known yet. An observe call whose first query has no
    time starts a session (an undated file is one session); undated queries after it stay in it.
    `first=False`: the times go on from a previous call's (its returned time as `last_time`), as the later
    batches of one history file do: the ids are those of one call over all of them."""
    ids: list[int] = []
    prev, sid = last_time, last_id
    for i, t in enumerate(times):
        starts = first and i == 0
        if t is None:
            if starts:
                sid, prev = sid + 1, None
        else:
            if (prev is None and starts) or sid == 0 or (prev is not None and abs(t - prev) > gap):
                sid += 1
            prev = t
        ids.append(sid)
    return ids, prev, sid


class CPA:
    """Counts what the user does, in bounded memory, and keeps it in `<state_dir>` across sessions.

    Every observe call is one transaction: lock, reload if another process saved since, count, save.
    `with cpa.batch():` groups calls into one transaction. `CPA.in_memory()` never touches disk.
    """

    def __init__(self, state_dir: PathLike | None = None, *, user: str | None = None,
                 persist: bool = True, warm: bool = True) -> None:
        self.state_dir: Path | None = None
        if persist:
            self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir(user)
            private_dir(self.state_dir, "CPA state dir", "--state-dir")  # 0700; another user's: refused
        self.state = state.State()
        self._stamp: tuple[int, int, int] | None = None
        self._depth = 0
        self.warmed: list[str] = []
        self._last_batch_time: float | None = None
        if self.state_dir is not None:
            with state.locked(self.state_dir):
                self._refresh()
            jit_cache.bind(self.state_dir)
            if warm and not pure_requested():  # `stats` and `reset` count nothing: no kernels to load
                self.warmed = jit_cache.warm_start(self.state_dir)
                if "tokenize_queries" in self.warmed:
                    unicode_tables.tables(self.state_dir / "tables")
        else:
            jit_cache.bind(None)

    @classmethod
    def in_memory(cls) -> CPA:
        return cls(persist=False)

    # transactions -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / state.STATE_FILE

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp is None or stamp != self._stamp:
            self.state, _ = state.load_or_fresh(self.path)  # type: ignore[arg-type]
            self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def batch(self) -> Iterator[CPA]:
        if self.state_dir is None or self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with state.locked(self.state_dir):
            self._refresh()
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._stamp = None  # half-applied changes: reload from disk next time
                raise
            finally:
                self._depth -= 1
            self.state.generation += 1
            state.write(self.path, self.state)  # type: ignore[arg-type]
            self._stamp = self._file_stamp()

    def reset(self) -> None:
        """Forget everything counted (the compile history and Numba cache stay)."""
        with self.batch():
            self.state = state.State(generation=self.state.generation)

    # observing --------------------------------------------------------------------------------------
    def observe_queries(self, texts: Iterable[str], *, when: float | None = None,
                        match_themes: bool = True) -> int:
        """Count word unigrams/bigrams of user queries asked at `when` (default now), each n-gram once more
        in its document frequency per query; known themes named in a query get a mention. Returns the
        number of words counted."""
        texts = texts if isinstance(texts, list) else list(texts)
        with self.batch():
            words = self._count_queries(texts, time.time() if when is None else when)
            if match_themes and self.state.themes:
                self._match_themes(texts, [when] * len(texts))
        return words

    def _count_queries(self, texts: list[str], times: list[float | None] | float,
                       after: tuple[float | None] | None = None) -> int:
        """Count into the n-grams, each query in its session: by its time in `times`, or all asked at the
        one time `times` (one session: the current one, unless that time is far from the last query).
        `after`: these go on from the previous batch of the same file, whose (last time,) it holds; the
        sessions are then those of one call over both."""
        if not texts:
            return 0
        st, ngrams = self.state, self.state.ngrams
        current = int(ngrams.meta[SESSION_ID])
        sessions: np.ndarray | int
        if isinstance(times, float | int):
            ids, last_time, _ = assign_sessions([float(times)], st.last_query_time, current)
            sessions = ids[0]
        else:
            since = st.last_query_time if after is None else after[0]
            ids, last_time, _ = assign_sessions(times, since, current, first=after is None)
            self._last_batch_time = last_time
            sessions = np.asarray(ids, np.int64)
        if last_time is not None:
            st.last_query_time = last_time
        words = counting().count_queries(ngrams, texts, self.state_dir, sessions)  # sets meta[SESSION_ID]
        st.queries += len(texts)
        st.words += words
        return words

    def _match_themes(self, texts: list[str], times: list[float | None]) -> None:
        by_first: dict[str, list[tuple[str, frozenset[str]]]] = {}
        for key in self.state.themes:
            words = _WORDS.findall(key)
            if words:
                by_first.setdefault(words[0], []).append((key, frozenset(words)))
        mentions: list[str | tuple[str, float | None]] = []
        for text, when in zip(texts, times, strict=True):
            said = set(_WORDS.findall(text.casefold()))
            for w in said & by_first.keys():
                mentions.extend((key, when) for key, need in by_first[w] if need <= said)
        if mentions:
            self.observe_topics(mentions)

    def observe_topics(self, topics: Iterable[str | tuple[str, float | None]], *, when: float | None = None) -> int:
        """One mention per topic (or (topic, unix time)); weights halve every THEME_HALF_LIFE_DAYS."""
        now = time.time() if when is None else when
        half_life = config.THEME_HALF_LIFE_DAYS * 86400.0
        n = 0
        with self.batch():
            themes = self.state.themes
            for item in topics:
                topic, t = item if isinstance(item, tuple) else (item, None)
                t = now if t is None else float(t)
                key = theme_key(str(topic))
                rec = themes.get(key)
                if rec is None:
                    themes[key] = [1.0, t, 1]
                elif t >= rec[1]:
                    rec[0] = rec[0] * 2.0 ** (-(t - rec[1]) / half_life) + 1.0
                    rec[1] = t
                    rec[2] += 1
                else:
                    rec[0] += 2.0 ** (-(rec[1] - t) / half_life)
                    rec[2] += 1
                n += 1
        return n

    def observe_access(self, kind: str, ids: Iterable[str | int], *, when: float | None = None) -> int:
        """One access of each id of one memory kind; the ids of one call count as co-accessed."""
        keys = [(kind, str(i), when) for i in ids]
        with self.batch():
            self._count_access([keys])
        return len(keys)

    def _count_access(self, groups: list[list[tuple[str, str, float | None]]]) -> None:
        st = self.state
        keys: list[str] = []
        pair_a: list[int] = []
        pair_b: list[int] = []
        for group in groups:
            first: dict[str, int] = {}
            for kind, ident, _ in group:
                st.kinds[kind] = st.kinds.get(kind, 0) + 1
                key = f"{kind}:{ident}".replace("\x00", "\ufffd")
                first.setdefault(key, len(keys))
                keys.append(key)
            distinct = list(first.values())[: config.MAX_PAIR_GROUP]
            for x in range(len(distinct)):
                for y in range(x + 1, len(distinct)):
                    pair_a.append(distinct[x])
                    pair_b.append(distinct[y])
        if not keys:
            return
        hashes = counting().item_hashes(keys, self.state_dir)
        counting().count_items(st.items, hashes, keys, self.state_dir)
        if pair_a:
            a, b = hashes[pair_a], hashes[pair_b]
            swap = a > b  # unordered pairs: smaller hash first
            lo, hi = np.where(swap, b, a), np.where(swap, a, b)
            ia, ib = np.array(pair_a), np.array(pair_b)
            first_i, second_i = np.where(swap, ib, ia), np.where(swap, ia, ib)
            texts = [f"{keys[i]} + {keys[j]}" for i, j in zip(first_i.tolist(), second_i.tolist(), strict=True)]
            counting().count_items(st.pairs, counting().pair_hashes(lo, hi), texts, self.state_dir)

    def observe_functions(self, functions: Mapping[str, tuple[int, float, float]]) -> int:
        with self.batch():
            table = self.state.functions
            for name, (nc, tt, ct) in functions.items():
                rec = table.setdefault(name, [0, 0.0, 0.0])
                rec[0] += nc
                rec[1] += tt
                rec[2] += ct
            if len(table) > config.MAX_FUNCTIONS:
                keep = sorted(table.items(), key=lambda kv: (-kv[1][2], kv[0]))[: config.MAX_FUNCTIONS]
                self.state.functions = dict(keep)
        return len(functions)

    def observe_profile(self, path: PathLike) -> ObserveReport:
        report = ObserveReport("function", str(path))
        start = time.perf_counter()
        report.observed = self.observe_functions(observe.read_profile(Path(path)))
        report.seconds = time.perf_counter() - start
        return report

    @contextlib.contextmanager
    def profile(self) -> Iterator[cProfile.Profile]:
        """Profile the block and count its functions' calls and times."""
        prof = cProfile.Profile()
        prof.enable()
        try:
            yield prof
        finally:
            prof.disable()
            self.observe_functions(observe.functions_of(pstats.Stats(prof)))

    # file inputs ------------------------------------------------------------------------------------
    def observe_history(self, path: PathLike) -> ObserveReport:
        """User messages of a conversation log (JSONL with `user_message`, optional `timestamp`)."""
        report = ObserveReport("query", str(path))
        start = time.perf_counter()
        with self.batch():
            after: tuple[float | None] | None = None
            for texts, times in observe.iter_history(Path(path), report):  # memory bounded by a batch
                self._count_queries(texts, times, after)
                after = (self._last_batch_time,)
                if self.state.themes:
                    self._match_themes(texts, times)
                report.observed += len(texts)
        report.seconds = time.perf_counter() - start
        return report

    def observe_insights(self, insights: Iterable[tuple[str, float]], source: str = "insights") -> ObserveReport:
        """Each insight's (topic, time written) as a theme mention at that time. The CPA does not read
        stores: `jenova_fast.prepare.insight_topics(root)` does (the CLI wires the two)."""
        report = ObserveReport("insight", source)
        start = time.perf_counter()
        report.observed = self.observe_topics(insights)
        report.seconds = time.perf_counter() - start
        return report

    def observe_access_log(self, path: PathLike) -> ObserveReport:
        """Access-log lines; lines within ACCESS_GROUP_SECONDS of their group's first are co-accessed."""
        report = ObserveReport("access", str(path))
        start = time.perf_counter()
        entries = observe.read_access_log(Path(path), report)
        groups: list[list[tuple[str, str, float | None]]] = []
        group_start: float | None = None
        for entry in entries:
            ts = entry[2]
            if ts is None or group_start is None or not 0 <= ts - group_start <= config.ACCESS_GROUP_SECONDS:
                groups.append([])
                group_start = ts
            groups[-1].append(entry)
        with self.batch():
            self._count_access(groups)
        report.observed = len(entries)
        report.seconds = time.perf_counter() - start
        return report

    # reading ----------------------------------------------------------------------------------------
    def theme_weights(self, now: float | None = None) -> dict[str, float]:
        """Each theme's weight decayed to `now` (default: the current time)."""
        return decayed_weights(self.state.themes, now)

    def active_function_words(self, stopwords: PathLike | None = None) -> function_words.FunctionWords:
        """The function words in force: a --stopwords file's, or the built-in lists (English, and the
        languages the user's own counts show)."""
        return self._function_words(self.languages(), stopwords)

    def languages(self) -> tuple[str, ...]:
        """The user's languages, from their own words (English always): the function-word lists and the
        reference frequencies that apply."""
        hh = self.state.ngrams
        unigrams = {t: n for t, n in zip(hh.texts[: hh.used], hh.slots[: hh.used, COUNT].tolist(), strict=True)
                    if " " not in t}
        return function_words.detect_languages(unigrams, self.state.words)

    @staticmethod
    def _function_words(langs: tuple[str, ...], stopwords: PathLike | None) -> function_words.FunctionWords:
        return function_words.built_in(langs) if stopwords is None else function_words.read_file(stopwords)

    def query_patterns(self, *, by: str = "keyness",
                       stopwords: PathLike | None = None) -> list[patterns.RankedPattern]:
        """Tracked query n-grams not made only of function words, best first (by keyness, count x IDF or
        count)."""
        return self.ranked_patterns(by, stopwords)[0]

    def ranked_patterns(self, by: str = "keyness", stopwords: PathLike | None = None
                        ) -> tuple[list[patterns.RankedPattern], function_words.FunctionWords, int, tuple[str, ...]]:
        """(listed patterns best first, the function words in force, how many n-grams they hid, the
        reference languages)."""
        langs = self.languages()
        words = self._function_words(langs, stopwords)
        rows, hidden = patterns.ranked(self.state.ngrams, words, by, langs=langs, word_count=self.state.words)
        return rows, words, hidden, langs

    def stats(self, top: int = 20, *, by: str = "keyness", stopwords: PathLike | None = None) -> dict:
        """Everything counted, as plain JSON-able data (see report.stats)."""
        return report.stats(self, top, by=by, stopwords=stopwords)
