"""Ctrl-C and SIGTERM end every command the same way at any moment after its entry point starts: one line,
exit 130 (SIGINT) or 143 (SIGTERM), no traceback, no temp file left.

`run(main, prog)` is the body of every entry point (`jenova-fast`, `python -m jenova_fast...`):

- the first signal raises KeyboardInterrupt in the main thread, SIGTERM included (its default action would
  skip every `finally`, and so the removal of temp files); main() catches it and says in one line what was
  left, or `run` does when it lands outside main()'s `try`;
- inside `deferred()` (where `_fs` creates a temp file and where it removes one) it is raised when the block
  ends, so a temp file is never created without its cleanup armed nor left half-removed;
- a KeyboardInterrupt that a callback from C dropped (ctypes prints it as `Exception ignored` and goes on) is
  silenced and raised again at the end of the next `deferred()` block; one that a library turned into another
  exception (CPython's PyCapsule_Import makes it an ImportError, as numpy's import shows) is the interrupt
  when it leaves main();
- once main() has returned, the work is done: a signal is said in one line and the process ends with 128 +
  the signal after the interpreter's shutdown, instead of a KeyboardInterrupt inside `threading._shutdown`
  or an atexit hook (Python prints those as `Exception ignored` and exits 0);
- a second signal leaves at once (os._exit): the user insists; the next run removes a temp file left;
- the temp files alive when the run ends interrupted (`on_interrupt`) are removed by `run` itself: the first
  signal can land in the few bytecodes between the block that made one and the deferred() block that removes it.

Before the entry point runs (the interpreter's start-up, the imports of `python -m jenova_fast.prepare`'s
package), Python's own handling applies: a SIGINT there is its KeyboardInterrupt traceback. Library callers
of the packages keep their own handlers: nothing here is installed on import.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    prog = "jenova-fast"
    installed = False
    first: int | None = None  # the signal that interrupts the run
    raised = False  # ... has been raised as KeyboardInterrupt (not still deferred)
    deferring = 0  # depth of deferred() blocks in the main thread
    lost = False  # the KeyboardInterrupt was dropped by a callback from C
    done = False  # main() has returned: the rest is the interpreter's shutdown
    exiting = False  # past our atexit hook: the end of the shutdown


_state = _State()
# removals of the temp files alive now (`_fs`), by path: run by `run` when the run ends interrupted
_pending: dict[object, Callable[[], object]] = {}


def on_interrupt(key: object, cleanup: Callable[[], object] | None) -> None:
    """Arm `cleanup` (or, with None, disarm the one under `key`) for a run that ends interrupted."""
    if cleanup is None:
        _pending.pop(key, None)
    else:
        _pending[key] = cleanup


def _clean_up() -> None:
    for key, cleanup in list(_pending.items()):
        try:
            cleanup()
        except OSError:  # gone already, or not ours to remove: the next run sweeps it
            pass
        _pending.pop(key, None)


def status() -> int:
    """The exit status of an interrupted command: 128 + the signal (130 for a KeyboardInterrupt that did not
    come through `run`, e.g. main() called in-process)."""
    return 128 + (_state.first or signal.SIGINT)


def _say(text: str) -> None:
    """One line on stderr, by fd: a handler may have interrupted a write to sys.stderr itself."""
    try:
        os.write(2, f"{_state.prog}: {text}\n".encode(errors="replace"))
    except OSError:  # stderr closed or a pipe whose reader left
        pass


def _leave(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe, or a write this handler interrupted: leaving anyway
            pass
    os._exit(code)


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _state.first is not None:
        _say("interrupted again; leaving at once (the next run removes what this one leaves)")
        _leave(status())
    _state.first = signum
    if _state.done:
        _say("interrupted while exiting; the run had finished")
        if _state.exiting:
            _leave(status())
        return  # the shutdown goes on; _at_exit ends it with status()
    if not _state.deferring:
        _state.raised = True
        raise KeyboardInterrupt(signal.Signals(signum).name)


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Our KeyboardInterrupt, raised inside a callback from C (a ctypes log callback of llama.cpp, say): the
    callback's caller drops it, so it is not printed but raised again when the next deferred() block ends."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _state.first is not None:
        _state.raised, _state.lost = False, True
        return
    sys.__unraisablehook__(unraisable)


def _at_exit() -> None:
    """Registered before anything of ours, so it runs after every other atexit hook of ours. An interrupted
    run ends here with its status: past this point, a KeyboardInterrupt that was raised (and caught) inside
    an `exec` of a string (dataclasses make their methods so) would still make Python kill itself with
    SIGINT as it exits, SIGTERM's 143 included."""
    _state.exiting = True
    if _state.first is not None:
        if _state.lost and not _state.raised:
            _say("interrupted; the run went on to its end")
        _leave(status())


class deferred:  # used as a function: `with deferred():`
    """A block that a signal does not interrupt: it is raised as KeyboardInterrupt when the block ends (in
    the main thread, and only under `run`; elsewhere this does nothing)."""

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            _state.deferring += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        _state.deferring -= 1
        if not _state.deferring and _state.first is not None and not _state.raised and not _state.done:
            _state.raised = True
            raise KeyboardInterrupt(signal.Signals(_state.first).name)


def run(main: Callable[[], int | None], prog: str) -> NoReturn:
    """Run `main()` under the handling above and exit with its status."""
    _state.prog = prog
    if not _state.installed:
        _state.installed = True
        atexit.register(_at_exit)
        sys.unraisablehook = _unraisable
        for signum in SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup` / a background job: stays ignored
                signal.signal(signum, _handler)
    try:
        try:
            code = main()
        finally:
            _state.done = True
            if _state.first is not None:
                _clean_up()
    except KeyboardInterrupt:
        _say("interrupted")
        code = status()
    except Exception:
        if _state.first is None:
            raise
        _say("interrupted")  # the KeyboardInterrupt became another exception on its way out
        code = status()
    sys.exit(code)
