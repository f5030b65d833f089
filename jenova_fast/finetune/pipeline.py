"""The whole loop: validate -> choose what to train -> working copy -> render -> train -> assemble ->
evaluate -> install. Each step is a function below; `finetune` reads as the list of them."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.engine import Choice
from jenova_fast.finetune import (
    defaults,
    evaluate,
    memory,
    recall,
    render,
    runtime,
    trainable,
    validate,
    working_copy,
)
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
    epochs: int | None = None  # None: from the steps per epoch (defaults.epochs), stopping early
    lr: float | None = None  # None: from the trained parameter count (defaults.learning_rate)
    n_ctx: int | None = None  # None: the smallest multiple of 256 holding the longest record
    threads: int | None = None  # default: the free cores
    eval_fraction: float | None = None  # None: 5% of the records, none in a store of fewer than 20
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
    stride: int | str | None = None  # tokens between stream windows: N, 'half' or 'ctx'; None: 'half'
    gpu_layers: int = 0  # llama.cpp's n_gpu_layers (-1: all)
    memory_available: int | None = None  # bytes; None: what the machine has available now
    plot: Path | None = None  # a PNG of train and held-out loss against steps
    system: str | None = None  # the assistant's system prompt, in every record and in the result's metadata
    packing: str = "records"  # whole records per window ("records") or llama.cpp's stream of windows ("stream")
    recall_sample: int = recall.SAMPLE  # training questions asked before and after (0: none)
    engine: str = "auto"  # patched | stock | auto (patched when built)
    loss: str | None = None  # answer | all; None: answer on the patched engine (stock can only train all)
    adapter: str | None = None  # lora[:RANK]: train a LoRA adapter over the frozen base instead (finetune/lora.py)
    lora_alpha: float | None = None  # default: the rank
    merge: Path | None = None  # with `adapter`: also write the base with the update folded in here
    gradient_checkpointing: bool = False  # keep only block outputs, recompute the rest (patched engine, patch 0006)


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
    choices: dict[str, str] = field(default_factory=dict)  # setting -> "value: why" (given, or from the data)
    system: str | None = None
    packing: str = "records"
    heldout_in_sample: bool = False  # too few records to hold any out: the loss is measured on training records
    stopped_early: str | None = None  # why training stopped before its last epoch
    recall_asked: int = 0
    recall_before: int = 0  # training questions whose answer states the record's fact, base model
    recall_after: int = 0
    recall_note: str | None = None  # when recall did not rise: the likely cause
    example: dict[str, str] = field(default_factory=dict)  # question, reference, before, after
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


def plan_training(info: validate.ModelInfo, config: FinetuneConfig, n_ctx: int | None = None) -> TrainPlan:
    """What is trained, what the working copy holds, and what it costs in memory at `n_ctx` (default
    config.n_ctx, else 512); refuses what cannot fit."""
    n_ctx = n_ctx or config.n_ctx or 512
    reader = open_reader(info.path)
    engine = runtime.choose_engine(config.engine) if config.trainer == "inprocess" else Choice(
        "stock", "--trainer llama-finetune is the user's own program")
    loss = _loss(config, engine, info)
    if config.gradient_checkpointing and engine.kind != "patched":
        raise FinetuneError("--gradient-checkpointing needs the in-process trainer on the patched engine (stock "
                            "llama.cpp keeps every activation); build it: jenova-fast engine build (once, 2-3 "
                            "minutes), and leave --trainer and --engine out")
    gpu = config.gpu_layers != 0
    if gpu:
        runtime.check_gpu_offload(engine.kind)

    have = memory.budget(config.memory_available)

    def estimate_for(spec: str) -> tuple[trainable.Selection, memory.MemoryEstimate]:
        """The faster working copy (frozen matrices on the backward path in F32) if it fits, else the lean one."""
        selection = trainable.select(spec, info.tensors, info.n_layer)
        for lean in (False, True):
            work = working_copy.plan(reader, set(selection.trained), gpu=gpu, lean=lean)
            gpu_weights = sum(working_copy.tensor_nbytes(t.work_type, t.n_elements) for t in work.tensors
                              if trainable.block_of(t.name) is not None)
            need = memory.estimate(model=info, work_bytes=work.work_bytes(), selection=selection, n_ctx=n_ctx,
                                   gpu_layers=config.gpu_layers, gpu_weight_bytes=gpu_weights,
                                   checkpoints=config.gradient_checkpointing)
            plans[spec] = work
            if memory.fits(need, have):
                break
        return selection, need

    plans: dict[str, working_copy.WorkPlan] = {}
    spec = config.train or trainable.default_spec(info.architecture, engine.kind)
    if spec is not None:
        selection, need = estimate_for(spec)
        probe = trainable.check_architecture(info.architecture, selection, info.path, engine.kind)
        memory.check(selection, need, have, info.path, n_ctx)
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


def _loss(config: FinetuneConfig, engine: Choice, info: validate.ModelInfo) -> str:
    """answer (the default where the engine can mask) or all; refuses what the engine cannot do."""
    if config.loss not in (None, "answer", "all"):
        raise FinetuneError(f"--loss {config.loss!r}: answer (train the assistant's answers) or all (every token)")
    if engine.kind == "stock":
        if config.loss == "answer":
            raise FinetuneError("--loss answer needs the patched engine (the stock llama.cpp trains every token); "
                                "build it: jenova-fast engine build (once, 2-3 minutes), or use --loss all")
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
    if config.epochs is not None and config.epochs < 1:
        raise FinetuneError(f"--epochs {config.epochs}: must be at least 1")
    if config.packing not in render.PACKINGS:
        raise FinetuneError(f"--packing {config.packing!r}: use one of {', '.join(render.PACKINGS)}")
    if config.n_ctx is not None:
        validate.check_context(config.n_ctx)
    working_copy.check_requantize(config.requantize)
    program = find_program(config.llama_finetune) if config.trainer == "llama-finetune" else None
    if config.trainer == "llama-finetune" and program is None:
        raise FinetuneError(f"--trainer llama-finetune: no program found; pass --llama-finetune PATH, set "
                            f"${ENV_VAR}, or put llama-finetune on PATH (docs/finetune.md)")
    if program is not None and config.eval_data is not None:
        raise FinetuneError("--eval-data works with the in-process trainer only")
    return program


@dataclass
class Settings:
    """The run's context, epochs and learning rate, each given or chosen from the data, with the reasons."""

    n_ctx: int
    epochs: int
    lr: float
    early_stop: defaults.EarlyStop | None  # None: --epochs was given, every epoch runs
    choices: dict[str, str]

    @property
    def lr_end(self) -> float:
        """Where the in-process rate falls to by the last planned step."""
        return self.lr * defaults.LR_END


