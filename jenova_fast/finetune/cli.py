"""`python -m jenova_fast.finetune` / `jenova-fast finetune` and `jenova-fast install-model`: thin layers
over `finetune()` and `install_model()` / `rollback()` that add a progress display and a summary line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from jenova_fast.finetune import install
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.pipeline import TRAINERS, FinetuneConfig, finetune
from jenova_fast.finetune.runtime import llama_cpp_module
from jenova_fast.finetune.train_inprocess import Progress
from jenova_fast.progress import ProgressBar


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jenova-fast finetune",
        description="Fine-tune a llama.cpp GGUF model on finetune/train.jsonl and install it.",
    )
    p.add_argument("--base", "--model-base", required=True, type=Path, help="base model .gguf (any quantization)")
    p.add_argument("--data", "--train-data", type=Path, default=Path("finetune/train.jsonl"),
                   help="chat records from `jenova-fast prepare` (default: %(default)s)")
    p.add_argument("--out", "--model-out", type=Path, default=Path("models/jenova.gguf"),
                   help="where to write the fine-tuned model (default: %(default)s; an existing file is kept "
                        "as <name>.prev.gguf)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the data (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window, a multiple of 256 (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the free cores)")
    p.add_argument("--eval-fraction", type=float, default=0.05,
                   help="fraction of records held out to measure loss (default: %(default)s)")
    p.add_argument("--template", default=None,
                   help="chat template for bases without one: chatml, llama-3, mistral-instruct, zephyr | FILE.jinja")
    p.add_argument("--trainer", choices=TRAINERS, default="inprocess",
                   help="inprocess (llama.cpp via llama-cpp-python, default) or your own llama-finetune program")
    p.add_argument("--llama-finetune", type=Path, default=None, help="path of the llama-finetune program")
    p.add_argument("--install", action="store_true",
                   help="also install the result as MODELS_DIR/jenova.gguf (previous kept as jenova.prev.gguf)")
    p.add_argument("--models-dir", type=Path, default=install.DEFAULT_MODELS_DIR, help="default: %(default)s")
    p.add_argument("--report", type=Path, default=None, help="JSON report path (default: beside --data)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary line")
    return p


class ProgressDisplay:
    """One progress bar per epoch and phase (the project's shared bar), with loss and accuracy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: ProgressBar | None = None
        self.key: tuple[str, int] | None = None
        self.phase_start = 0.0

    def __call__(self, p: Progress) -> None:
        if (p.phase, p.epoch) != self.key:
            self.close()
            self.key, self.phase_start = (p.phase, p.epoch), p.elapsed
            label = f"{'train' if p.phase == 'train' else 'held-out'} {p.epoch}/{p.epochs}"
            self.bar = ProgressBar(label, "steps" if p.phase == "train" else "windows", self.stream,
                                   log_final=True)
        assert self.bar is not None
        last = p.step == p.steps
        self.bar.update(p.step, p.steps, p.elapsed - self.phase_start,
                        extra=f"loss {p.loss:.4f} acc {100 * p.accuracy:.1f}%", force=last)
        if last:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer announces every file at INFO


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet)
    config = FinetuneConfig(
        base=args.base, data=args.data, out=args.out, epochs=args.epochs, lr=args.lr, n_ctx=args.ctx,
        threads=args.threads, eval_fraction=args.eval_fraction, template=args.template, trainer=args.trainer,
        llama_finetune=args.llama_finetune, install=args.install, models_dir=args.models_dir, report=args.report,
        seed=args.seed,
    )
    display = None if args.quiet else ProgressDisplay(sys.stderr)
    try:
        report = finetune(config, progress=display)
    except FinetuneError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if display is not None:
            display.close()
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"smoke check: {report.smoke_prompt[:60]!r} -> {report.smoke_reply[:80]!r}", file=sys.stderr)
    placed = f"installed {report.installed}" if report.installed else f"wrote {report.out}"
    kept = f" (previous kept as {report.previous})" if report.previous else ""
    print(f"finetune: held-out loss {report.heldout_loss_before:.3f} -> {report.heldout_loss_after:.3f} nats/token, "
          f"{report.steps} steps in {report.seconds_train:.1f} s ({1000 * report.seconds_per_step:.1f} ms/step, "
          f"{report.threads} threads); {placed}{kept}; report {report.report}")
    return 0


def install_model_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="jenova-fast install-model",
        description="Install a model as models/jenova.gguf (previous kept as jenova.prev.gguf), or roll back.",
    )
    p.add_argument("path", nargs="?", type=Path, help="the .gguf to install (validated first)")
    p.add_argument("--rollback", action="store_true", help="swap jenova.gguf and jenova.prev.gguf back")
    p.add_argument("--models-dir", type=Path, default=install.DEFAULT_MODELS_DIR, help="default: %(default)s")
    args = p.parse_args(argv)
    _setup_logging(quiet=True)
    if args.rollback == (args.path is not None):
        p.error("give either a model PATH or --rollback")
    target = args.models_dir / install.INSTALLED_NAME
    try:
        llama_cpp_module()  # validation loads the model with llama.cpp
        if args.rollback:
            result = install.rollback(target)
            print(f"install-model: rolled back {result.installed}"
                  + (f"; the replaced model is now {result.previous}" if result.previous else ""))
        else:
            result = install.install_model(args.path, target)
            print(f"install-model: installed {args.path} as {result.installed}"
                  + (f"; previous kept as {result.previous}" if result.previous else ""))
    except FinetuneError as exc:
        print(f"install-model: error: {exc}", file=sys.stderr)
        return 1
    return 0
