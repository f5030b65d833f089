"""`python -m jenova_fast.finetune` / `jenova-fast finetune` and `jenova-fast install-model`: thin layers
over `finetune()` and `install_model()` / `rollback()` that add a progress display and a summary line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from jenova_fast._fs import BusyError
from jenova_fast._signals import status as interrupted_status
from jenova_fast.engine import ENGINES
from jenova_fast.finetune import install
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.pipeline import TRAINERS, FinetuneConfig, FinetuneReport, finetune
from jenova_fast.finetune.runtime import llama_cpp_module
from jenova_fast.finetune.train_inprocess import Progress
from jenova_fast.prepare.cli import system_arg
from jenova_fast.progress import ProgressBar


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jenova-fast finetune",
        description="Fine-tune a llama.cpp GGUF model on finetune/train.jsonl and install it. Settings left out are "
                    "chosen from the data; the plan line says each one and why.",
        epilog=_cache_line(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", "--model-base", required=True, type=Path, help="base model .gguf (any quantization)")
    p.add_argument("--data", "--train-data", type=Path, default=Path("finetune/train.jsonl"),
                   help="chat records from `jenova-fast prepare` (default: %(default)s)")
    p.add_argument("--out", "--model-out", type=Path, default=Path("models/jenova.gguf"),
                   help="where to write the fine-tuned model (default: %(default)s; an existing file is kept "
                        "as <name>.prev.gguf)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the data (default: enough for about 48 steps, 3 to 20, stopping early once the "
                        "training answer loss stops falling)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate (default: 1e-4 for 135M trained parameters, scaled by 1/sqrt(params))")
    p.add_argument("--ctx", type=int, default=None,
                   help="tokens per window, a multiple of 256 (default: the smallest that holds the longest record)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the free cores)")
    p.add_argument("--eval-fraction", type=float, default=None,
                   help="fraction of records held out to measure loss (default: 5%%; none in a store of fewer "
                        "than 20 records, whose loss is then measured on the training records)")
    p.add_argument("--system", type=system_arg, default=None, metavar="TEXT|@FILE",
                   help="the assistant's system prompt: opens every record (instead of the template's default, "
                        "e.g. SmolLM2's) and is written into the model's metadata (jenova.system_prompt)")
    p.add_argument("--packing", choices=("records", "stream"), default="records",
                   help="records (default): whole records per window, never one record's end trained into the "
                        "next; stream: one stream cut every --stride tokens, as llama-finetune does")
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
    p.add_argument("--train", default=None, metavar="SPEC",
                   help="what to train: all | last:N (last N blocks + output norm + head) | attn | ffn | head | "
                        "norms | tensor-name globs, comma-separated (default: all if it fits in memory, else the "
                        "largest last:N that does)")
    p.add_argument("--requantize", default=None, metavar="TYPE",
                   help="quantize the trained tensors back: 'base' (each to its type in the base) or Q8_0, Q6_K, "
                        "Q4_K, ... (default: they stay F32)")
    p.add_argument("--stride", default=None, type=stride_arg,
                   help="tokens between training windows: N, 'half' (ctx/2, the default: each token trained twice "
                        "per epoch) or 'ctx' (once, half the steps)")
    p.add_argument("--gpu-layers", type=int, default=0,
                   help="layers to offload to the GPU (-1: all); needs llama-cpp-python built with CUDA, Metal or "
                        "Vulkan (docs/finetune.md)")
    p.add_argument("--max-memory", type=size_arg, default=None, metavar="SIZE",
                   help="memory the run may use, e.g. 6G (default: what the machine has available)")
    p.add_argument("--eval-data", type=Path, default=None,
                   help="held-out records of their own (prepare --eval-fraction's eval.jsonl) instead of a split")
    p.add_argument("--plot", type=Path, default=None, help="write train and held-out loss against steps to a PNG")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="the llama.cpp to train with: patched (`jenova-fast engine build`: the backward pass as GEMM, "
                        "LayerNorm/GELU models whole, answer-only loss), stock (llama-cpp-python's), or auto: "
                        "patched when built (default)")
    p.add_argument("--loss", choices=("answer", "all"), default=None,
                   help="answer: train the assistant's answers, not the questions (default on the patched engine); "
                        "all: every token (the stock engine's only choice)")
    p.add_argument("--adapter", default=None, metavar="lora[:RANK]",
                   help="train a LoRA adapter (default rank 16) over the frozen base, on the matrices --train names "
                        "(default: every attention and FFN projection), and write it to models/jenova-lora.gguf "
                        "(a few MB; llama.cpp's --lora and llama-cpp-python's lora_path load it); patched engine")
    p.add_argument("--lora-alpha", type=float, default=None,
                   help="the adapter's update is scaled by alpha/rank (default: alpha = rank)")
    p.add_argument("--merge", type=Path, default=None, metavar="FILE.gguf",
                   help="with --adapter: also write the base with the adapter folded in, requantized to the base's "
                        "types, for runtimes that cannot load adapters")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="keep only each block's output from the forward pass and compute the rest again in the "
                        "backward pass: far less memory (LoRA on a 1B base at ctx 512: 3.7 -> 2.1 GiB) for one "
                        "more forward pass (patched engine)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the summary line")
    return p


def _cache_line() -> str:
    from jenova_fast.finetune.working_copy import CACHE_MAX_AGE_DAYS, CACHE_MAX_BYTES, cache_dir, cache_usage

    files, size = cache_usage()
    return (f"working copies (the trained tensors in F32): {cache_dir()} holds {files} file(s), "
            f"{size / 2**20:.0f} MiB; each is removed after {CACHE_MAX_AGE_DAYS} days unused, the oldest first "
            f"beyond {CACHE_MAX_BYTES / 2**30:.0f} GiB; delete the folder to clear it ($XDG_CACHE_HOME moves it)")


def stride_arg(text: str) -> int | str:
    if text in ("ctx", "half"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of tokens, 'half' or 'ctx'") from None


def size_arg(text: str) -> int:
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number, unit = text.upper().rstrip("IB"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a size such as 6G, 512M or 8000000000") from None


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


def config_from_args(argv: list[str]) -> FinetuneConfig:
    """The FinetuneConfig of a `jenova-fast finetune` command line (the benchmarks run the same flags)."""
    return _config(_parser().parse_args(argv))


def _config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        base=args.base, data=args.data, out=args.out, epochs=args.epochs, lr=args.lr, n_ctx=args.ctx,
        threads=args.threads, eval_fraction=args.eval_fraction, template=args.template, trainer=args.trainer,
        llama_finetune=args.llama_finetune, install=args.install, models_dir=args.models_dir, report=args.report,
        seed=args.seed, train=args.train, requantize=args.requantize,
        stride=args.stride, gpu_layers=args.gpu_layers, memory_available=args.max_memory, eval_data=args.eval_data,
        plot=args.plot, system=args.system, packing=args.packing, engine=args.engine, loss=args.loss,
        adapter=args.adapter, lora_alpha=args.lora_alpha, merge=args.merge,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet)
    config = _config(args)
    display = None if args.quiet else ProgressDisplay(sys.stderr)
    try:
        report = finetune(config, progress=display)
    except FinetuneError as exc:
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 1
    except BusyError as exc:  # another finetune is writing the same --out
        print(f"finetune: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the disk filled up or a folder is not writable, mid-run: nothing was installed
        print(f"finetune: error: {exc.filename or args.out}: {exc.strerror or exc}; {args.out} was not touched; "
              "free space there or choose another --out / --models-dir", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if display is not None:
            display.close()
        print(f"finetune: interrupted; nothing was written and {args.out} was not touched", file=sys.stderr)
        return interrupted_status()
    finally:
        if display is not None:
            display.close()
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if report.recall_note:
        print(f"warning: {report.recall_note}", file=sys.stderr)
    if not args.quiet:
        if report.stopped_early:
            print(f"stopped early {report.stopped_early}", file=sys.stderr)
        if report.example:
            ex = report.example
            print(f"example: {ex['question'][:70]!r}\n  before: {ex['before'][:100]!r}\n"
                  f"  after:  {ex['after'][:100]!r}", file=sys.stderr)
        print(f"trained {report.train_spec} ({len(report.trained_tensors)} tensors, "
              f"{report.trained_params / 1e6:.1f}M parameters; {report.train_choice})", file=sys.stderr)
    print(summary_line(report))
    return 0


def summary_line(report: FinetuneReport) -> str:
    placed = f"installed {report.installed}" if report.installed else f"wrote {report.out}"
    kept = f" (previous kept as {report.previous})" if report.previous else ""
    return (f"finetune: said back {report.recall_before} -> {report.recall_after} of {report.recall_asked} training "
            f"answers, {_loss_name(report)} {report.heldout_loss_before:.3f} -> {report.heldout_loss_after:.3f} "
            f"nats/answer token ({report.engine} engine, {_trained_on(report)}), {report.steps} steps in "
            f"{report.seconds_train:.1f} s ({1000 * report.seconds_per_step:.1f} ms/step, {report.threads} threads); "
            f"{placed}{kept}; report {report.report}")


def _trained_on(report: FinetuneReport) -> str:
    return "answers trained" if report.loss == "answer" else "every token trained"


def _loss_name(report: FinetuneReport) -> str:
    return "training answer loss" if report.heldout_in_sample else "held-out answer loss"


def install_model_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="jenova-fast install-model",
        description="Install a model as models/jenova.gguf (previous kept as jenova.prev.gguf), or roll back.",
    )
    p.add_argument("path", nargs="?", type=Path,
                   help="the .gguf to install (validated first); a LoRA adapter goes to jenova-lora.gguf")
    p.add_argument("--rollback", action="store_true", help="swap jenova.gguf and jenova.prev.gguf back")
    p.add_argument("--adapter", action="store_true", help="with --rollback: roll back jenova-lora.gguf instead")
    p.add_argument("--base", type=Path, default=None,
                   help="the base an adapter was trained on (default: the one it records; its SHA-256 must match)")
    p.add_argument("--models-dir", type=Path, default=install.DEFAULT_MODELS_DIR, help="default: %(default)s")
    args = p.parse_args(argv)
    _setup_logging(quiet=True)
    if args.rollback == (args.path is not None):
        p.error("give either a model PATH or --rollback")
    target = args.models_dir / install.INSTALLED_NAME
    try:
        llama_cpp_module()  # validation loads the model with llama.cpp
        if args.adapter or (args.path is not None and install.is_adapter(args.path)):
            target = args.models_dir / install.ADAPTER_NAME
        if args.path is not None and target.name == install.ADAPTER_NAME:
            install.validate_adapter_file(args.path, args.base)
            result = install.install_model(args.path, target, validate=False)
            print(f"install-model: installed the adapter {args.path} as {result.installed}"
                  + (f"; previous kept as {result.previous}" if result.previous else ""))
        elif args.rollback:
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
    except KeyboardInterrupt:  # every step is atomic: the models folder is as it was, or fully changed
        print(f"install-model: interrupted; {target} is a complete model (the old or the new one)", file=sys.stderr)
        return interrupted_status()
    return 0
