"""Terminal progress: a redrawn bar on a TTY, a plain line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Shows done/total, rate and ETA. Call `update()` as often as you like; it throttles itself."""

    def __init__(self, label: str, unit: str, stream: TextIO | None = None, log_final: bool = False) -> None:
        """`log_final`: a log (not a terminal) also gets the forced final state, e.g. an epoch's last loss."""
        self.label, self.unit = label, unit
        self.log_final = log_final
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._interval = 0.1 if self.tty else 5.0
        self._last = 0.0 if self.tty else time.monotonic()  # a log gets no line for a short run
        self._drawn = False
        self._state: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None, elapsed: float, extra: str = "", force: bool = False) -> None:
        """`force` draws now (on a terminal), e.g. the final state, unless it is already shown."""
        now = time.monotonic()
        force = force and (self.tty or self.log_final) and self._state != (done, total)
        if not force and now - self._last < self._interval:
            return
        self._last = now
        self._state = (done, total)
        rate = done / elapsed if elapsed > 0 else 0.0
        if total:
            fraction = min(done / total, 1.0)
            eta = (total - done) / rate if rate > 0 else 0.0
            counts = f"{done:,}/{total:,} {self.unit} {fraction:6.1%}"
            tail = f"ETA {_duration(eta)}"
        else:
            fraction, counts, tail = None, f"{done:,} {self.unit}", "counting…" if self.tty else ""
        # slow work (a training step of a real model) reads better as seconds per item than as 0 items/s
        speed = f"{rate:,.0f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/{self.unit.rstrip('s')}"
        stats = f"{speed} {extra}".rstrip()
        if self.tty:
            bar = ""
            if fraction is not None:
                filled = int(fraction * 24)
                bar = "[" + "#" * filled + "-" * (24 - filled) + "] "
            self.stream.write(f"\r\x1b[2K{self.label} {bar}{counts}  {stats}  {tail}")
            self._drawn = True
        else:
            self.stream.write(f"{self.label}: {counts}, {stats} {tail}".rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False
