"""A realistic, seeded synthetic insight store: for `jenova-fast demo`, the tests and the benchmarks.

It writes what real stores hold (INSIGHTS.md): the three layouts, `indent=4`, `\\uXXXX` escapes from
older versions beside raw UTF-8, unicode topic folders with spaces and emoji, fields that vary by version,
a `concerns.json`, and about 0.5% corrupt files spread over every kind of damage prepare must survive.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from jenova_fast.prepare.report import SkipReason
from jenova_fast.progress import ProgressBar

MANIFEST = ".jenova-demo.json"  # hidden, so prepare never reads it
CORRUPT_FRACTION = 0.005
CORRUPT_KINDS: tuple[SkipReason, ...] = (
    SkipReason.INVALID_JSON,
    SkipReason.INVALID_UTF8,
    SkipReason.EMPTY_FILE,
    SkipReason.NOT_OBJECT,
    SkipReason.WRONG_TYPE,
    SkipReason.NO_CONTENT,
)

TOPICS = [
    "machine learning",
    "cooking",
    "gardening",
    "philosophy",
    "music 🎵",
    "travel plans",
    "café culture",
    "東京 trip",
    "Ελληνική γλώσσα",
    "naïve questions",
    "running",
    "sleep",
    "home lab",
    "rust programming",
    "python",
    "family",
    "books 📚",
    "climate",
    "chess",
    "photography",
    "jazz",
    "career",
    "meditation",
    "économie",
    "math",
    "bird watching",
    "coffee ☕",
    "history",
    "astronomy 🔭",
    "woodworking",
    "Ürün fikirleri",
    "emoji 🤖 talk",
    "mental models",
    "budgeting",
    "language learning",
    "hiking",
    "open source",
    "writing",
]
USERS = ["alice", "bob", "carol", "josé", "dmitri"]
WORDS = (
    "the user prefers concise answers and often returns to ideas about learning systems memory habits "
    "curiosity evidence practice feedback small experiments weekly routine tools notes patterns trust "
    "reasoning context privacy local models quiet mornings long walks careful planning trade-offs values "
    "remembers asks compares doubts explores enjoys avoids questions believes notices wants values"
).split()
FLAVOUR = [
    "",
    " “quoted”",
    ' with "double quotes"',
    " a back\\slash",
    " a\ttab",
    "\nnew line",
    " emoji 😀🎉",
    " 日本語のメモ",
    " naïve café",
    " control\u0001char",
    " end.",
]


@dataclass
class Manifest:
    """What was planted, so tests can check a run exactly."""

    insights: int
    seed: int
    records: int = 0
    corrupt: dict[str, list[str]] = field(default_factory=dict)  # reason -> relative paths


def _content(rng: random.Random) -> str:
    length = min(max(int(rng.lognormvariate(5.1, 0.6)), 50), 1200)  # median ~170 chars
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words).capitalize() + "."
    if rng.random() < 0.3:
        text += rng.choice(FLAVOUR)
    return text


def _insight(rng: random.Random, version: tuple[int, int], topic: str, user: str, when: datetime) -> dict:
    obj: dict[str, object] = {"topic": topic, "content": _content(rng), "timestamp": when.isoformat()}
    if version >= (1, 1):
        obj["user"] = user
    if version >= (1, 2):
        obj["related_concerns"] = rng.choice([[], [], [f"{topic} concern"]])
    if version >= (2, 1):
        a, b, c, d, e = (rng.getrandbits(bits) for bits in (32, 16, 12, 12, 48))
        obj["cortex_id"] = f"{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{e:012x}"
    keys = list(obj)
    if rng.random() < 0.3:  # key order varies between versions
        rng.shuffle(keys)
    if rng.random() < 0.02:  # files rewritten from model output carry extra keys
        keys.append("model_note")
        obj["model_note"] = "rewritten"
    return {k: obj[k] for k in keys}


def _corrupt(kind: SkipReason, good: dict, rng: random.Random) -> bytes:
    text = json.dumps(good, indent=4, ensure_ascii=False).encode()
    if kind is SkipReason.INVALID_JSON:
        return text[: rng.randrange(1, len(text) - 1)]
    if kind is SkipReason.INVALID_UTF8:
        cut = text.index(b'"content"') + 12
        return text[:cut] + b"\xff\xfe" + text[cut:]
    if kind is SkipReason.EMPTY_FILE:
        return b""
    if kind is SkipReason.NOT_OBJECT:
        return json.dumps([good], indent=4).encode()
    if kind is SkipReason.WRONG_TYPE:
        return json.dumps({**good, "content": rng.choice([42, ["a", "list"], {"nested": True}])}, indent=4).encode()
    if kind is SkipReason.NO_CONTENT:
        bad = dict(good)
        if rng.random() < 0.5:
            bad["content"] = ""
        else:
            bad.pop("content")
        return json.dumps(bad, indent=4).encode()
    raise ValueError(kind)


def write_store(
    root: Path | str, insights: int, seed: int = 0, progress: Callable[[int, int], object] | None = None
) -> Manifest:
    """Write `insights` insight files (some corrupt) under `root`, laid out like a real ~/.jenova-ai.

    `progress(done, total)` is called every few thousand files."""
    root = Path(root)
    rng = random.Random(seed)
    manifest = Manifest(insights=insights, seed=seed)
    n_corrupt = max(round(insights * CORRUPT_FRACTION), len(CORRUPT_KINDS) if insights >= 50 else 0)
    corrupt_at = dict(zip(rng.sample(range(insights), n_corrupt), (CORRUPT_KINDS * n_corrupt)[:n_corrupt], strict=True))
    start = datetime(2025, 1, 1, 8, 0, 0)
    made_dirs: set[Path] = set()
    for i in range(insights):
        roll = rng.random()
        user = rng.choice(USERS)
        topic = rng.choice(TOPICS)
        if roll < 0.1:  # v1.0: ~/.jenova-ai/insights/<topic>/
            version, folder = (1, 0), root / "insights" / topic
        elif roll < 0.2:  # v1.1: ~/.jenova-ai/insights/<user>/<topic>/
            version, folder = (1, 1), root / "insights" / user / topic
        else:  # v1.2+: ~/.jenova-ai/users/<user>/insights/<user>/<topic>/
            version = rng.choice([(1, 2), (2, 0), (2, 1), (5, 0)])
            folder = root / "users" / user / "insights" / user / topic
        when = start + timedelta(seconds=37 * i, microseconds=rng.randrange(1_000_000))
        obj = _insight(rng, version, topic, user, when)
        if folder not in made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            made_dirs.add(folder)
        path = folder / f"insight_{when:%Y%m%d_%H%M%S}.json"
        kind = corrupt_at.get(i)
        if kind is None:
            data = json.dumps(obj, indent=4, ensure_ascii=version < (2, 1)).encode()
            manifest.records += 1
        else:
            data = _corrupt(kind, obj, rng)
            manifest.corrupt.setdefault(kind.value, []).append(os.fspath(path.relative_to(root)))
        path.write_bytes(data)
        if progress is not None and i % 2048 == 2047:
            progress(i + 1, insights)
    for concerns_dir in {root / "insights", *(root / "users" / u / "insights" for u in USERS)}:
        if concerns_dir.is_dir():
            concerns = {t: {"description": f"open questions about {t}", "related_concerns": []} for t in TOPICS[:5]}
            (concerns_dir / "concerns.json").write_text(json.dumps(concerns, indent=4), encoding="utf-8")
    (root / MANIFEST).write_text(json.dumps(asdict(manifest), ensure_ascii=False), encoding="utf-8")
    return manifest


DUPLICATE_KINDS = ("exact", "spacing", "word", "append", "reorder")
_APPENDED = ("as noted before", "which still holds", "more or less", "at least for now")


def plant_duplicates(root: Path | str, count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """Copy `count` valid insights of the store at `root` beside themselves, one second newer, each changed by
    one of DUPLICATE_KINDS in turn: the same content; other case and spacing; a word replaced; a short phrase
    appended; its two halves swapped (a sentence reordered). Returns (original, copy, kind), paths relative
    to `root`: the truth a de-duplication is measured against."""
    root = Path(root)
    rng = random.Random(seed)
    sources = []
    for path in sorted(root.rglob("insight_*.json")):
        try:
            obj = json.loads(path.read_bytes())
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("content"), str) and obj["content"]:
            sources.append((path, obj))
    planted = []
    for n, (path, obj) in enumerate(rng.sample(sources, count)):
        kind = DUPLICATE_KINDS[n % len(DUPLICATE_KINDS)]
        words = obj["content"].split(" ")
        if kind == "spacing":
            content = "  ".join(words).upper()
        elif kind == "word":
            at = rng.randrange(len(words))
            words[at] = rng.choice([w for w in WORDS if w != words[at]])
            content = " ".join(words)
        elif kind == "append":
            content = obj["content"] + " " + rng.choice(_APPENDED) + "."
        elif kind == "reorder":
            half = len(words) // 2
            content = " ".join(words[half:] + words[:half])
        else:
            content = obj["content"]
        copy = dict(obj, content=content)
        if isinstance(obj.get("timestamp"), str):
            copy["timestamp"] = (datetime.fromisoformat(obj["timestamp"]) + timedelta(seconds=1)).isoformat()
        if "cortex_id" in obj:
            copy["cortex_id"] = f"{rng.getrandbits(32):08x}-0000-4000-a000-{rng.getrandbits(48):012x}"
        target = path.with_name(path.stem + "_dup.json")
        target.write_text(json.dumps(copy, indent=4, ensure_ascii=False), encoding="utf-8")
        planted.append((os.fspath(path.relative_to(root)), os.fspath(target.relative_to(root)), kind))
    return planted


def read_manifest(root: Path | str) -> Manifest | None:
    try:
        data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Manifest(**data)


def ensure_store(
    root: Path | str, insights: int, seed: int = 0, progress: Callable[[int, int], object] | None = None
) -> Manifest:
    """Reuse the store at `root` if it was made with the same parameters, else write it."""
    root = Path(root)
    found = read_manifest(root)
    if found is not None and (found.insights, found.seed) == (insights, seed):
        return found
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no demo store of {insights} insights (seed {seed}); "
            "pass an empty or new --dir, or the --insights/--seed it was made with"
        )
    return write_store(root, insights, seed, progress)


def main(argv: list[str] | None = None) -> int:
    from jenova_fast.prepare.cli import main as prepare_main

    parser = argparse.ArgumentParser(
        prog="jenova-fast demo",
        description="Write a synthetic insight store (seeded, with ~0.5%% corrupt files) and prepare it.",
    )
    parser.add_argument("--insights", type=int, default=2000, metavar="N", help="insight files (default %(default)s)")
    parser.add_argument("--dir", default="demo-store", help="where to write the store (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="finetune/train.jsonl", help="default %(default)s")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    bar = None if args.quiet else ProgressBar("demo store", "files")
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        assert bar is not None
        bar.update(done, total, time.monotonic() - started)

    try:
        manifest = ensure_store(args.dir, args.insights, args.seed, show if bar else None)
    except (OSError, ValueError) as exc:
        print(f"jenova-fast demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar:
            bar.close()
    if not args.quiet:
        planted = sum(len(paths) for paths in manifest.corrupt.values())
        print(f"demo store {args.dir}: {manifest.insights:,} insight files, {planted} deliberately corrupt")
    prepare_args = ["--insights-dir", args.dir, "--output", args.output]
    if args.threads:
        prepare_args += ["--threads", str(args.threads)]
    if args.quiet:
        prepare_args.append("--quiet")
    return prepare_main(prepare_args, prog="jenova-fast demo")
