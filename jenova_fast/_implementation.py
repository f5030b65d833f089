"""`JENOVA_FAST_PURE=1` forces the pure twins everywhere; each package's `_impl.py` asks here.

Without it the native code is required: a missing extension is an error, never a silent fallback.
"""

from __future__ import annotations

import os


def pure_requested() -> bool:
    return os.environ.get("JENOVA_FAST_PURE", "").strip().lower() in ("1", "true", "yes", "on")
