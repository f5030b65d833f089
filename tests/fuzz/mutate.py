"""A JSON-aware mutator for the prepare and history harnesses (libFuzzer's custom mutator).

Byte mutations rarely turn a valid document into one that is still valid but sits exactly at one of the
rules' edges, where the native and pure parsers are most likely to part: nesting at MAX_DEPTH +- 1, a key
repeated with a value only the Python dialect reads, a key spelled with escapes, a value only the Python
dialect reads, repeated byte order marks. Half the time this mutator parses the input (keeping duplicate
keys), makes one such change to the tree and writes it back out; otherwise, or when the input is not JSON,
libFuzzer's own mutation runs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from jenova_fast.prepare.records import MAX_DEPTH

BOM = b"\xef\xbb\xbf"
KEYS = ("content", "topic", "user", "timestamp", "cortex_id", "user_message", "ai_message", "x")
ODD_VALUES: tuple[Any, ...] = (
    float("nan"),
    float("inf"),
    float("-inf"),
    "1e400",  # raw number text, see _dump
    "-0",
    "9" * 4300,
    "9" * 4301,
    "\ud800",
    "\udfff\ud83d",
    "\U0001f600",
    "",
    None,
    True,
    [],
    {},
    "\u2028\x7f\x00\"\\",
)


class Raw(str):
    """Number text written as it is."""


class Pairs(list[tuple[str, Any]]):
    """An object as its members, duplicates kept."""


def _load(text: str) -> Any:
    return json.loads(text, object_pairs_hook=Pairs, parse_float=Raw, parse_int=Raw, parse_constant=Raw)


def _key(key: str, rng: random.Random) -> str:
    """A key as JSON, sometimes with its first character as a \\u escape ("c\\u006fntent" is "content")."""
    if key[:1].isascii() and key[:1].isalnum() and rng.random() < 0.2:
        return f'"\\u{ord(key[0]):04x}' + json.dumps(key)[2:]
    return json.dumps(key, ensure_ascii=rng.random() < 0.5)


def _dump(value: Any, rng: random.Random) -> str:
    """JSON text of a tree from _load (Raw numbers, Pairs objects) or of ODD_VALUES, with any spacing. One
    Python frame per level (no generators): a tree at the depth limit stays within the recursion limit."""
    space = rng.choice(("", " ", "\n", "\t", "\r\n "))
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)  # NaN, Infinity, -Infinity
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=rng.random() < 0.5)
    parts = []
    if isinstance(value, Pairs | dict):
        for k, v in value if isinstance(value, Pairs) else value.items():
            parts.append(f"{_key(k, rng)}:{space}{_dump(v, rng)}")
        return "{" + space + ("," + space).join(parts) + space + "}"
    if isinstance(value, list):
        for v in value:
            parts.append(_dump(v, rng))
        return "[" + ("," + space).join(parts) + "]"
    return json.dumps(value)


def _containers(value: Any, depth: int, out: list[tuple[Any, int]]) -> None:
    if isinstance(value, Pairs | list):
        out.append((value, depth))
        for child in value:
            _containers(child[1] if isinstance(value, Pairs) else child, depth + 1, out)


def _odd_value(rng: random.Random) -> Any:
    value = rng.choice(ODD_VALUES)
    return Raw(value) if isinstance(value, str) and value and value[0] in "-19" else value


def mutate_tree(tree: Any, rng: random.Random) -> Any:
    """One edge-seeking change to a parsed document (in place where it can be; returns the new root)."""
    if not isinstance(tree, Pairs):
        tree = Pairs([("content", "c"), ("x", tree)])
    nodes: list[tuple[Any, int]] = []
    _containers(tree, 1, nodes)
    node, depth = rng.choice(nodes)
    op = rng.randrange(5)
    if op == 0 and isinstance(node, Pairs) and node:  # a key again, later, with an odd or the same value
        key, value = rng.choice(node)
        node.insert(rng.randrange(len(node) + 1), (key, _odd_value(rng) if rng.random() < 0.7 else value))
    elif op == 1:  # nest a value to just below, at or just past the limit
        levels = MAX_DEPTH - depth + rng.choice((-1, 0, 0, 1, 1, 2))
        inner: Any = _odd_value(rng) if rng.random() < 0.5 else Raw("1")
        for _ in range(max(levels, 0)):
            inner = [inner] if rng.random() < 0.8 else Pairs([(rng.choice(KEYS), inner)])
        member = (rng.choice(KEYS), inner)
        if isinstance(node, Pairs):
            node.insert(rng.randrange(len(node) + 1), member)
        else:
            node.insert(rng.randrange(len(node) + 1), inner)
    elif op == 2:  # a known key with an odd value
        member = (rng.choice(KEYS), _odd_value(rng))
        if isinstance(node, Pairs):
            node.insert(rng.randrange(len(node) + 1), member)
        else:
            node.insert(rng.randrange(len(node) + 1), member[1])
    elif op == 3 and node:  # drop an item
        del node[rng.randrange(len(node))]
    else:  # swap two items
        if len(node) > 1:
            i, j = rng.randrange(len(node)), rng.randrange(len(node))
            node[i], node[j] = node[j], node[i]
    return tree


def custom_mutator(data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes]) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return fallback(data, max_size)
    boms = 0
    while data.startswith(BOM):
        data, boms = data[len(BOM) :], boms + 1
    try:
        tree = _load(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return fallback(BOM * boms + data, max_size)
    if rng.random() < 0.1:
        boms = rng.choice((0, 1, 2, 3))
    try:
        text = _dump(mutate_tree(tree, rng), rng)
        out = BOM * boms + text.encode("utf-8", "surrogatepass")
    except RecursionError:
        return fallback(data, max_size)
    return out if len(out) <= max_size else fallback(data, max_size)


def custom_line_mutator(data: bytes, max_size: int, seed: int, fallback: Callable[[bytes, int], bytes]) -> bytes:
    """For JSONL: the same on one line of the file (a one-line file goes through custom_mutator)."""
    lines = data.split(b"\n")
    if len(lines) < 2:
        return custom_mutator(data, max_size, seed, fallback)
    i = random.Random(seed).randrange(len(lines))
    lines[i] = custom_mutator(lines[i], max_size, seed, fallback).replace(b"\n", b" ")
    out = b"\n".join(lines)
    return out if len(out) <= max_size else fallback(data, max_size)
