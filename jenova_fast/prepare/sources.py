"""`--sources`: what else the assistant learned about the user, beside its insight files.

- assumptions: `<user dir>/assumptions.json`, `{"verified": [...], "unverified": [...], "true": [...],
  "false": [...]}` of `{content, username, timestamp, cortex_id}`; the `verified` and `true` items become
  records (what the assistant confirmed), the others are guesses or known wrong and are left out.
- cortex: `<user dir>/cortex/cognitive_graph.json`, `{"nodes": {id: {id, type, content, user, timestamp,
  metadata}}, "links": [...]}`; nodes of type `document` and `insight` become records.

A user dir is the parent of a `users/<user>/insights` root, or each `users/<user>` under a root that holds a
whole `~/.jenova-ai`. Each source's record has its own wording (records.py); a bad file or item is a
counted skip like a bad insight file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jenova_fast.prepare import records
from jenova_fast.prepare.pyjson import loads
from jenova_fast.prepare.records import SOURCES  # noqa: F401  (re-exported)
from jenova_fast.prepare.report import Skip, SkipReason

ASSUMPTION_LISTS = ("verified", "true")
CORTEX_TYPES = ("document", "insight")


@dataclass(frozen=True)
class Item:
    """One record of an extra source: its question and answer, identity, and metadata."""

    source: str
    user_text: str
    assistant_text: str
    path: str  # FILE#where, for the report and --with-metadata
    timestamp: str | None
    identity: bytes  # what --eval-fraction hashes: the cortex_id, else `path`


def user_dirs(roots: list[str]) -> list[Path]:
    found: list[Path] = []
    for root in map(Path, roots):
        candidates = []
        if root.name == "insights" and root.parent.parent.name == "users":
            candidates.append(root.parent)
        users = root / "users"
        if users.is_dir():
            candidates.extend(sorted((p for p in users.iterdir() if p.is_dir()), key=lambda p: os.fsencode(p.name)))
        for candidate in candidates:
            if candidate not in found:
                found.append(candidate)
    return found


def _read(path: Path) -> object | Skip:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Skip(str(path), SkipReason.VANISHED)
    except OSError as exc:
        return Skip(str(path), SkipReason.UNREADABLE, exc.strerror or "")
    try:
        return loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        return Skip(str(path), SkipReason.INVALID_UTF8)
    except ValueError:
        return Skip(str(path), SkipReason.INVALID_JSON)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _identity(cortex_id: object, where: str) -> bytes:
    if isinstance(cortex_id, str) and cortex_id:
        return cortex_id.encode("utf-8", "surrogatepass")
    return where.encode("utf-8", "surrogateescape")


def iter_assumptions(user_dir: Path) -> Iterator[Item | Skip]:
    path = user_dir / "assumptions.json"
    if not path.is_file():
        return
    data = _read(path)
    if isinstance(data, Skip):
        yield data
        return
    if not isinstance(data, dict):
        yield Skip(str(path), SkipReason.NOT_OBJECT)
        return
    for name in ASSUMPTION_LISTS:
        items = data.get(name) or []
        if not isinstance(items, list):
            yield Skip(f"{path}#{name}", SkipReason.WRONG_TYPE)
            continue
        for index, item in enumerate(items):
            where = f"{path}#{name}/{index}"
            if not isinstance(item, dict):
                yield Skip(where, SkipReason.NOT_OBJECT)
                continue
            checked = _content_and_user(item, "username", where)
            if isinstance(checked, Skip):
                yield checked
                continue
            content, user = checked
            yield Item(
                "assumptions",
                records.ASSUMPTION_QUESTION,
                records.assumption_answer(content, user),
                where,
                item.get("timestamp") if isinstance(item.get("timestamp"), str) else None,
                _identity(item.get("cortex_id"), where),
            )


def _content_and_user(obj: dict[str, Any], user_key: str, where: str) -> tuple[str, str] | Skip:
    """The checks an assumption item and a cortex node share with an insight: non-empty string content and
    a string user (the default when absent); else the skip, with the insight's reasons."""
    content = obj.get("content")
    if content is None or content == "":
        return Skip(where, SkipReason.NO_CONTENT)
    user = obj.get(user_key)
    user = records.DEFAULT_USER if user is None else user
    if not isinstance(content, str) or not isinstance(user, str):
        return Skip(where, SkipReason.WRONG_TYPE)
    return content, user


def iter_cortex(user_dir: Path) -> Iterator[Item | Skip]:
    path = user_dir / "cortex" / "cognitive_graph.json"
    if not path.is_file():
        return
    data = _read(path)
    if isinstance(data, Skip):
        yield data
        return
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict):
        yield Skip(str(path), SkipReason.NOT_OBJECT)
        return
    for node_id, node in nodes.items():
        where = f"{path}#{node_id}"
        if not isinstance(node, dict) or node.get("type") not in CORTEX_TYPES:
            continue  # other kinds of node (concerns, links' ends) are not training material
        checked = _content_and_user(node, "user", where)
        if isinstance(checked, Skip):
            yield checked
            continue
        content, user = checked
        yield Item(
            "cortex",
            records.cortex_question(node["type"]),
            records.cortex_answer(node["type"], content, user),
            where,
            node.get("timestamp") if isinstance(node.get("timestamp"), str) else None,
            _identity(node.get("id", node_id), where),
        )


def iter_items(roots: list[str], sources: tuple[str, ...]) -> Iterator[Item | Skip]:
    """The assumptions' then the cortex's records of every user dir, in that order."""
    dirs = user_dirs(roots)
    if "assumptions" in sources:
        for user_dir in dirs:
            yield from iter_assumptions(user_dir)
    if "cortex" in sources:
        for user_dir in dirs:
            yield from iter_cortex(user_dir)
