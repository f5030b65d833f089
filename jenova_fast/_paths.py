"""Names that become path components, and directories that only this user may write in.

A user name (from `--user`, or `CPA(user=...)`) is one component of `~/.jenova-ai/users/<user>/`: a name
that is empty, `.`, `..` or holds a `/` would point the run somewhere else. The CPA state dir holds what the
user talks about and a Numba cache that Numba loads with pickle: whoever can write in it can run code as the
user, so it is created private (0700) and refused when another user owns it (or the symlink naming it), or
when every user may write in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafePathError(ValueError):
    """A name or directory that would let the run read or write somewhere it was not meant to; the message
    names it and the fix."""


def user_component(name: str, option: str = "--user") -> str:
    """`name`, checked to be a single path component (a user name), else UnsafePathError."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise UnsafePathError(f"{option} {name!r} is not a user name: it would name a folder outside "
                              f"~/.jenova-ai/users; give the bare name (no '/', not '.' or '..')")
    return name


def private_dir(path: str | os.PathLike[str], what: str, option: str) -> Path:
    """Create `path` (mode 0700; its missing parents with the default mode) if need be, and check that no
    other user can write in it: it (or a symlink naming it) must not be owned by another user, and it must
    not be writable by every user. Returns it; raises UnsafePathError naming the problem and the fix."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.geteuid()
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        raise UnsafePathError(f"{what} {path} is a symlink owned by another user (uid {link.st_uid}), who can "
                              f"point it anywhere; remove it, or choose another {option}")
    st = os.stat(path)
    if st.st_uid != me:
        raise UnsafePathError(f"{what} {path} belongs to another user (uid {st.st_uid}); writing there would "
                              f"let them change what this run reads back; choose another {option}")
    if st.st_mode & stat.S_IWOTH:
        raise UnsafePathError(f"{what} {path} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}); "
                              f"run `chmod o-w {path}` (better: chmod 700), or choose another {option}")
    return path
