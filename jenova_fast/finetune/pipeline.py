"""The whole loop: validate -> choose what to train -> working copy -> render -> train -> assemble ->
evaluate -> install. Each step is a function below; `finetune` reads as the list of them."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jenova_fast import _fs
from jenova_fast.engine import Choice
from jenova_fast.finetune import evaluate, memory, render, runtime, trainable, validate, working_copy
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.install import (
    DEFAULT_MODELS_DIR,
    INSTALLED_NAME,
    InstallResult,
    install_model,
    validate_model_file,
)
from jenova_fast.finetune.metadata import open_reader, read_kv, restored_keys
from jenova_fast.finetune.train_inprocess import ProgressCallback, TrainResult, train_inprocess
from jenova_fast.finetune.train_program import ENV_VAR, find_program, train_program
from jenova_fast.finetune.windows import Windows

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
    eval_data: Path | None = None  # held-out records of their own (prepare --eval-fraction's eval.jsonl)
    template: str | None = None  # a name or a .jinja file, for bases without a chat template
    trainer: str = "inprocess"
    llama_finetune: Path | None = None
    install: bool = False  # also install the result as models_dir/jenova.gguf
    models_dir: Path = DEFAULT_MODELS_DIR
    report: Path | None = None  # default: <data dir>/<out stem>.report.json
    seed: int = 0
    smoke_tokens: int = 32
    train: str | None = None  # --train SPEC; None: `all` if it fits in memory, else the largest last:N
    requantize: str | None = None  # None: trained tensors stay F32; "base" or a ggml type name
    stride: int | None = None  # tokens between training windows; None: n_ctx // 2
    gpu_layers: int = 0  # llama.cpp's n_gpu_layers (-1: all)
    memory_available: int | None = None  # bytes; None: what the machine has available now
    plot: Path | None = None  # a PNG of train and held-out loss against steps
    engine: str = "auto"  # patched | stock | auto (patched when built)
    loss: str | None = None  # answer | all; None: answer on the patched engine (stock can only train all)
    adapter: str | None = None  # lora[:RANK]: train a LoRA adapter over the frozen base instead (finetune/lora.py)
    lora_alpha: float | None = None  # default: the rank
    merge: Path | None = None  # with `adapter`: also write the base with the update folded in here


@dataclass
class FinetuneReport:
    base: str
    working_copy: str  # the file trained (the base itself when nothing had to change)
    out: str
    installed: str | None
    previous: str | None
    trainer: str
    engine: str  # the llama.cpp that trained: patched or stock
    engine_choice: str  # why
    loss: str  # answer (the assistant's tokens) or all (every token)
    n_ctx: int
    stride: int
    threads: int
    gpu_layers: int
    lr: float
    epochs: int
    train_spec: str
    train_choice: str  # why this spec: given, or chosen by memory
    trained_tensors: list[str]
    trained_params: int
    converted: dict[str, int]  # frozen tensors whose type changed in the working copy: 'Q4_K->Q8_0' -> count
    frozen_bytes: int
    memory_estimate: dict[str, int]
    requantized: dict[str, str]  # trained tensor -> type written (empty: F32)
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
    step_losses: list[float]
    eval_points: list[tuple[int, float]]  # (steps done, held-out loss); step 0 is the base
    restored_metadata: list[str]
    smoke_prompt: str
    smoke_reply: str
    report: str = ""
    plot: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class TrainPlan:
    engine: Choice
    loss: str
    selection: trainable.Selection
    work: working_copy.WorkPlan
    need: memory.MemoryEstimate
    choice: str
    probe: bool  # an architecture not known here: try one step in a child process before training
    available: int  # the memory budget the choice was made against


def plan_training(info: validate.ModelInfo, config: FinetuneConfig) -> TrainPlan:
    """What is trained, what the working copy holds, and what it costs in memory; refuses what cannot fit."""
    reader = open_reader(info.path)
    engine = runtime.choose_engine(config.engine) if config.trainer == "inprocess" else Choice(
        "stock", "--trainer llama-finetune is the user's own program")
    loss = _loss(config, engine, info)
    gpu = config.gpu_layers != 0
    if gpu:
        runtime.check_gpu_offload(engine.kind)

    have = memory.available_memory() if config.memory_available is None else config.memory_available

    def estimate_for(spec: str) -> tuple[trainable.Selection, memory.MemoryEstimate]:
        """The faster working copy (frozen matrices on the backward path in F32) if it fits, else the lean one."""
        selection = trainable.select(spec, info.tensors, info.n_layer)
        for lean in (False, True):
            work = working_copy.plan(reader, set(selection.trained), gpu=gpu, lean=lean)
            gpu_weights = sum(working_copy.tensor_nbytes(t.work_type, t.n_elements) for t in work.tensors
                              if trainable.block_of(t.name) is not None)
            need = memory.estimate(work_bytes=work.work_bytes(), selection=selection, n_layer=info.n_layer,
                                   n_embd=info.n_embd, n_ff=info.n_ff, n_head=info.n_head, n_vocab=info.n_vocab,
                                   n_ctx=config.n_ctx, gpu_layers=config.gpu_layers, gpu_weight_bytes=gpu_weights)
            plans[spec] = work
            if memory.fits(need, have):
                break
        return selection, need

    plans: dict[str, working_copy.WorkPlan] = {}
    spec = config.train or trainable.default_spec(info.architecture, engine.kind)
    if spec is not None:
        selection, need = estimate_for(spec)
        probe = trainable.check_architecture(info.architecture, selection, info.path, engine.kind)
        memory.check(selection, need, have, info.path, config.n_ctx)
        choice = ("given with --train" if config.train else
                  f"head: architecture {info.architecture!r} can only train what lies after its blocks")
    else:
        selection, need, tried = memory.choose(info.n_layer, estimate_for, have, info.path)
        probe = trainable.check_architecture(info.architecture, selection, info.path, engine.kind)
        choice = (f"chosen for {memory.gib(have)} available: {selection.spec} needs {memory.gib(need.total)}"
                  + (f" ({'; '.join(tried)} would not fit)" if tried else ""))
    if config.trainer == "llama-finetune" and selection.spec != "all":
        raise FinetuneError(f"--train {selection.spec}: llama-finetune trains every F32 tensor and has no filter; "
                            "use the in-process trainer (the default) to train a subset, or --train all")
    if gpu:
        memory.check_gpu(need, sum(d.free for d in runtime.gpu_devices(engine.kind)), info.path)
    work = plans[selection.spec]
    if work.lean:
        choice += "; frozen matrices on the backward path kept in Q8_0 (F32 would not fit)"
    return TrainPlan(engine, loss, selection, work, need, choice, probe, have)


def _scored(windows: Windows, loss: str) -> Windows:
    """The windows as the loss sees them: answers only (and no window without one), or every token."""
    return windows.with_targets() if loss == "answer" else windows.everything_trained()


def _loss(config: FinetuneConfig, engine: Choice, info: validate.ModelInfo) -> str:
    """answer (the default where the engine can mask) or all; refuses what the engine cannot do."""
    if config.loss not in (None, "answer", "all"):
        raise FinetuneError(f"--loss {config.loss!r}: answer (train the assistant's answers) or all (every token)")
    if engine.kind == "stock":
        if config.loss == "answer":
            raise FinetuneError("--loss answer needs the patched engine (the stock llama.cpp trains every token); "
                                "build it: jenova-fast engine build (once, about 6 minutes), or use --loss all")
        return "all"
    offloads_output = config.gpu_layers < 0 or config.gpu_layers > info.n_layer
    if offloads_output and config.loss != "all":
        # the loss mask patches the CPU cross-entropy kernels; with the output layer on a GPU the loss runs there
        if config.loss == "answer":
            raise FinetuneError(f"--loss answer with --gpu-layers {config.gpu_layers}: the output layer and the loss "
                                f"would run on the GPU, whose loss kernel has no mask; use --gpu-layers {info.n_layer} "
                                "(every block, the loss on the CPU) or --loss all")
        return "all"
    return config.loss or "answer"


def _check_config(config: FinetuneConfig) -> Path | None:
    """Cheap checks first; returns the llama-finetune program for route B."""
    runtime.llama_cpp_module()
    if config.trainer not in TRAINERS:
        raise FinetuneError(f"--trainer {config.trainer!r}: use one of {', '.join(TRAINERS)}")
    if config.epochs < 1:
        raise FinetuneError(f"--epochs {config.epochs}: must be at least 1")
    validate.check_context(config.n_ctx)
    if config.stride is not None and not 0 < config.stride <= config.n_ctx:
        raise FinetuneError(f"--stride {config.stride}: must be between 1 and --ctx ({config.n_ctx}); --stride ctx "
                            "trains each token once per epoch, the default ctx/2 twice")
    working_copy.check_requantize(config.requantize)
    program = find_program(config.llama_finetune) if config.trainer == "llama-finetune" else None
    if config.trainer == "llama-finetune" and program is None:
        raise FinetuneError(f"--trainer llama-finetune: no program found; pass --llama-finetune PATH, set "
                            f"${ENV_VAR}, or put llama-finetune on PATH (docs/finetune.md)")
    if program is not None and config.eval_data is not None:
        raise FinetuneError("--eval-data works with the in-process trainer only")
    return program


def finetune(config: FinetuneConfig, progress: ProgressCallback | None = None) -> FinetuneReport:
    """Fine-tune `config.base` on `config.data` and write `config.out`; raises FinetuneError on bad input.
    Ctrl-C (KeyboardInterrupt) ends it within one chunk of steps with nothing written or installed."""
    if config.adapter is not None:
        from jenova_fast.finetune.lora import finetune_lora

        return finetune_lora(config, progress)  # type: ignore[no-any-return]
    started = time.perf_counter()
    program = _check_config(config)
    threads = runtime.pick_threads(config.threads)
    base, out = Path(config.base), Path(config.out)
    info = validate.inspect_model(base)
    plan = plan_training(info, config)
    notes = _plan_notes(plan)
    data = _training_data(config, info, plan, program)
    before = evaluate.heldout_loss(data.work, _scored(data.heldout_windows, plan.loss), threads,
                                   gpu_layers=config.gpu_layers)
    log.info("held-out loss before: %.4f nats/token", before.loss)

    with _fs.temporary(out, directory=True, exclusive="--out") as tmp:
        result = _train(config, plan, data, program, tmp / "trained.gguf", threads, progress, notes)
        final = tmp / out.name
        restore = restored_keys(tmp / "trained.gguf", data.work, extra=_template_override(info, data.template))
        requantized = working_copy.assemble(tmp / "trained.gguf", base, plan.work, final,
                                            requantize=config.requantize, set_from=restore)
        (tmp / "trained.gguf").unlink()
        after = _check_result(final, info, data, before, config, threads, plan.loss)
        smoke_messages = data.split.heldout_conversations[0]
        reply = evaluate.smoke_generate(final, smoke_messages, max_tokens=config.smoke_tokens, threads=threads)
        placed = install_model(final, out, validate=False, move=True)
    installed = _install(config, out, placed)

    report_path = Path(config.report) if config.report else Path(config.data).parent / f"{out.stem}.report.json"
    report = FinetuneReport(
        base=str(base), working_copy=str(data.work), out=str(out),
        installed=str(installed.installed) if installed else None,
        previous=str(installed.previous) if installed and installed.previous else None,
        trainer=config.trainer, engine=plan.engine.kind, engine_choice=plan.engine.reason, loss=plan.loss,
        n_ctx=config.n_ctx, stride=data.stride, threads=threads,
        gpu_layers=config.gpu_layers, lr=config.lr, epochs=config.epochs,
        train_spec=plan.selection.spec, train_choice=plan.choice, trained_tensors=list(plan.selection.trained),
        trained_params=plan.selection.n_params, converted=plan.work.converted,
        frozen_bytes=plan.work.frozen_bytes(),
        memory_estimate={"total": plan.need.total, "weights": plan.need.weights,
                         "optimizer": plan.need.optimizer, "activations": plan.need.activations,
                         "gpu": plan.need.gpu, "available": plan.available},
        requantized=requantized,
        records={"train": data.split.n_train_records, "heldout": data.split.n_heldout_records,
                 "skipped": data.skipped},
        tokens={"train": len(data.split.train), "heldout": len(data.split.heldout)},
        steps=result.steps, seconds_train=round(result.seconds, 3),
        seconds_per_step=round(result.seconds / max(result.steps, 1), 4),
        seconds_total=round(time.perf_counter() - started, 3),
        heldout_loss_before=before.loss, heldout_loss_after=after.loss,
        heldout_accuracy_before=before.accuracy, heldout_accuracy_after=after.accuracy,
        per_epoch=result.epochs, step_losses=[round(x, 5) for x in result.step_losses],
        eval_points=[(0, before.loss), *result.eval_points],
        restored_metadata=sorted(restore),
        smoke_prompt=next((m["content"] for m in reversed(smoke_messages) if m["role"] == "user"), ""),
        smoke_reply=reply,
        report=str(report_path), notes=notes,
    )
    if config.plot:
        from jenova_fast.finetune.plot import plot_losses

        report.plot = str(plot_losses(report, config.plot))
    _fs.write_bytes_via(report_path, lambda f: f.write((report.to_json() + "\n").encode("utf-8")))
    return report


def _plan_notes(plan: TrainPlan) -> list[str]:
    log.info("engine: %s (%s); loss on %s", plan.engine.kind, plan.engine.reason,
             "the answers" if plan.loss == "answer" else "every token")
    log.info("training %s: %d tensors, %.1fM parameters (%s); memory about %s", plan.selection.spec,
             len(plan.selection.trained), plan.selection.n_params / 1e6, plan.choice, plan.need.describe())
    notes = []
    if plan.work.tied:
        notes.append("the base ties its output head to token_embd, which llama.cpp never trains")
    return notes


@dataclass
class TrainingData:
    """The records rendered with the chat template, tokenized and cut into windows, ready to train."""

    work: Path  # the working copy: what is trained and evaluated
    template: str
    split: render.TokenSplit
    stride: int
    heldout_windows: Windows
    skipped: int
    train_text: str = ""  # route B: the same rendered records as plain text, and its token count
    n_text_tokens: int = 0

    def train_windows(self, n_ctx: int, seed: int, epoch: int) -> Windows:
        return Windows(render.epoch_windows(self.split.train_records, n_ctx, self.stride, seed=seed, epoch=epoch))


def _training_data(config: FinetuneConfig, info: validate.ModelInfo, plan: TrainPlan,
                   program: Path | None) -> TrainingData:
    """Read the records, make the working copy, render, tokenize and split; refuses too little data."""
    base = Path(config.base)
    data = render.read_chat_records(config.data)
    heldout_data = render.read_chat_records(config.eval_data) if config.eval_data else None
    template = render.resolve_template(base, info.chat_template, config.template)
    work = working_copy.working_copy(base, plan.work)
    if plan.probe:
        from jenova_fast.finetune.probe import probe

        probe(work, plan.selection.trained, config.n_ctx, architecture=info.architecture, spec=plan.selection.spec,
              engine=plan.engine.kind)

    stride = config.stride or config.n_ctx // 2
    train_text, n_text_tokens = "", 0
    with runtime.load_model(work, vocab_only=True) as vocab_model:
        bos, _eos, add_bos, bos_text, eos_text = runtime.special_tokens(vocab_model)
        renderer = render.Renderer(template, bos_text, eos_text)
        split = render.split_and_tokenize(
            data.conversations, renderer, lambda text: runtime.tokenize(vocab_model, text),
            bos=bos, add_bos=add_bos, eval_fraction=config.eval_fraction, seed=config.seed,
            heldout=heldout_data.conversations if heldout_data else None)
        if program is not None:
            # the program reads plain text: the same rendered training records, in the same order
            train_text = "".join(split.train_texts)
            n_text_tokens = len(runtime.tokenize(vocab_model, train_text, parse_special=False, add_bos=True))
    validate.check_tokens(config.data, len(split.train), len(split.heldout), config.n_ctx)
    heldout = Windows(render.windows(split.heldout, config.n_ctx, config.n_ctx))
    prepared = TrainingData(work, template, split, stride, heldout,
                            data.skipped + split.skipped_render, train_text, n_text_tokens)
    log.info("%d records (%d held out, %d skipped): %d training windows (stride %d), %d held-out windows of %d "
             "tokens", split.n_train_records + split.n_heldout_records, split.n_heldout_records, prepared.skipped,
             render.n_windows(len(split.train), config.n_ctx, stride), stride, len(prepared.heldout_windows),
             config.n_ctx)
    return prepared


def _train(config: FinetuneConfig, plan: TrainPlan, data: TrainingData, program: Path | None, trained: Path,
           threads: int, progress: ProgressCallback | None, notes: list[str]) -> TrainResult:
    """Route A (llama.cpp's training in this process) or route B (the user's llama-finetune program)."""
    if plan.work.converted:
        notes.append(f"frozen tensors converted in the working copy {data.work}: {plan.work.converted}")
    if program is not None:
        text_file = trained.with_name("train.txt")
        text_file.write_text(data.train_text, encoding="utf-8")
        notes.append("llama-finetune does not parse special tokens: end-of-turn markers were trained as text")
        return train_program(program, data.work, trained, text_file, data.n_text_tokens, n_ctx=config.n_ctx,
                             epochs=config.epochs, lr=config.lr, threads=threads, progress=progress)
    return train_inprocess(data.work, trained,
                           lambda epoch: _scored(data.train_windows(config.n_ctx, config.seed, epoch), plan.loss),
                           _scored(data.heldout_windows, plan.loss), epochs=config.epochs, lr=config.lr,
                           threads=threads, trained=frozenset(plan.selection.trained), gpu_layers=config.gpu_layers,
                           progress=progress, engine_kind=plan.engine.kind)


def _check_result(final: Path, info: validate.ModelInfo, data: TrainingData, before: evaluate.LossReport,
                  config: FinetuneConfig, threads: int, loss: str) -> evaluate.LossReport:
    """The assembled model loads, kept its metadata, and is better than the base on the held-out records."""
    _check_restored(final, info, data.template)
    validate_model_file(final)
    after = evaluate.heldout_loss(final, _scored(data.heldout_windows, loss), threads,
                                  gpu_layers=config.gpu_layers)
    log.info("held-out loss after: %.4f nats/token", after.loss)
    if not after.loss < before.loss:  # also catches NaN
        raise FinetuneError(
            f"{config.out}: not written: the held-out loss went from {before.loss:.4f} to {after.loss:.4f} "
            f"nats/token, so the result is worse than the base (training diverged or overfit); lower --lr "
            f"({config.lr:g}) or --epochs ({config.epochs})")
    return after


def _install(config: FinetuneConfig, out: Path, placed: InstallResult) -> InstallResult | None:
    """--install puts the result at models_dir/jenova.gguf too (unless --out was that already)."""
    target = Path(config.models_dir) / INSTALLED_NAME
    if out.resolve() == target.resolve():
        return placed
    if config.install:
        return install_model(out, target, validate=False)
    return None


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
