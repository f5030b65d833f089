"""Numba's on-disk cache inside the state dir, the compile history, and warm start.

Kernels are lazy dispatchers. `bind(state_dir)` points each one's cache at `<state>/numba_cache/` (a cache
locator, so it works whether or not numba was imported before); `ensure(name)` compiles or loads the
explicit signature and appends one JSON line to `<state>/compile_history.jsonl`; `warm_start()` does that
for every signature recorded there, so a new process pays no compile on its first observe.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numba
from numba.core import config as numba_config
from numba.core.caching import NullCache

from jenova_fast._fs import private_dir
from jenova_fast.cpa import kernels

log = logging.getLogger(__name__)

HISTORY_FILE = "compile_history.jsonl"
CACHE_DIR = "numba_cache"

_bound_root: str | None = None


def jit_enabled() -> bool:
    return not numba_config.DISABLE_JIT  # type: ignore[attr-defined]  # set from the environment at import


def _cpu_name() -> str:
    try:
        import llvmlite.binding as llvm  # type: ignore[import-untyped]

        return str(llvm.get_host_cpu_name())
    except Exception:  # llvmlite without a host target: still record something useful
        return platform.processor() or platform.machine()


def _cache_for(root: str, py_func):
    from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator

    class StateDirLocator(UserProvidedCacheLocator):
        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            # skip UserProvidedCacheLocator's NUMBA_CACHE_DIR check; keep the source-file checks
            return super(UserProvidedCacheLocator, cls).from_function(py_func, py_file)

    class StateDirCacheImpl(CompileResultCacheImpl):
        _locator_classes = (StateDirLocator,)  # type: ignore[assignment]  # numba only iterates it

    class StateDirFunctionCache(FunctionCache):
        _impl_class = StateDirCacheImpl

    return StateDirFunctionCache(py_func)


def bind(state_dir: Path | None) -> None:
    """Point every kernel's on-disk cache into `state_dir` (None: no disk cache)."""
    global _bound_root
    if not jit_enabled():
        return
    root = None if state_dir is None else str(Path(state_dir) / CACHE_DIR)
    if root == _bound_root:
        return
    if state_dir is not None:
        # Numba loads its cache index with pickle: no other user may be able to write there.
        private_dir(state_dir, "CPA state dir", "--state-dir")
        private_dir(Path(state_dir) / CACHE_DIR, "Numba cache", "--state-dir")
    for name in kernels.SIGNATURES:
        dispatcher = getattr(kernels, name)
        if root is None:
            dispatcher._cache = NullCache()
        else:
            dispatcher._cache = _cache_for(root, dispatcher.py_func)
    _bound_root = root


def ensure(name: str, state_dir: Path | None):
    """The kernel `name`, compiled for its explicit signature (from the bound cache when possible)."""
    dispatcher = getattr(kernels, name)
    if not jit_enabled():
        return dispatcher
    sig = kernels.SIGNATURES[name]
    if sig.args in dispatcher.overloads:
        return dispatcher
    hits = dispatcher.stats.cache_hits[sig]
    start = time.perf_counter()
    dispatcher.compile(sig)
    seconds = time.perf_counter() - start
    hit = dispatcher.stats.cache_hits[sig] > hits
    log.debug("kernel %s %s in %.3fs", name, "loaded from cache" if hit else "compiled", seconds)
    if state_dir is not None:
        record = {
            "ts": time.time(),
            "kernel": name,
            "signature": str(sig),
            "seconds": round(seconds, 6),
            "cache": "hit" if hit else "miss",
            "numba": numba.__version__,
            "cpu": _cpu_name(),
            "pid": os.getpid(),
        }
        _append_line(Path(state_dir) / HISTORY_FILE, json.dumps(record, sort_keys=True))
    return dispatcher


def _append_line(path: Path, line: str) -> None:
    # one O_APPEND write per record: concurrent processes never interleave within a line. Never through a
    # symlink (one planted there would have us append to whatever file it names); private, as the state is.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def read_history(state_dir: Path) -> tuple[list[dict], int]:
    """Records of the compile history, and how many unreadable lines were skipped."""
    path = Path(state_dir) / HISTORY_FILE
    records: list[dict] = []
    skipped = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    skipped += 1
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("kernel"), str):
                    records.append(rec)
                else:
                    skipped += 1
    except FileNotFoundError:
        pass
    if skipped:
        log.warning("%s: skipped %d unreadable line(s) of the compile history", path, skipped)
    return records, skipped


def warm_start(state_dir: Path) -> list[str]:
    """Compile or load, now, every kernel whose current signature the history records."""
    if not jit_enabled():
        return []
    records, _ = read_history(state_dir)
    wanted = {r["kernel"] for r in records
              if r["kernel"] in kernels.SIGNATURES and r.get("signature") == str(kernels.SIGNATURES[r["kernel"]])}
    for name in sorted(wanted):
        ensure(name, state_dir)
    return sorted(wanted)
