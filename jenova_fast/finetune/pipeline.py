"""The whole loop: validate -> dequantize -> render -> train -> restore metadata -> evaluate -> install."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jenova_fast.finetune import evaluate, render, runtime, validate
from jenova_fast.finetune.dequantize import dequantize_to_f32
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.install import DEFAULT_MODELS_DIR, INSTALLED_NAME, install_model, validate_model_file
from jenova_fast.finetune.metadata import open_reader, read_kv, restore_metadata
from jenova_fast.finetune.train_inprocess import ProgressCallback, TrainResult, train_inprocess
from jenova_fast.finetune.train_program import ENV_VAR, find_program, train_program

log = logging.getLogger(__name__)

TRAINERS = ("inprocess", "llama-finetune")


@dataclass
class FinetuneConfig:
    base: Path
    data: Path
    out: Path = Path("models/jenova.gguf")
    epochs: int = 2
    lr: float = 1e-5
    n_ctx: int = 512
    threads: int | None = None  # default: the free cores
    eval_fraction: float = 0.05
    template: str | None = None  # a name or a .jinja file, for bases without a chat template
    trainer: str = "inprocess"
    llama_finetune: Path | None = None
    install: bool = False  # also install the result as models_dir/jenova.gguf
    models_dir: Path = DEFAULT_MODELS_DIR
    report: Path | None = None  # default: <data dir>/<out stem>.report.json
    seed: int = 0
    smoke_tokens: int = 32


@dataclass
class FinetuneReport:
    base: str
    working_copy: str  # the F32 file trained (the base itself when it was F32 already)
    out: str
    installed: str | None
    previous: str | None
    trainer: str
    n_ctx: int
    threads: int
    lr: float
    epochs: int
    records: dict[str, int]
    tokens: dict[str, int]
    steps: int
    seconds_train: float
    seconds_per_step: float
    seconds_total: float
    heldout_loss_before: float
    heldout_loss_after: float
    heldout_accuracy_before: float
    heldout_accuracy_after: float
    per_epoch: list[dict[str, float]]
    restored_metadata: list[str]
    smoke_prompt: str
    smoke_reply: str
    report: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def f32_copy_path(base: Path) -> Path:
    return base.with_name(f"{base.stem}.f32.gguf")


def _working_copy(info: validate.ModelInfo, notes: list[str]) -> Path:
    """The base itself if all F32, else an F32 copy beside it (made once, reused while newer than the base)."""
    if not info.types.other_types:
        return info.path
    copy = f32_copy_path(info.path)
    size = info.types.n_params * 4
    shown = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    notes.append(f"{info.path.name} has {info.types.other_types} tensors; trained an F32 copy {copy} "
                 f"({shown}) that keeps the quantization error of the original")
    if copy.is_file() and copy.stat().st_mtime >= info.path.stat().st_mtime:
        log.info("reusing the F32 working copy %s", copy)
        return copy
    log.info("dequantizing %s to %s (%s)", info.path, copy, shown)
    return dequantize_to_f32(info.path, copy)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def finetune(config: FinetuneConfig, progress: ProgressCallback | None = None) -> FinetuneReport:
    """Fine-tune `config.base` on `config.data` and write `config.out`; raises FinetuneError on bad input."""
    started = time.perf_counter()
    runtime.llama_cpp_module()
    if config.trainer not in TRAINERS:
        raise FinetuneError(f"--trainer {config.trainer!r}: use one of {', '.join(TRAINERS)}")
    if config.epochs < 1:
        raise FinetuneError(f"--epochs {config.epochs}: must be at least 1")
    program = find_program(config.llama_finetune) if config.trainer == "llama-finetune" else None
    if config.trainer == "llama-finetune" and program is None:
        raise FinetuneError(f"--trainer llama-finetune: no program found; pass --llama-finetune PATH, set "
                            f"${ENV_VAR}, or put llama-finetune on PATH (docs/finetune.md)")
    threads = runtime.pick_threads(config.threads)
    base, out = Path(config.base), Path(config.out)
    notes: list[str] = []

    info = validate.inspect_model(base)
    validate.check_architecture(info)
    validate.check_context(config.n_ctx)
    validate.check_memory(info, config.n_ctx)
    data = render.read_chat_records(config.data)
    template = render.resolve_template(base, info.chat_template, config.template)
    work = _working_copy(info, notes)

    with runtime.load_model(work, vocab_only=True) as vocab_model:
        bos, _eos, add_bos, bos_text, eos_text = runtime.special_tokens(vocab_model)
        renderer = render.Renderer(template, bos_text, eos_text)
        split = render.split_and_tokenize(
            data.conversations, renderer, lambda text: runtime.tokenize(vocab_model, text),
            bos=bos, add_bos=add_bos, eval_fraction=config.eval_fraction, seed=config.seed)
        if program is not None:
            # the program reads plain text: the same rendered training records, in the same order
            train_text = "".join(split.train_texts)
            n_text_tokens = len(runtime.tokenize(vocab_model, train_text, parse_special=False, add_bos=True))
    validate.check_tokens(config.data, len(split.train), len(split.heldout), config.n_ctx)
    train_windows = render.windows(split.train, config.n_ctx, config.n_ctx // 2)
    heldout_windows = render.windows(split.heldout, config.n_ctx, config.n_ctx)
    log.info("%d records (%d held out, %d skipped): %d training windows, %d held-out windows of %d tokens",
             len(data.conversations), split.n_heldout_records, data.skipped + split.skipped_render,
             len(train_windows), len(heldout_windows), config.n_ctx)

    before = evaluate.heldout_loss(work, heldout_windows, threads)
    log.info("held-out loss before: %.4f nats/token", before.loss)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".finetune-", dir=out.parent) as tmp:
        trained, final = Path(tmp) / "trained.gguf", Path(tmp) / out.name
        result: TrainResult
        if program is not None:
            text_file = Path(tmp) / "train.txt"
            text_file.write_text(train_text, encoding="utf-8")
            notes.append("llama-finetune does not parse special tokens: end-of-turn markers were trained as text")
            result = train_program(program, work, trained, text_file, n_text_tokens, n_ctx=config.n_ctx,
                                   epochs=config.epochs, lr=config.lr, threads=threads, progress=progress)
        else:
            result = train_inprocess(work, trained, train_windows, heldout_windows, epochs=config.epochs,
                                     lr=config.lr, threads=threads, progress=progress)
        restored = restore_metadata(trained, work, final, extra=_template_override(info, template))
        trained.unlink()
        _check_restored(final, info, template)
        validate_model_file(final)
        after = evaluate.heldout_loss(final, heldout_windows, threads)
        log.info("held-out loss after: %.4f nats/token", after.loss)
        if not after.loss < before.loss:  # also catches NaN
            raise FinetuneError(
                f"{out}: not written: the held-out loss went from {before.loss:.4f} to {after.loss:.4f} nats/token, "
                f"so the result is worse than the base (training diverged or overfit); lower --lr ({config.lr:g}) "
                f"or --epochs ({config.epochs})")
        smoke_messages = split.heldout_conversations[0]
        reply = evaluate.smoke_generate(final, smoke_messages, max_tokens=config.smoke_tokens, threads=threads)
        placed = install_model(final, out, validate=False, move=True)

    installed = previous = None
    target = Path(config.models_dir) / INSTALLED_NAME
    if config.install and out.resolve() != target.resolve():
        done = install_model(out, target, validate=False)
        installed, previous = done.installed, done.previous
    elif out.resolve() == target.resolve():
        installed, previous = placed.installed, placed.previous

    report_path = Path(config.report) if config.report else Path(config.data).parent / f"{out.stem}.report.json"
    report = FinetuneReport(
        base=str(base), working_copy=str(work), out=str(out),
        installed=str(installed) if installed else None, previous=str(previous) if previous else None,
        trainer=config.trainer, n_ctx=config.n_ctx, threads=threads, lr=config.lr, epochs=config.epochs,
        records={"train": split.n_train_records, "heldout": split.n_heldout_records,
                 "skipped": data.skipped + split.skipped_render},
        tokens={"train": len(split.train), "heldout": len(split.heldout)},
        steps=result.steps, seconds_train=round(result.seconds, 3),
        seconds_per_step=round(result.seconds / max(result.steps, 1), 4),
        seconds_total=round(time.perf_counter() - started, 3),
        heldout_loss_before=before.loss, heldout_loss_after=after.loss,
        heldout_accuracy_before=before.accuracy, heldout_accuracy_after=after.accuracy,
        per_epoch=result.epochs, restored_metadata=restored,
        smoke_prompt=next((m["content"] for m in reversed(smoke_messages) if m["role"] == "user"), ""),
        smoke_reply=reply,
        report=str(report_path), notes=notes,
    )
    _write_atomic(report_path, report.to_json() + "\n")
    return report


def _template_override(info: validate.ModelInfo, template: str) -> dict[str, Any]:
    """A template given with --template is written into the result, so inference uses what training did."""
    import gguf

    if info.chat_template == template:
        return {}
    return {"tokenizer.chat_template": (template, gguf.GGUFValueType.STRING)}


def _check_restored(path: Path, info: validate.ModelInfo, template: str) -> None:
    kv = read_kv(open_reader(path))
    ctx_key = f"{info.architecture}.context_length"
    if kv.get("tokenizer.chat_template") != template or int(kv.get(ctx_key, -1)) != info.context_length:
        raise FinetuneError(f"{path}: chat template or {ctx_key} not restored; the model was not installed")