def finetune(config: FinetuneConfig, progress: ProgressCallback | None = None) -> FinetuneReport:
    """Fine-tune `config.base` on `config.data` and write `config.out`; raises FinetuneError on bad input.
    Everything cheap (the data, the split, the context, the memory) is checked before the working copy is
    made. Ctrl-C (KeyboardInterrupt) ends it within one chunk of steps with nothing written or installed."""
    if config.adapter is not None:
        from jenova_fast.finetune.lora import finetune_lora

        return finetune_lora(config, progress)
    with contextlib.ExitStack() as hold:  # the working copy, held until the run ends
        return _finetune(config, progress, hold)


def _finetune(config: FinetuneConfig, progress: ProgressCallback | None, hold: contextlib.ExitStack
              ) -> FinetuneReport:
    started = time.perf_counter()
    program = _check_config(config)
    threads = runtime.pick_threads(config.threads)
    base, out = Path(config.base), Path(config.out)
    info = validate.inspect_model(base)
    plan_training(info, config, config.n_ctx or validate.CONTEXT_MULTIPLE)  # the architecture, before the data
    data = _training_data(config, info, program)
    plan = plan_training(info, config, data.n_ctx)
    settings = _settings(config, plan, data)
    notes = _plan_notes(plan, data, settings)
    data.work = _working_copy(config, info, plan, hold)
    before = evaluate.heldout_loss(data.work, data.heldout_windows(), threads, gpu_layers=config.gpu_layers)
    log.info("held-out answer loss before: %.4f nats/token", before.loss)
    asked = recall.sample(data.split.train_conversations, config.recall_sample, config.seed)
    recall_before = _recall(base, asked, config, data, threads)

    with _fs.temporary(out, directory=True, exclusive="--out") as tmp:
        feed = _EpochFeed(data, config, settings, plan, progress)
        result = _train(config, plan, data, settings, feed, program, tmp / "trained.gguf", threads, notes)
        final = tmp / out.name
        restore = restored_keys(tmp / "trained.gguf", data.work,
                                extra=_metadata_override(info, data.template, config.system))
        requantized = working_copy.assemble(tmp / "trained.gguf", base, plan.work, final,
                                            requantize=config.requantize, set_from=restore)
        (tmp / "trained.gguf").unlink()
        after = _check_result(final, info, data, before, config, settings, threads)
        recall_after = _recall(final, asked, config, data, threads)
        placed = install_model(final, out, validate=False, move=True)
    installed = _install(config, out, placed)

    example = _example(recall_before, recall_after)
    report_path = Path(config.report) if config.report else Path(config.data).parent / f"{out.stem}.report.json"
    report = FinetuneReport(
        base=str(base), working_copy=str(data.work), out=str(out),
        installed=str(installed.installed) if installed else None,
        previous=str(installed.previous) if installed and installed.previous else None,
        trainer=config.trainer, engine=plan.engine.kind, engine_choice=plan.engine.reason, loss=plan.loss,
        n_ctx=settings.n_ctx, stride=data.stride, threads=threads,
        gpu_layers=config.gpu_layers, lr=settings.lr, epochs=settings.epochs,
        train_spec=plan.selection.spec, train_choice=plan.choice, trained_tensors=list(plan.selection.trained),
        trained_params=plan.selection.n_params, converted=plan.work.converted,
        frozen_bytes=plan.work.frozen_bytes(),
        memory_estimate=plan.need.figures(plan.available),
        requantized=requantized,
        **run_figures(data, result, before, after, started),
        restored_metadata=sorted(restore),
        smoke_prompt=example.get("question", ""), smoke_reply=example.get("after", ""),
        choices=settings.choices, system=config.system, packing=config.packing,
        heldout_in_sample=data.split.in_sample, stopped_early=feed.stopped,
        **recall_figures(recall_before, recall_after, result, data, settings), report=str(report_path), notes=notes,
    )
    if config.plot:
        from jenova_fast.finetune.plot import plot_losses

        report.plot = str(plot_losses(report, config.plot))
    _fs.write_bytes_via(report_path, lambda f: f.write((report.to_json() + "\n").encode("utf-8")))
    return report


