"""Ctrl-C and SIGTERM under `_signals.run`, at moments the test chooses: each child process signals itself
at one exact point (inside main(), outside main()'s `try`, in a deferred block, during the interpreter's
shutdown, twice), so every outcome is deterministic. The crash figures (tests/crash) signal the real
commands at random moments."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

HEADER = """\
import os, signal, sys, threading, time
from jenova_fast._signals import deferred, run, status
SIG = signal.{sig}
def kill():
    os.kill(os.getpid(), SIG)
    time.sleep(0.5)  # the handler runs before this returns
"""

CALLBACK = """
import ctypes
def sort_with_a_callback():  # libc's qsort calls back into Python; the first call is signalled
    calls = []
    def compare(a, b):
        calls.append(1)
        if len(calls) == 1:
            kill()
        return 0
    values = (ctypes.c_int * 4)(4, 3, 2, 1)
    compare_c = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(compare)
    ctypes.CDLL(None).qsort(values, 4, ctypes.sizeof(ctypes.c_int), compare_c)
"""

CASES = {
    # main() catches the interrupt and says what was left
    "inside main": ("""
def main():
    try:
        kill()
    except KeyboardInterrupt:
        print("t: interrupted; the output was left as it was", file=sys.stderr)
        return status()
    return 0
""", ["t: interrupted; the output was left as it was"]),
    # it lands outside main()'s try (an import, the argument parsing): run() says it
    "outside main's try": ("""
def main():
    kill()
    return 0
""", ["t: interrupted"]),
    # a deferred block (where _fs creates and removes temp files) runs to its end first
    "in a deferred block": ("""
def main():
    try:
        with deferred():
            kill()
            print("t: the block ran to its end", file=sys.stderr)
        print("t: not reached", file=sys.stderr)
    except KeyboardInterrupt:
        print("t: interrupted after the block", file=sys.stderr)
        return status()
    return 0
""", ["t: the block ran to its end", "t: interrupted after the block"]),
    # after main() returned, while threading._shutdown joins a thread: was `Exception ignored ...`, exit 0
    "in threading's shutdown": ("""
def late():
    while threading.main_thread().is_alive():  # until the interpreter's shutdown has begun
        time.sleep(0.01)
    kill()
def main():
    threading.Thread(target=late).start()
    return 0
""", ["t: interrupted while exiting; the run had finished"]),
    # ... in an atexit hook
    "in an atexit hook": ("""
import atexit
def main():
    atexit.register(kill)
    print("done")
    return 0
""", ["t: interrupted while exiting; the run had finished"]),
    # a library turns it into another exception (CPython's PyCapsule_Import makes it an ImportError)
    "turned into another exception": ("""
def main():
    try:
        kill()
    except KeyboardInterrupt as exc:
        raise ImportError("numpy: PyCapsule_Import could not import module 'datetime'") from exc
    return 0
""", ["t: interrupted"]),
    # inside a callback from C, which drops it: raised again when the next deferred block ends ...
    "in a callback from C": (CALLBACK + """
def main():
    sort_with_a_callback()
    try:
        with deferred():
            pass
    except KeyboardInterrupt:
        print("t: interrupted at the next deferred block", file=sys.stderr)
        return status()
    return 0
""", ["t: interrupted at the next deferred block"]),
    # ... or, with none before the end, said as the run exits
    "in a callback from C, none after": (CALLBACK + """
def main():
    sort_with_a_callback()
    return 0
""", ["t: interrupted; the run went on to its end"]),
    # a second signal while the first one's cleanup runs: leave at once
    "twice": ("""
def main():
    try:
        kill()
    except KeyboardInterrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
        print("t: not reached", file=sys.stderr)
    return 0
""", ["t: interrupted again; leaving at once (the next run removes what this one leaves)"]),
}


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_ends_the_run_with_one_line_and_its_status(case, sig):
    body, lines = CASES[case]
    code = HEADER.format(sig=sig) + textwrap.dedent(body) + "run(main, 't')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not a background job's
    assert done.stderr.splitlines() == lines, done.stderr
    assert done.returncode == 128 + getattr(signal, sig)
    assert done.stdout in ("", "done\n")


def test_an_ignored_signal_stays_ignored():
    """`nohup cmd &`-style: a signal the parent ignores is not turned back on."""
    code = HEADER.format(sig="SIGINT") + textwrap.dedent("""
        def main():
            print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM).__name__)
            kill()
            return 0
        run(main, 't')
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert (done.returncode, done.stdout, done.stderr) == (0, "True _handler\n", "")


def test_a_clean_run_exits_with_main_s_status():
    code = "from jenova_fast._signals import run\nrun(lambda: 3, 't')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (3, "")


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_between_a_temp_file_s_block_and_its_removal_leaves_no_temp_file(sig, tmp_path):
    """The first signal can land in the bytecodes between the end of `_fs.temporary`'s block and the deferred()
    block that removes its temp file; `run` removes what is left then. Here it is sent at that exact moment."""
    code = HEADER.format(sig=sig) + textwrap.dedent(f"""
        from pathlib import Path
        from jenova_fast import _fs, _signals
        armed = []
        enter = _signals.deferred.__enter__
        def enter_late(self):
            if armed:
                armed.clear()
                kill()  # before this block counts as deferred, as a real signal may land
            return enter(self)
        _signals.deferred.__enter__ = enter_late
        def main():
            with _fs.temporary(Path({str(tmp_path / "out.bin")!r})) as tmp:
                tmp.write_bytes(b"partial")
                armed.append(1)
            return 0
        run(main, 't')
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (done.returncode, done.stderr) == (128 + getattr(signal, sig), "t: interrupted\n")
    assert list(tmp_path.iterdir()) == []
