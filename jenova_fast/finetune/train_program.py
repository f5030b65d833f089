"""Route B: run the user's own llama.cpp `llama-finetune` program and guard its silent failures.

The program reads one text file, tokenizes it with BOS and WITHOUT parsing special tokens (so a rendered
`</s>` is trained as five characters, not as the end of turn), cuts windows of n_ctx tokens with stride
n_ctx/2 and trains. It aborts (exit 134) on fewer than n_ctx + 1 tokens, exits 0 having trained nothing
when the windows are too few, and exits 1 with an empty stderr when the model does not load: each of these
is checked before or after the run here, and its progress lines (`\r`-separated on stderr) are parsed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections import deque
from io import BufferedReader
from pathlib import Path
from typing import cast

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.metadata import open_reader
from jenova_fast.finetune.train_inprocess import Progress, ProgressCallback, TrainResult

log = logging.getLogger(__name__)

PROGRAM = "llama-finetune"
ENV_VAR = "JENOVA_LLAMA_FINETUNE"
# train: [▉▉▉     ] data=0000039/0000039 loss=4.02305±0.12394 acc=14.67±0.35% t=00:00:00 ETA=00:00:00
PROGRESS_LINE = re.compile(
    r"^(?P<phase>train|val):\s*\[.*?\]\s*data=(?P<i>\d+)/(?P<n>\d+)\s+loss=(?P<loss>[-+0-9.eEnaif]+)"
    r"(?:±\S+)?\s+acc=(?P<acc>[-+0-9.eEnaif]+)"
)


def find_program(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """`--llama-finetune PATH`, else $JENOVA_LLAMA_FINETUNE, else `llama-finetune` on PATH."""
    for candidate in (explicit, os.environ.get(ENV_VAR)):
        if candidate:
            path = Path(candidate)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise FinetuneError(f"{path}: not an executable llama-finetune; build it with `cmake --build build "
                                    "--target llama-finetune` in llama.cpp (see docs/finetune.md)")
            return path
    found = shutil.which(PROGRAM)
    return Path(found) if found else None


def program_windows(n_tokens: int, n_ctx: int, val_split: float) -> int:
    """Training windows llama-finetune will make from a file of n_tokens tokens (its own arithmetic)."""
    ndata = max(0, (n_tokens - n_ctx - 1) // (n_ctx // 2))
    return int(ndata * (1.0 - val_split))


def _tensor_digest(path: Path) -> str:
    """Hash of the tensors that training changes, to catch a run that wrote the model back unchanged."""
    digest = hashlib.sha256()
    for tensor in open_reader(path).tensors:
        if tensor.name != "token_embd.weight":
            digest.update(tensor.data.tobytes())
    return digest.hexdigest()


def train_program(
    program: Path,
    base: Path,
    out: Path,
    text_file: Path,
    n_text_tokens: int,
    *,
    n_ctx: int,
    epochs: int,
    lr: float,
    threads: int,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    val_split = 0.0  # the true held-out set is scored by `evaluate`, on records the program never sees
    windows = program_windows(n_text_tokens, n_ctx, val_split)
    if windows < 1:
        raise FinetuneError(
            f"{text_file}: {n_text_tokens} tokens make no training window for llama-finetune at --ctx {n_ctx} "
            f"(it needs {n_ctx + n_ctx // 2 + 1}; with fewer it aborts or exits 0 having trained nothing); "
            "add records or lower --ctx"
        )
    cmd = [os.fspath(program), "-m", os.fspath(base), "-f", os.fspath(text_file), "-o", os.fspath(out),
           "-c", str(n_ctx), "-b", str(n_ctx), "-ub", str(n_ctx), "-t", str(threads), "-lr", f"{lr:g}",
           "-epochs", str(epochs), "-val-split", f"{val_split:g}", "-opt", "adamw"]
    log.info("running %s", " ".join(cmd))
    lines = _LineReader(epochs, progress)
    # OpenMP threads that spin between parallel regions made the program 7x slower on a busy 2-core machine
    # (35 s vs 4.7 s for 98 steps of the tiny model, OMP_WAIT_POLICY=passive); the user may set it otherwise
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stderr is not None
        buffer = b""
        stream = cast(BufferedReader, proc.stderr)  # Popen's pipe is buffered: read1 returns what is there
        while chunk := stream.read1(4096):
            *complete, buffer = re.split(rb"[\r\n]", buffer + chunk)
            for raw in complete:
                lines.feed(raw.decode("utf-8", "replace").strip())
        rc = proc.wait()
    result = lines.finish()
    _check_run(program, rc, "\n".join(lines.tail), result, base, out, n_ctx)
    return result


class _LineReader:
    """llama-finetune's stderr: its progress lines become steps, per-epoch losses and progress; the last 40
    other lines are kept for the error message."""

    def __init__(self, epochs: int, progress: ProgressCallback | None) -> None:
        self.epochs, self.progress = epochs, progress
        self.started = time.perf_counter()
        self.result = TrainResult()
        self.tail: deque[str] = deque(maxlen=40)
        self.epoch = self.last_i = self.steps_before = 0
        self.last_train: dict[str, float] | None = None

    def feed(self, line: str) -> None:
        match = PROGRESS_LINE.match(line)
        if not match:
            if line:
                self.tail.append(line)
            return
        if match["phase"] != "train":
            return
        i, n = int(match["i"]), int(match["n"])
        if i < self.last_i:  # the counter restarts with each epoch
            self.result.epochs.append(self.last_train or {})
            self.steps_before += self.last_i
            self.epoch += 1
        self.last_i = i
        self.last_train = {"train_loss": float(match["loss"]), "train_accuracy": float(match["acc"]) / 100}
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            done, total = self.steps_before + i, n * self.epochs
            self.progress(Progress("train", self.epoch + 1, self.epochs, i, n, self.last_train["train_loss"],
                                   self.last_train["train_accuracy"], elapsed, elapsed / done * (total - done)))

    def finish(self) -> TrainResult:
        if self.last_train is not None:
            self.result.epochs.append(self.last_train)
        self.result.steps = self.steps_before + self.last_i
        self.result.seconds = time.perf_counter() - self.started
        return self.result


def _check_run(program: Path, rc: int, stderr_tail: str, result: TrainResult, base: Path, out: Path,
               n_ctx: int) -> None:
    """A run that failed, trained nothing or wrote nothing new is an error that says which, with its output."""
    if rc != 0:
        if rc in (134, -6):
            why = "llama.cpp aborted (GGML_ASSERT); usually too few tokens for --ctx"
        elif not re.search(r"error|fail", stderr_tail, re.IGNORECASE):
            why = "it gave no reason, which is how it reports a model it cannot load"
        else:
            why = "see its output below"
        raise FinetuneError(f"{program} exited with {rc}: {why}\n{stderr_tail}".rstrip())
    if result.steps == 0:
        raise FinetuneError(f"{program} exited 0 but trained zero steps (too few tokens for --ctx {n_ctx})\n"
                            f"{stderr_tail}".rstrip())
    if not out.is_file():
        raise FinetuneError(f"{program} exited 0 but wrote no {out}\n{stderr_tail}".rstrip())
    if _tensor_digest(out) == _tensor_digest(base):
        raise FinetuneError(f"{program} wrote {out} with weights identical to the base: nothing was trained "
                            "(are the tensors F32?)")