def _settings(config: FinetuneConfig, plan: TrainPlan, data: TrainingData, lora_base_params: int | None = None
              ) -> Settings:
    """--epochs and --lr as given, else chosen from the steps per epoch and the trained parameter count (for an
    adapter, from the parameters of its base: `lora_base_params`)."""
    steps = render.steps_per_epoch(data.split.train_records, data.n_ctx, packing=config.packing,
                                   stride=data.stride)
    if config.epochs is not None:
        epochs, epochs_why, stop = config.epochs, "given with --epochs", None
    else:
        epochs, epochs_why = defaults.epochs(steps)
        stop = defaults.EarlyStop()
    if config.lr is not None:
        lr, lr_why = config.lr, "given with --lr"
    elif lora_base_params is not None:
        lr, lr_why = defaults.lora_learning_rate(lora_base_params, epochs * steps)
    else:
        lr, lr_why = defaults.learning_rate(plan.selection.n_params)
    split = data.split
    heldout = (f"{split.n_heldout_records} of {split.n_heldout_records + split.n_train_records} records"
               + (" (from --eval-data)" if config.eval_data else f" (--eval-fraction {config.eval_fraction:g})"
                  if config.eval_fraction is not None else " (5%)"))
    if split.in_sample:
        heldout = (f"none: {split.n_train_records} records are fewer than {render.SMALL_STORE}, so every one is "
                   "trained and the loss is measured on them (not a held-out figure; --eval-fraction or --eval-data "
                   "for one)")
    choices = {
        "ctx": f"{data.n_ctx}: {data.ctx_reason}",
        "epochs": f"{epochs}: {epochs_why}",
        "lr": f"{lr:g}: {lr_why}" + (f"; falling linearly to {lr * defaults.LR_END:g} over the planned steps"
                                     if config.trainer == "inprocess" else ""),
        "heldout": heldout,
        "packing": f"{config.packing}: " + ("whole records per window, padded, never one record's end into the next"
                                             if config.packing == "records" else f"a stream cut every {data.stride}"),
        "train": f"{plan.selection.spec}: {plan.choice}",
    }
    return Settings(data.n_ctx, epochs, lr, stop, choices)


