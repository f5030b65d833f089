"""What a fleet run did, per user (`--report fleet.json`), and the live lines that show it as it happens."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from jenova_fast.fleet.chain import STATES

OUTCOMES = ("installed", "skipped", "failed")


@dataclass
class UserOutcome:
    """One user's result: `installed`, `skipped` (fresh) or `failed` (with the task that failed and why)."""

    user: str
    outcome: str
    fingerprint: str | None = None
    store_files: int | None = None
    stage: str | None = None  # failed: the task that failed (prepare, observe, finetune, install)
    error: str | None = None
    records: int | None = None
    eval_records: int | None = None
    skipped_files: int | None = None
    observed: int | None = None  # insights newly counted into the CPA state
    train_spec: str | None = None
    steps: int | None = None
    heldout_loss_before: float | None = None
    heldout_loss_after: float | None = None
    threads: int | None = None
    candidate_reused: bool = False
    model: str | None = None
    previous: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per task
    workers: dict[str, str] = field(default_factory=dict)  # per task: the worker that ran it
    attempts: dict[str, int] = field(default_factory=dict)  # per state: how often a task entered it (reruns > 1)

    def line(self) -> str:
        """One line for the terminal."""
        if self.outcome == "failed":
            return f"{self.user} failed in {self.stage}: {self.error}"
        if self.outcome == "skipped":
            return f"{self.user} skipped: fresh (its store and options have not changed since its model was installed)"
        loss = (f"held-out loss {self.heldout_loss_before:.3f} -> {self.heldout_loss_after:.3f}"
                if self.heldout_loss_before is not None and self.heldout_loss_after is not None else "")
        reruns = {k: v - 1 for k, v in self.attempts.items() if v > 1}
        return (f"{self.user} installed {self.model}: {self.records} records, {loss}, {self.steps} steps, "
                f"{sum(self.seconds.values()):.1f} s" + (f" (reruns: {reruns})" if reruns else ""))


@dataclass
class FleetReport:
    root: str
    base: str
    scheduler: str
    workers: dict[str, int]  # trainer workers at the start: address -> threads
    options: dict[str, Any]
    started: str
    seconds: float = 0.0
    users: list[UserOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {o: sum(u.outcome == o for u in self.users) for o in OUTCOMES}

    @property
    def failed(self) -> list[UserOutcome]:
        return [u for u in self.users if u.outcome == "failed"]

    def summary(self) -> str:
        c = self.counts()
        return (f"{len(self.users)} user(s): {c['installed']} installed, {c['skipped']} skipped (fresh), "
                f"{c['failed']} failed in {self.seconds:.1f} s on {len(self.workers)} trainer worker(s)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}

    def write(self, path: str | os.PathLike[str]) -> None:
        from jenova_fast._fs import write_bytes_via

        data = (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        write_bytes_via(Path(path), lambda f: f.write(data))


class StatusLines:
    """A live line per state (how many users are in it, and which) redrawn in place on a terminal; elsewhere
    one line per change of a user's state. Thread-safe: Dask's events arrive on the client's own thread."""

    def __init__(self, stream: TextIO, users: list[str], *, live: bool | None = None, quiet: bool = False) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.quiet = quiet
        self.state: dict[str, str] = dict.fromkeys(users, "queued")
        self.start = time.monotonic()
        self.drawn = 0
        self.lock = threading.Lock()

    def __call__(self, user: str, state: str, info: dict[str, Any]) -> None:
        with self.lock:
            if self.state.get(user) == state and state != "training":
                return
            self.state[user] = state
            if self.quiet:
                return
            if self.live:
                self._draw()
            elif isinstance(info.get("outcome"), UserOutcome):
                self.stream.write(f"fleet: {info['outcome'].line()}\n")
            elif state != "queued":
                where = f" on {info['worker']}" if info.get("worker") else ""
                self.stream.write(f"fleet: {user} {state}{where}\n")
                self.stream.flush()

    def lines(self) -> list[str]:
        by_state: dict[str, list[str]] = {s: [] for s in STATES}
        for user, state in self.state.items():
            by_state.setdefault(state, []).append(user)
        out = [f"fleet: {len(self.state)} users, {time.monotonic() - self.start:.0f} s"]
        for state, users in by_state.items():
            names = ", ".join(users[:6]) + (f", ... (+{len(users) - 6})" if len(users) > 6 else "")
            out.append(f"  {state:<10} {len(users):>5}  {names}")
        return out

    def _draw(self) -> None:
        lines = self.lines()
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)

    def message(self, text: str) -> None:
        """A line of its own, below the live lines (which are drawn anew under it)."""
        with self.lock:
            if self.live and self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
                self.drawn = 0
            self.stream.write(text + "\n")
            if self.live and not self.quiet:
                self._draw()
            self.stream.flush()
