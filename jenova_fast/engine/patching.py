"""Apply the engine's patches to a pristine llama.cpp tree: strict unified diffs, idempotent, no git needed.

Strict on purpose: the tree is one pinned commit, so every hunk must match where it says, line for line. A hunk
that matches neither the old nor the new text means the pin moved without the patches: regenerate them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    """A patch that does not apply to the pinned tree; the message names the patch, file and line."""


@dataclass
class _Hunk:
    old_start: int  # 1-based, as in the diff
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)


@dataclass
class _FilePatch:
    path: str
    hunks: list[_Hunk] = field(default_factory=list)


def header(patch: Path) -> str:
    """The text above the first diff: what the patch changes, why, and its upstream status."""
    text = patch.read_text(encoding="utf-8")
    return text.split("\ndiff --git ", 1)[0].removesuffix("\n---").strip()


def parse(patch: Path) -> list[_FilePatch]:
    files: list[_FilePatch] = []
    hunk: _Hunk | None = None
    old_left = new_left = 0  # lines of the current hunk still to read, by its header
    for line in patch.read_text(encoding="utf-8").splitlines():
        if hunk is not None and (old_left or new_left):
            kind, text = line[:1] or " ", line[1:]
            if kind == "\\":
                continue  # "\ No newline at end of file"
            if kind in (" ", "-"):
                hunk.old.append(text)
                old_left -= 1
            if kind in (" ", "+"):
                hunk.new.append(text)
                new_left -= 1
        elif line.startswith("+++ "):
            files.append(_FilePatch(line[4:].removeprefix("b/")))
        elif (match := _HUNK.match(line)) and files:
            hunk = _Hunk(int(match.group(1)))
            old_left, new_left = int(match.group(2) or 1), int(match.group(4) or 1)
            files[-1].hunks.append(hunk)
    if not files or not all(f.hunks for f in files) or old_left or new_left:
        raise PatchError(f"{patch}: not a complete unified diff")
    return files


def apply(patch: Path, tree: Path) -> bool:
    """Apply `patch` to `tree`; False if it was already applied. Raises PatchError, changing nothing, when a
    hunk matches neither side."""
    results: dict[Path, list[str]] = {}
    applied = already = 0
    for file in parse(patch):
        target = tree / file.path
        if not target.is_file():
            raise PatchError(f"{patch.name}: {file.path} is not in {tree}; regenerate the patch against the pin")
        lines = results.get(target) or target.read_text(encoding="utf-8").split("\n")
        shift = 0
        for hunk in file.hunks:
            at = hunk.old_start - 1 + shift
            if lines[at:at + len(hunk.old)] == hunk.old:
                lines[at:at + len(hunk.old)] = hunk.new
                shift += len(hunk.new) - len(hunk.old)
                applied += 1
            elif lines[at:at + len(hunk.new)] == hunk.new:
                shift += len(hunk.new) - len(hunk.old)
                already += 1
            else:
                raise PatchError(f"{patch.name}: the hunk at {file.path}:{hunk.old_start} does not match the tree in "
                                 f"{tree}; regenerate the patch against the pinned llama.cpp (engine/pin.py)")
        results[target] = lines
    if applied and already:
        raise PatchError(f"{patch.name}: half applied to {tree}; start from a fresh tree (jenova-fast engine clean)")
    if applied:
        for target, lines in results.items():
            target.write_text("\n".join(lines), encoding="utf-8")
    return applied > 0