def run_figures(data: TrainingData, result: TrainResult, before: evaluate.LossReport, after: evaluate.LossReport,
                started: float) -> dict[str, Any]:
    """The report's figures of a run, full model or adapter alike: records, tokens, steps, time, losses."""
    return {
        "records": {"train": data.split.n_train_records, "heldout": data.split.n_heldout_records,
                    "skipped": data.skipped},
        "tokens": {"train": len(data.split.train), "heldout": len(data.split.heldout),
                   "train_answer": int(sum(r.trained.sum() for r in data.split.train_records))},
        "steps": result.steps, "seconds_train": round(result.seconds, 3),
        "seconds_per_step": round(result.seconds / max(result.steps, 1), 4),
        "seconds_total": round(time.perf_counter() - started, 3),
        "heldout_loss_before": before.loss, "heldout_loss_after": after.loss,
        "heldout_accuracy_before": before.accuracy, "heldout_accuracy_after": after.accuracy,
        "per_epoch": result.epochs, "step_losses": [round(x, 5) for x in result.step_losses],
        "eval_points": [(0, before.loss), *result.eval_points],
    }


def _plan_notes(plan: TrainPlan, data: TrainingData, settings: Settings) -> list[str]:
    log.info("plan: %s", "; ".join(f"{key} {value}" for key, value in settings.choices.items()))
    log.info("engine: %s (%s); loss on %s", plan.engine.kind, plan.engine.reason,
             "the answers" if plan.loss == "answer" else "every token")
    log.info("training %s: %d tensors, %.1fM parameters; memory about %s", plan.selection.spec,
             len(plan.selection.trained), plan.selection.n_params / 1e6, plan.need.describe())
    notes = []
    if plan.work.tied:
        notes.append("the base ties its output head to token_embd, which llama.cpp never trains")
    if data.split.unmasked:
        notes.append(f"{data.split.unmasked} records: their answers could not be told apart in the chat template, "
                     "so all of their tokens were trained")
    if data.cut:
        notes.append(f"{data.cut} records are longer than --ctx {data.n_ctx} and were cut across windows")
    return notes


@dataclass
class TrainingData:
    """The records rendered with the chat template, tokenized with their answer masks, split and measured,
    ready to be cut into windows; `work` (the working copy) is set once the cheap checks have passed."""

    template: str
    split: render.TokenSplit
    n_ctx: int
    ctx_reason: str
    stride: int
    pad: int  # the token that fills a window after its last whole record (never trained)
    packing: str
    skipped: int
    cut: int  # records longer than a window
    work: Path = Path()
    train_text: str = ""  # route B: the same rendered records as plain text, and its token count
    n_text_tokens: int = 0

    def train_windows(self, seed: int, epoch: int, loss: str) -> Windows:
        """An epoch's windows; the answers are trained (`--loss answer`) or every token of the records."""
        records = self.split.train_records if loss == "answer" else self._whole()
        tokens, trained = render.epoch_windows(records, self.n_ctx, pad=self.pad, packing=self.packing,
                                               stride=self.stride, seed=seed, epoch=epoch)
        return Windows(tokens, trained).with_targets()

    def heldout_windows(self) -> Windows:
        """The held-out records, whole records per window, their answers scored."""
        return Windows(*render.pack(self.split.heldout_records, self.n_ctx, self.pad)).with_targets()

    def _whole(self) -> list[render.Record]:
        """The training records with every token trained but their first (which follows another record)."""
        whole = []
        for record in self.split.train_records:
            trained = np.ones(len(record.tokens), bool)
            trained[0] = False
            whole.append(render.Record(record.tokens, trained))
        return whole


