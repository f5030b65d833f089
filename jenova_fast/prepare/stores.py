"""Where insight stores live: the current layout and the two older ones (see INSIGHTS.md)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from jenova_fast._fs import default_user, jenova_home, user_component


class StoreNotFoundError(FileNotFoundError):
    """No insight store where one was asked for; the message says how to point at one."""


def resolve_roots(
    insights_dir: str | os.PathLike[str] | None = None,
    *,
    user: str | None = None,
    all_users: bool = False,
) -> list[str]:
    """The insight trees to read, in the order their records are written."""
    hint = "pass --insights-dir DIR, --user NAME or --all-users, or make a demo store with `jenova-fast demo`"
    if insights_dir is not None:
        root = Path(insights_dir)
        if not root.is_dir():
            what = "is not a directory" if root.exists() else "does not exist"
            raise StoreNotFoundError(f"insight store {root} {what}; {hint}")
        return [_clean(root)]
    home = jenova_home()
    if all_users:
        users = home / "users"
        roots = sorted((p / "insights" for p in _subdirs(users) if (p / "insights").is_dir()), key=_key)
        if (home / "insights").is_dir():  # v1.0 / v1.1 stores
            roots.append(home / "insights")
        if not roots:
            raise StoreNotFoundError(f"no insight stores under {home}; {hint}")
        return [_clean(p) for p in roots]
    name = user_component(user or default_user())  # never `..` or a path: one folder of users/
    candidates = [home / "users" / name / "insights", home / "insights" / name]
    if user is None:
        candidates.append(home / "insights")
    for candidate in candidates:
        if candidate.is_dir():
            return [_clean(candidate)]
    raise StoreNotFoundError(f"no insight store for user {name!r} at {candidates[0]}; {hint}")


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def _key(path: Path) -> bytes:
    return os.fsencode(path)


def _clean(path: Path) -> str:
    return os.fspath(path)


_INSIGHT_NAME = re.compile(r"insight_(\d{8})_(\d{6})")


def insight_time(path: str) -> float:
    """When an insight was written: from its file name (insight_YYYYMMDD_HHMMSS), else its mtime."""
    m = _INSIGHT_NAME.search(os.path.basename(path))
    if m:
        try:
            return time.mktime(time.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S"))
        except (ValueError, OverflowError):
            pass
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()
