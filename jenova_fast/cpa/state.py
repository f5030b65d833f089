"""The CPA's persistent state: one versioned `.npz` (arrays + a JSON header), no pickle anywhere.

Layout of `<state>/state.npz` (schema 3), every member a plain NumPy array:

- `header`: UTF-8 JSON `{"format": "jenova-fast-cpa", "schema": 3, "created", "saved", "generation",
  "queries", "words", "half_life_days", "last_query_time"}` (last_query_time: unix seconds of the latest
  query, null before any; the next query more than `config.SESSION_GAP_SECONDS` away starts a session)
- `ngrams.*`, `items.*`, `pairs.*`: a `HeavyHitters` each: `sketch` uint32[depth, width], `hashes` uint64[k],
  `slots` int64[k, 8] (one row per slot, fields `kernels.COUNT`..`REP_END`: count, document frequency,
  last document, sessions, count err, df err, two scratch), `keys` int64[k] (heap keys), `heap` int64[k],
  `meta` int64[6] (used, overflowed, total, documents, current session id, its first document),
  `texts.blob`/`texts.ends` (UTF-8 strings).
- `kinds.names.*` + `kinds.counts` int64; `themes.names.*` + `themes.weight` f64 (as of `themes.time`),
  `themes.time` f64 (unix seconds), `themes.count` int64; `functions.names.*` + `functions.ncalls` int64,
  `functions.tottime` f64, `functions.cumtime` f64.

Older schemas are migrated on load. Schema 1 (first release) had no co-access pairs and kept raw theme
counts without decay times. Schema 2 had no document frequencies or sessions (`slots` int64[5, k], a row
per field: count, err, heap key, two scratch; `meta` int64[3]): counts are kept as they are; an n-gram's
document frequency becomes its count capped at the number of queries, with df_err = df - 1 (it was in at
least one query); memory items, each access its own document, get df = count exactly; sessions start at
0 and count from the first observe after the migration. Writes are temp file + fsync + rename; a `lock`
file serialises processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jenova_fast import _fs
from jenova_fast._fs import user_component
from jenova_fast.cpa import config
from jenova_fast.cpa.counters import HeavyHitters, pack_strings, unpack_strings
from jenova_fast.cpa.kernels import COUNT, DF, DF_ERR, DOCS, ERR, LAST_DOC, META_SIZE, SLOT_FIELDS, TOTAL

log = logging.getLogger(__name__)

FORMAT = "jenova-fast-cpa"
SCHEMA = 3
STATE_FILE = "state.npz"
LOCK_FILE = "lock"


class StateError(Exception):
    """A state that this version must not touch (written by a newer jenova-fast)."""


def _new_ngrams() -> HeavyHitters:
    return HeavyHitters(config.NGRAM_TOPK, config.NGRAM_SKETCH_DEPTH, config.NGRAM_SKETCH_WIDTH)


def _new_items(k: int) -> HeavyHitters:
    return HeavyHitters(k, config.ITEM_SKETCH_DEPTH, config.ITEM_SKETCH_WIDTH)


@dataclass
class State:
    ngrams: HeavyHitters = field(default_factory=_new_ngrams)
    items: HeavyHitters = field(default_factory=lambda: _new_items(config.ITEM_TOPK))
    pairs: HeavyHitters = field(default_factory=lambda: _new_items(config.PAIR_TOPK))
    queries: int = 0
    words: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    # theme -> [weight as of time, time (unix s), mentions]
    themes: dict[str, list[float]] = field(default_factory=dict)
    # function -> [ncalls, tottime, cumtime]
    functions: dict[str, list[float]] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    generation: int = 0
    last_query_time: float | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        header = {"format": FORMAT, "schema": SCHEMA, "created": self.created, "saved": time.time(),
                  "generation": self.generation, "queries": self.queries, "words": self.words,
                  "half_life_days": config.THEME_HALF_LIFE_DAYS, "last_query_time": self.last_query_time}
        out: dict[str, np.ndarray] = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        out |= self.ngrams.arrays("ngrams") | self.items.arrays("items") | self.pairs.arrays("pairs")
        out |= pack_strings("kinds.names", list(self.kinds))
        out["kinds.counts"] = np.array(list(self.kinds.values()), dtype=np.int64)
        out |= pack_strings("themes.names", list(self.themes))
        t = np.array(list(self.themes.values()), dtype=np.float64).reshape(-1, 3)
        out |= {"themes.weight": t[:, 0].copy(), "themes.time": t[:, 1].copy(),
                "themes.count": t[:, 2].astype(np.int64)}
        out |= pack_strings("functions.names", list(self.functions))
        f = np.array(list(self.functions.values()), dtype=np.float64).reshape(-1, 3)
        out |= {"functions.ncalls": f[:, 0].astype(np.int64), "functions.tottime": f[:, 1].copy(),
                "functions.cumtime": f[:, 2].copy()}
        return out

    @classmethod
    def from_arrays(cls, z, header: dict) -> State:
        kinds = unpack_strings("kinds.names", z)
        themes = unpack_strings("themes.names", z)
        funcs = unpack_strings("functions.names", z)
        counts = z["kinds.counts"].tolist()
        weight, when, mentions = z["themes.weight"].tolist(), z["themes.time"].tolist(), z["themes.count"].tolist()
        ncalls, tot, cum = (z["functions.ncalls"].tolist(), z["functions.tottime"].tolist(),
                            z["functions.cumtime"].tolist())
        if not (len(kinds) == len(counts) and len(themes) == len(weight) == len(when) == len(mentions)
                and len(funcs) == len(ncalls) == len(tot) == len(cum)):
            raise ValueError("name and value arrays differ in length")
        return cls(
            ngrams=HeavyHitters.from_arrays("ngrams", z),
            items=HeavyHitters.from_arrays("items", z),
            pairs=HeavyHitters.from_arrays("pairs", z),
            queries=int(header["queries"]),
            words=int(header["words"]),
            kinds=dict(zip(kinds, counts, strict=True)),
            themes={k: [w, t, c] for k, w, t, c in zip(themes, weight, when, mentions, strict=True)},
            functions={k: [n, a, b] for k, n, a, b in zip(funcs, ncalls, tot, cum, strict=True)},
            created=float(header["created"]),
            generation=int(header["generation"]),
            last_query_time=None if header.get("last_query_time") is None else float(header["last_query_time"]),
        )


class _Members(dict):
    """npz members read eagerly (so the file can be closed), with migrations able to add members."""


def _migrate_1_to_2(members: _Members, header: dict) -> None:
    saved = float(header.get("saved", time.time()))
    counts = members.pop("themes.counts")
    members["themes.weight"] = counts.astype(np.float64)
    members["themes.time"] = np.full(counts.size, saved)
    members["themes.count"] = counts.astype(np.int64)
    members |= _new_items(config.PAIR_TOPK).arrays("pairs")


def _migrate_2_to_3(members: _Members, header: dict) -> None:
    queries = int(header["queries"])
    for prefix in ("ngrams", "items", "pairs"):
        slots, meta = members[f"{prefix}.slots"], members[f"{prefix}.meta"]
        if meta.size == META_SIZE:  # made new by an earlier migration
            continue
        count = slots[0]  # schema 2 rows: count, err, heap key, two scratch
        grown = np.zeros((slots.shape[1], SLOT_FIELDS), np.int64)
        grown[:, COUNT], grown[:, ERR] = count, slots[1]
        members[f"{prefix}.keys"] = slots[2].copy()
        meta3 = np.zeros(META_SIZE, np.int64)
        meta3[: meta.size] = meta
        if prefix == "ngrams":
            # one query per occurrence at most, and no more queries than were counted; at least one held it
            grown[:, DF] = np.minimum(count, queries)
            grown[:, DF_ERR] = np.maximum(grown[:, DF] - 1, 0)
            meta3[DOCS] = queries
        else:  # each access is its own document
            grown[:, DF] = count
            meta3[DOCS] = meta[TOTAL]
        grown[:, LAST_DOC] = -1
        members[f"{prefix}.slots"], members[f"{prefix}.meta"] = grown, meta3
    header.setdefault("last_query_time", None)


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def read(path: Path) -> State:
    """Load a state file (any known schema); ValueError/OSError/KeyError if it is damaged."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        members = _Members({name: z[name] for name in z.files})
    header = json.loads(members["header"].tobytes().decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("not a jenova-fast CPA state (header format)")
    schema = header.get("schema")
    if not isinstance(schema, int) or schema < 1:
        raise ValueError(f"bad schema {schema!r}")
    if schema > SCHEMA:
        raise StateError(f"{path} has CPA schema {schema}, newer than this jenova-fast understands "
                         f"({SCHEMA}); upgrade jenova-fast (pip install -U jenova-fast) or pass another "
                         "--state-dir")
    while schema < SCHEMA:
        MIGRATIONS[schema](members, header)
        schema += 1
        log.info("%s: migrated CPA state to schema %d", path, schema)
    return State.from_arrays(members, header)


def write(path: Path, state: State) -> None:
    write_npz(path, state.arrays())


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Crash-safe; np.savez never pickles plain numeric arrays (the stub types **kwds as allow_pickle)."""
    _fs.write_bytes_via(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def default_state_dir(user: str | None = None) -> Path:
    """`~/.jenova-ai/users/<user>/.cpa_state` (user: the OS user unless given)."""
    return _fs.jenova_home() / "users" / user_component(user or _fs.default_user()) / ".cpa_state"


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged state aside (never delete the user's data) and say where it went."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    log.warning("CPA state %s is unreadable (%s); moved it to %s and started fresh", path, reason, aside)
    return aside


LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, TypeError)


def load_or_fresh(path: Path) -> tuple[State, bool]:
    """(state, loaded): a fresh state when there is none or it is damaged (moved aside, warned)."""
    if not path.exists():
        return State(), False
    try:
        return read(path), True
    except StateError:
        raise
    except LOAD_ERRORS as exc:
        quarantine(path, f"{type(exc).__name__}: {exc}")
        return State(), False


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on `<state>/lock` for the whole load-modify-save."""
    # never through a symlink (one planted there would be opened for writing); private, as the state is
    fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