def _training_data(config: FinetuneConfig, info: validate.ModelInfo, program: Path | None) -> TrainingData:
    """Read the records, render, tokenize and split them with the base's vocabulary, and choose the context:
    all before any working copy is written; refuses too little data."""
    base = Path(config.base)
    data = render.read_chat_records(config.data)
    heldout_data = render.read_chat_records(config.eval_data) if config.eval_data else None
    template = render.resolve_template(base, info.chat_template, config.template)
    train_text, n_text_tokens = "", 0
    with runtime.load_model(base, vocab_only=True) as vocab_model:
        bos, eos, add_bos, bos_text, eos_text = runtime.special_tokens(vocab_model)
        renderer = render.Renderer(template, bos_text, eos_text, system=config.system)
        split = render.split_and_tokenize(
            data.conversations, renderer, lambda text: runtime.tokenize(vocab_model, text),
            bos=bos, add_bos=add_bos, eval_fraction=config.eval_fraction, seed=config.seed,
            heldout=heldout_data.conversations if heldout_data else None)
        if not split.train_records:
            raise FinetuneError(f"{config.data}: the chat template refused every training record; see the warnings "
                                "above, or pass --template")
        if program is not None:
            # the program reads plain text: the same rendered training records, in the same order
            train_text = "".join(split.train_texts)
            n_text_tokens = len(runtime.tokenize(vocab_model, train_text, parse_special=False, add_bos=True))
    if config.n_ctx is not None:
        n_ctx, ctx_reason = config.n_ctx, "given with --ctx"
    else:
        n_ctx, ctx_reason = defaults.context(split.longest, info.context_length)
    stride = {None: n_ctx // 2, "half": n_ctx // 2, "ctx": n_ctx}.get(config.stride, config.stride)  # type: ignore[arg-type]
    if not isinstance(stride, int) or not 0 < stride <= n_ctx:
        raise FinetuneError(f"--stride {config.stride}: must be between 1 and --ctx ({n_ctx}); --stride ctx trains "
                            "each token once per epoch, the default ctx/2 twice")
    if program is not None:
        validate.check_tokens(config.data, n_text_tokens, len(split.heldout), n_ctx)
    elif config.packing == "stream":
        validate.check_tokens(config.data, len(split.train), n_ctx + 1, n_ctx)
    cut = sum(len(r.tokens) > n_ctx + 1 for r in [*split.train_records, *split.heldout_records])
    prepared = TrainingData(template, split, n_ctx, ctx_reason, stride, eos if eos >= 0 else 0, config.packing,
                            data.skipped + split.skipped_render, cut, train_text=train_text,
                            n_text_tokens=n_text_tokens)
    log.info("%d records (%d held out, %d skipped), the longest %d tokens: %d training windows per epoch of %d "
             "tokens", split.n_train_records + split.n_heldout_records, split.n_heldout_records, prepared.skipped,
             split.longest, render.steps_per_epoch(split.train_records, n_ctx, packing=config.packing, stride=stride),
             n_ctx)
    return prepared


def _working_copy(config: FinetuneConfig, info: validate.ModelInfo, plan: TrainPlan, hold: contextlib.ExitStack
                  ) -> Path:
    """The file llama.cpp trains (in the cache, `working_copy.cache_dir`, held by this run until `hold`
    closes), probed first for an architecture not known here."""
    work = hold.enter_context(working_copy.held(Path(config.base), plan.work))
    if plan.probe:
        from jenova_fast.finetune.probe import probe

        probe(work, plan.selection.trained, config.n_ctx or 256, architecture=info.architecture,
              spec=plan.selection.spec, engine=plan.engine.kind)
    return work


class _EpochFeed:
    """Each epoch's training windows, until the training loss says stop (`defaults.EarlyStop`, only when the
    epochs were chosen, not given): then an empty epoch, which ends training. Watches the progress for the
    epoch's running loss and passes it on."""

    def __init__(self, data: TrainingData, config: FinetuneConfig, settings: Settings, plan: TrainPlan,
                 progress: ProgressCallback | None) -> None:
        self.data, self.seed, self.stop, self.user = data, config.seed, settings.early_stop, progress
        self.plan = plan
        self.epoch_loss: float | None = None
        self.stopped: str | None = None

    def progress(self, p: Any) -> None:
        if p.phase == "train":
            self.epoch_loss = p.loss  # the running mean: the epoch's loss at its last step
        if self.user is not None:
            self.user(p)

    def __call__(self, epoch: int) -> Windows:
        if self.stopped is None and epoch > 0 and self.stop is not None and self.epoch_loss is not None:
            reason = self.stop(self.epoch_loss)
            if reason:
                self.stopped = f"after epoch {epoch}: {reason}"
                log.info("stopping %s", self.stopped)
        if self.stopped:
            return Windows(np.zeros((0, self.data.n_ctx + 1), np.int32))
        return _for_engine(self.data.train_windows(self.seed, epoch, self.plan.loss), self.plan)


def _train(config: FinetuneConfig, plan: TrainPlan, data: TrainingData, settings: Settings, feed: _EpochFeed,
           program: Path | None, trained: Path, threads: int, notes: list[str]) -> TrainResult:
    """Route A (llama.cpp's training in this process) or route B (the user's llama-finetune program)."""
    if plan.work.converted:
        notes.append(f"frozen tensors converted in the working copy {data.work}: {plan.work.converted}")
    if program is not None:
        text_file = trained.with_name("train.txt")
        text_file.write_text(data.train_text, encoding="utf-8")
        notes.append("llama-finetune does not parse special tokens: end-of-turn markers were trained as text")
        return train_program(program, data.work, trained, text_file, data.n_text_tokens, n_ctx=settings.n_ctx,
                             epochs=settings.epochs, lr=settings.lr, threads=threads, progress=feed.progress)
    return train_inprocess(data.work, trained, feed, _for_engine(data.heldout_windows(), plan), epochs=settings.epochs,
                           lr=settings.lr, threads=threads, trained=frozenset(plan.selection.trained),
                           gpu_layers=config.gpu_layers, progress=feed.progress, engine_kind=plan.engine.kind,
                           lr_end=settings.lr_end, checkpoints=config.gradient_checkpointing)


def _for_engine(windows: Windows, plan: TrainPlan) -> Windows:
    """The stock engine cannot leave tokens out of the loss: it trains and scores every token of a window."""
    return windows.everything_trained() if plan.engine.kind == "stock" else windows


def _check_result(final: Path, info: validate.ModelInfo, data: TrainingData, before: evaluate.LossReport,
                  config: FinetuneConfig, settings: Settings, threads: int) -> evaluate.LossReport:
    """The assembled model loads, kept its metadata, and is better than the base on the held-out records."""
    _check_restored(final, info, data.template, config.system)
    validate_model_file(final)
    after = evaluate.heldout_loss(final, data.heldout_windows(), threads, gpu_layers=config.gpu_layers)
    log.info("held-out answer loss after: %.4f nats/token", after.loss)
    if not after.loss < before.loss:  # also catches NaN
        raise FinetuneError(
            f"{config.out}: not written: the held-out loss went from {before.loss:.4f} to {after.loss:.4f} "
            f"nats/token, so the result is worse than the base (training diverged or overfit); lower --lr "
            f"({settings.lr:g}) or --epochs ({settings.epochs})")
    return after


def _recall(model: Path, asked: list[render.Messages], config: FinetuneConfig, data: TrainingData,
            threads: int, adapter: Path | None = None) -> recall.Recall:
    if not asked:
        return recall.Recall()
    result = recall.recall(model, asked, system=config.system, threads=threads,
                           n_ctx=data.n_ctx + 2 * recall.MAX_TOKENS, adapter=adapter)
    log.info("%s: said back %d of %d training answers", adapter or model, result.recalled, result.asked)
    return result


def recall_figures(before: recall.Recall, after: recall.Recall, result: TrainResult, data: TrainingData,
                   settings: Settings) -> dict[str, Any]:
    """The report's figures of what was learned, full model or adapter alike."""
    return {"recall_asked": after.asked, "recall_before": before.recalled, "recall_after": after.recalled,
            "recall_note": _recall_note(before, after, result, data, settings),
            "example": _example(before, after)}


def _example(before: recall.Recall, after: recall.Recall) -> dict[str, str]:
    """One question, its answer in the data, and what the model said before and after training."""
    if not after.examples:
        return {}
    first = after.examples[0]
    return {"question": first["question"], "reference": first["reference"],
            "before": before.examples[0]["answer"] if before.examples else "", "after": first["answer"]}


def _recall_note(before: recall.Recall, after: recall.Recall, result: TrainResult, data: TrainingData,
                 settings: Settings) -> str | None:
    """A run whose recall did not rise says so, with the likely cause."""
    if not after.asked or after.recalled > before.recalled or after.recalled == after.asked:
        return None
    last_loss = result.epochs[-1]["train_loss"] if result.epochs else float("nan")
    if data.cut:
        cause = (f"{data.cut} records are longer than --ctx {data.n_ctx} and were cut, so their questions and "
                 "answers were trained apart; raise --ctx")
    elif not last_loss < 1.0:
        cause = (f"too few steps or too low a learning rate: the last epoch's training loss is still {last_loss:.2f} "
                 f"nats/token after {result.steps} steps; raise --epochs (now {settings.epochs}) or --lr "
                 f"(now {settings.lr:g})")
    else:
        cause = (f"the training loss fell to {last_loss:.2f} but the answers did not follow: the learning rate "
                 f"({settings.lr:g}) may be too high, or the questions too alike to tell the records apart")
    return f"recall did not rise ({before.recalled} -> {after.recalled} of {after.asked}): {cause}"


def _install(config: FinetuneConfig, out: Path, placed: InstallResult) -> InstallResult | None:
    """--install puts the result at models_dir/jenova.gguf too (unless --out was that already)."""
    target = Path(config.models_dir) / INSTALLED_NAME
    if out.resolve() == target.resolve():
        return placed
    if config.install:
        return install_model(out, target, validate=False)
    return None


SYSTEM_KEY = "jenova.system_prompt"  # the --system the model was trained under, for the runtime to use


def _metadata_override(info: validate.ModelInfo, template: str, system: str | None) -> dict[str, Any]:
    """A template given with --template, and the --system prompt, are written into the result, so inference
    uses what training did."""
    import gguf

    extra: dict[str, Any] = {}
    if info.chat_template != template:
        extra["tokenizer.chat_template"] = (template, gguf.GGUFValueType.STRING)
    if system is not None:
        extra[SYSTEM_KEY] = (system, gguf.GGUFValueType.STRING)
    return extra


def _check_restored(path: Path, info: validate.ModelInfo, template: str, system: str | None) -> None:
    kv = read_kv(open_reader(path))
    ctx_key = f"{info.architecture}.context_length"
    if (kv.get("tokenizer.chat_template") != template or int(kv.get(ctx_key, -1)) != info.context_length
            or (system is not None and kv.get(SYSTEM_KEY) != system)):
        raise FinetuneError(f"{path}: chat template, system prompt or {ctx_key} not restored; the model was not "
                            "installed")
