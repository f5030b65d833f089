"""Python's `json`, as the reference script reads insights, with the two limits a prepare run fixes.

Shared by the pure twin (`_pipeline_py`), the history and the other sources; the native parser
(csrc/python_json.h) follows the same rules, and the differential tests hold them together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from jenova_fast.prepare.records import INT_MAX_DIGITS, MAX_DEPTH


class JSONRejected(ValueError):
    """Input that `json.loads` reads but a prepare run does not: nesting beyond MAX_DEPTH."""


def _int(text: str) -> int:
    """Python's int() of a JSON integer, with its default digit limit whatever this process has set."""
    if len(text) - text.startswith("-") > INT_MAX_DIGITS:
        raise JSONRejected(f"integer of more than {INT_MAX_DIGITS} digits")
    return int(text)


class _Members(list[tuple[str, object]]):
    """An object's (key, value) pairs, every duplicate key kept: the document as written. A value that a
    later duplicate key replaces is gone from the dict, but its nesting is still part of the document."""


def _depth(value: object) -> int:
    """Nesting depth, iteratively: an input may be deeper than Python's recursion limit allows."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, _Members):
            children: Iterable[object] = (member for _, member in item)
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def loads(text: str) -> object:
    """`json.loads`, the reference's reader: NaN, Infinity, integers of any size, floats that overflow to
    inf and lone surrogate escapes are all JSON here. Two limits are fixed rather than left to the running
    process: integers of at most INT_MAX_DIGITS digits (Python's default), nesting of at most MAX_DEPTH."""
    try:
        value = json.loads(text, parse_int=_int)
    except RecursionError as exc:
        raise JSONRejected("nested too deeply") from exc
    # The limit is the document's nesting, as the native parsers see it while they read: parsed again with
    # every member kept, so a deep value that a duplicate key later replaces still counts.
    if (
        text.count("[") + text.count("{") > MAX_DEPTH
        and _depth(json.loads(text, parse_int=_int, object_pairs_hook=_Members)) > MAX_DEPTH
    ):
        raise JSONRejected("nested too deeply")
    return value
