"""Route A: train in this process on an engine (`jenova_fast.engine`: the patched llama.cpp, or the stock one
llama-cpp-python installs).

It is what llama.cpp's `llama-finetune` does (llama_opt_init + llama_opt_epoch + llama_model_save_to_file)
with differences that matter: special tokens are parsed (the real EOS is learned), the held-out windows come
from held-out records, each step reports back through a callback for the progress bar, and on the patched
engine only the tokens the windows mark as trained are (answer-only loss).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jenova_fast.engine.library import OPTIMIZERS, Engine, EpochCallback, LlamaOptParams, ParamFilter
from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.runtime import choose_engine, engine, load_model, new_context
from jenova_fast.finetune.windows import MASKED, Windows

log = logging.getLogger(__name__)

GGML_TYPE_I32 = 26


def _result_stats(lib: Engine, result: int) -> float:
    loss, unc = ctypes.c_double(), ctypes.c_double()
    lib.ggml_opt_result_loss(result, ctypes.byref(loss), ctypes.byref(unc))
    return loss.value


@dataclass(frozen=True)
class Progress:
    """One step of training or held-out evaluation, for progress bars and logs."""

    phase: str  # "train" or "eval"
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the phase of this epoch
    steps: int
    loss: float  # running mean over this epoch so far, nats/token
    accuracy: float  # running next-token accuracy, 0..1
    elapsed: float  # seconds since training started
    eta: float  # seconds left for the whole run (estimate)


ProgressCallback = Callable[[Progress], None]
# epoch (0-based) -> the training windows of that epoch, so each epoch can be reshuffled; none: stop there
WindowsForEpoch = Callable[[int], Windows]

CHUNK_SECONDS = 10.0  # how long one call into llama.cpp may run: Ctrl-C is honoured after it returns
MAX_CHUNK = 256


@dataclass
class TrainResult:
    steps: int = 0
    seconds: float = 0.0
    epochs: list[dict[str, float]] = field(default_factory=list)  # per epoch: train/eval loss & accuracy
    step_losses: list[float] = field(default_factory=list)  # every training step, in order
    step_seconds: list[float] = field(default_factory=list)  # wall time of every training step
    eval_points: list[tuple[int, float]] = field(default_factory=list)  # (steps so far, held-out loss)
    adapter: dict[str, np.ndarray] = field(default_factory=dict)  # a LoRA run's trained tensors, flat F32


def _fill_dataset(lib: Engine, dataset: int, rows: Windows) -> None:
    """Copy windows into the dataset's data (inputs) and labels (next tokens) tensors."""
    n_ctx = rows.n_ctx
    for getter, part in ((lib.ggml_opt_dataset_data, rows.inputs), (lib.ggml_opt_dataset_labels, rows.labels)):
        tensor = getter(dataset)
        nbytes = lib.ggml_nbytes(tensor)
        if nbytes != part.size * 4:
            raise RuntimeError(f"dataset tensor holds {nbytes} bytes, expected {part.size * 4} ({n_ctx=})")
        view = np.ctypeslib.as_array(ctypes.cast(lib.ggml_get_data(tensor), ctypes.POINTER(ctypes.c_int32)),
                                     shape=part.shape)
        view[...] = part


class _Datasets:
    """ggml datasets by window count, reused: training runs in chunks of a few windows each."""

    def __init__(self, lib: Engine, n_ctx: int) -> None:
        self.lib, self.n_ctx = lib, n_ctx
        self.by_size: dict[int, int] = {}

    def filled(self, rows: Windows) -> int:
        n = len(rows)
        if n not in self.by_size:
            self.by_size[n] = self.lib.ggml_opt_dataset_init(GGML_TYPE_I32, GGML_TYPE_I32, self.n_ctx, self.n_ctx,
                                                             n, 1)
        _fill_dataset(self.lib, self.by_size[n], rows)
        return self.by_size[n]

    def free(self) -> None:
        for dataset in self.by_size.values():
            self.lib.ggml_opt_dataset_free(dataset)


class _ParamFilter:
    """`llama_opt_params.param_filter` over a set of tensor names; must outlive training."""

    def __init__(self, lib: Engine, names: frozenset[str] | None) -> None:
        get_name = lib.ggml_get_name
        self.seen: set[str] = set()
        self.pointers: dict[str, int] = {}  # the accepted tensors, to read them back after training

        def accept(tensor: int, _userdata: Any) -> bool:
            name = get_name(tensor).decode("utf-8", "replace")
            keep = names is None or name in names
            if keep:
                self.seen.add(name)
                self.pointers[name] = tensor
            return keep

        self.callback = ParamFilter(accept)
        self.pointer = ctypes.cast(self.callback, ctypes.c_void_p).value


class _DeferredSignals(contextlib.AbstractContextManager["_DeferredSignals"]):
    """While llama.cpp runs a chunk, SIGINT/SIGTERM are only noted: Python cannot raise into C frames (in a
    ctypes callback the exception is printed and dropped). `check()` between chunks hands a noted signal to
    the handler that was installed before (KeyboardInterrupt for Ctrl-C), with nothing yet saved."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []

    def __enter__(self) -> _DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):  # leave SIG_IGN / SIG_DFL as the application set them
                    self.previous[signum] = signal.signal(signum, lambda n, _f: self.pending.append(n))
        return self

    def check(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            self.previous[signum](signum, None)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def train_inprocess(
    base: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    train_windows: WindowsForEpoch,
    heldout_windows: Windows,
    *,
    epochs: int,
    lr: float,
    threads: int,
    trained: frozenset[str] | None = None,
    gpu_layers: int = 0,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    progress: ProgressCallback | None = None,
    engine_kind: str = "auto",
    lora: str | os.PathLike[str] | None = None,
    lr_end: float | None = None,
    checkpoints: bool = False,
) -> TrainResult:
    """Train the F32 tensors of `base` named in `trained` (None: all of them) and save to `out` (as llama.cpp
    writes it: without chat template, with context_length = n_ctx; the caller restores both). Only the windows'
    trained tokens count (a mask needs the patched engine). With `lora` (an adapter file: `adapter.py`), the
    adapter's tensors are what is trained, the base stays frozen as loaded, and `out` is not written: the
    trained tensors come back in `TrainResult.adapter`. With `lr_end`, the learning rate falls linearly from
    `lr` to `lr_end` over the planned steps (epochs x the first epoch's windows). With `checkpoints`, only each
    block's output is kept from the forward pass and the rest computed again in the backward pass (patched engine).

    Each epoch's windows are fed in chunks of at most ~CHUNK_SECONDS of steps; the optimizer state lives in
    the context, so chunks continue one AdamW run. KeyboardInterrupt is raised after the chunk it arrived in
    (a signal cannot stop llama.cpp mid-call), before anything is saved."""
    started = time.perf_counter()
    lib = engine(choose_engine(engine_kind).kind if engine_kind == "auto" else engine_kind)
    n_ctx = heldout_windows.n_ctx
    result = TrainResult()
    param_filter = _ParamFilter(lib, trained)
    if checkpoints:
        log.info("gradient checkpointing: each block's output is kept, the rest computed again in the backward pass")
    with lib.checkpoints(checkpoints), \
            load_model(base, writable=lora is None, training=True, gpu_layers=gpu_layers, on=lib) as model, \
            new_context(model, n_ctx, threads, training=True, on=lib) as ctx:
        if lora is not None:
            _set_adapter(lib, model, ctx, lora)
        opt_params = lib.ggml_opt_get_default_optimizer_params(None)  # read by llama.cpp at every step
        opt_params.adamw.alpha = opt_params.sgd.alpha = lr
        opt_params.adamw.wd = opt_params.sgd.wd = weight_decay
        lib.llama_opt_init(ctx, model, LlamaOptParams(
            n_ctx_train=n_ctx, param_filter=param_filter.pointer, param_filter_ud=None,
            get_opt_pars=lib.constant_optimizer_params(), get_opt_pars_ud=ctypes.addressof(opt_params),
            optimizer_type=OPTIMIZERS[optimizer]))
        if trained is not None and trained - param_filter.seen:
            missing = sorted(trained - param_filter.seen)
            raise FinetuneError(f"{base}: llama.cpp did not offer {missing[0]} (and {len(missing) - 1} more) "
                                "for training; it trains only F32 tensors it knows")
        log.debug("training %d tensors", len(param_filter.seen))
        meter = _Meter(lib, result, progress, epochs, len(heldout_windows), started, n_ctx)
        schedule = _LinearDecay(opt_params, lr, lr if lr_end is None else lr_end)
        with _Chunks(lib, ctx, n_ctx, meter) as run:
            for epoch in range(epochs):
                windows = train_windows(epoch)
                if len(windows) == 0:  # the caller stopped early (pipeline's early stopping)
                    break
                if epoch == 0:
                    schedule.plan(epochs * len(windows))
                _epoch(run, meter, windows, heldout_windows, epoch, schedule)
        result.seconds = time.perf_counter() - started
        if lora is not None:
            result.adapter = {name: _tensor_data(lib, pointer) for name, pointer in param_filter.pointers.items()}
        elif out is not None:  # None: a benchmark that only times the steps
            lib.llama_model_save_to_file(model, os.fsencode(Path(out)))
    return result


def _set_adapter(lib: Engine, model: Any, ctx: Any, path: str | os.PathLike[str]) -> None:
    """Load a LoRA adapter over the model and set it on the context before llama_opt_init builds the graph
    (the patched opt_init then offers its tensors to the parameter filter)."""
    if lib.kind != "patched":
        raise FinetuneError("LoRA training needs the patched engine (stock llama.cpp never offers adapter tensors "
                            "for training); build it: jenova-fast engine build")
    adapter = lib.llama_adapter_lora_init(model, os.fsencode(Path(path)))
    if not adapter:
        raise FinetuneError(f"{path}: llama.cpp could not load this adapter over the base")
    adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    if lib.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
        raise FinetuneError(f"{path}: llama.cpp could not set this adapter on the training context")


def _tensor_data(lib: Engine, tensor: int) -> np.ndarray:
    """A tensor's F32 values, wherever its backend keeps them."""
    data = np.empty(lib.ggml_nbytes(tensor) // 4, dtype=np.float32)
    lib.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, data.nbytes)
    return data


class _LinearDecay:
    """The learning rate, falling linearly from `lr` to `end` over the planned steps. llama.cpp reads it from
    `opt_params` at every step, and it is set between chunks; it changes only at fixed step numbers (BLOCKS
    blocks of steps), and chunks end there, so where a chunk ends (which depends on timing) never changes the
    rate of a step."""

    BLOCKS = 20

    def __init__(self, opt_params: Any, lr: float, end: float) -> None:
        self.opt_params, self.lr, self.end = opt_params, lr, end
        self.step, self.total, self.block = 0, 1, MAX_CHUNK

    def plan(self, total: int) -> None:
        self.total = max(total, 1)
        self.block = max(1, -(-self.total // self.BLOCKS))

    def set(self) -> int:
        """Sets the rate of the current step's block; returns how many steps of the block are left."""
        start = self.step - self.step % self.block
        alpha = self.lr + (self.end - self.lr) * min(1.0, start / self.total)
        self.opt_params.adamw.alpha = self.opt_params.sgd.alpha = alpha
        return self.block - self.step % self.block


def _epoch(run: _Chunks, meter: _Meter, windows: Windows, heldout: Windows, epoch: int,
           schedule: _LinearDecay) -> None:
    """One pass over the training windows, in chunks sized to ~CHUNK_SECONDS, then over the held-out ones."""
    meter.begin(epoch, len(windows))
    chunk, done = 4, 0  # a first short chunk measures the step time
    while done < len(windows):
        rows = windows[done:done + min(chunk, schedule.set())]
        run(rows, train=True)
        schedule.step += len(rows)
        done += len(rows)
        per_step = float(np.median(meter.result.step_seconds[-16:]))
        chunk = int(min(MAX_CHUNK, max(1, CHUNK_SECONDS // max(per_step, 1e-3))))
    train_loss, train_acc = meter.means()
    if not math.isfinite(train_loss):
        raise FinetuneError(f"training diverged in epoch {epoch + 1} (loss {train_loss}); lower --lr")
    meter.restart()
    for start in range(0, len(heldout), MAX_CHUNK):
        run(heldout[start:start + MAX_CHUNK], train=False)
    eval_loss, eval_acc = meter.means()
    meter.result.epochs.append({"train_loss": train_loss, "train_accuracy": train_acc,
                                "eval_loss": eval_loss, "eval_accuracy": eval_acc})
    meter.result.eval_points.append((meter.result.steps, eval_loss))
    log.info("epoch %d/%d: train loss %.4f acc %.1f%%, held-out loss %.4f acc %.1f%%", epoch + 1, meter.epochs,
             train_loss, 100 * train_acc, eval_loss, 100 * eval_acc)


class _Meter:
    """The running loss and accuracy of the current pass, each step's loss and time, and the progress they
    feed. `on_batch` is called from C: an exception is kept and re-raised after the chunk."""

    def __init__(self, lib: Engine, result: TrainResult, progress: ProgressCallback | None, epochs: int,
                 n_eval: int, started: float, n_ctx: int) -> None:
        self.lib, self.result, self.progress, self.epochs, self.n_eval = lib, result, progress, epochs, n_eval
        self.started = self.last = started
        self.epoch = self.steps = self.n = self.tokens = self.correct = 0
        self.loss = 0.0
        self.chunk: Windows | None = None  # the windows llama.cpp is running now; batch i is row i - 1
        self.pred = (ctypes.c_int32 * n_ctx)()
        self.errors: list[BaseException] = []

    def begin(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.last = epoch, steps, time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self.n, self.tokens, self.correct, self.loss = 0, 0, 0, 0.0

    def means(self) -> tuple[float, float]:
        """Loss and next-token accuracy over this pass's trained tokens."""
        return self.loss / max(self.tokens, 1), self.correct / max(self.tokens, 1)

    def on_batch(self, train: bool, _opt: Any, _ds: Any, res: Any, ibatch: int, _ibmax: int, _t: Any) -> None:
        try:  # an exception must not cross the C frames; it is re-raised after the chunk
            now = time.perf_counter()
            assert self.chunk is not None
            loss = _result_stats(self.lib, res)  # the mean over the window's trained tokens
            labels = self.chunk.labels[ibatch - 1]
            self.lib.ggml_opt_result_pred(res, self.pred)
            self.lib.ggml_opt_result_reset(res)  # so each call sees one step's loss
            targets = labels != MASKED
            n_targets = int(targets.sum())
            self.n += 1
            self.tokens += n_targets
            self.loss += loss * n_targets
            self.correct += int((np.ctypeslib.as_array(self.pred)[targets] == labels[targets]).sum())
            if train:
                self.result.step_seconds.append(now - self.last)
                self.result.steps += 1
                self.result.step_losses.append(loss)
            self.last = now
            if self.progress is not None:
                self.progress(self._progress(train, now))
        except BaseException as exc:
            self.errors.append(exc)

    def _progress(self, train: bool, now: float) -> Progress:
        epochs_left = self.epochs - self.epoch - 1
        left = (self.steps - self.n if train else 0) + epochs_left * self.steps
        left_eval = (self.n_eval - (0 if train else self.n)) + epochs_left * self.n_eval
        recent = self.result.step_seconds[-64:]
        per_step = float(np.median(recent)) if recent else 0.0
        eta = per_step * (left + left_eval / 3)  # a forward pass is ~1/3 of a step
        loss, acc = self.means()
        return Progress("train" if train else "eval", self.epoch + 1, self.epochs, self.n,
                        self.steps if train else self.n_eval, loss, acc, now - self.started, eta)


class _Chunks(contextlib.AbstractContextManager["_Chunks"]):
    """Calls llama_opt_epoch on one chunk of windows at a time, with SIGINT/SIGTERM deferred to between
    chunks; owns the datasets and result objects of the run."""

    def __init__(self, lib: Engine, ctx: Any, n_ctx: int, meter: _Meter) -> None:
        self.lib, self.ctx, self.meter = lib, ctx, meter
        self.datasets = _Datasets(lib, n_ctx)
        self.result_train, self.result_eval = lib.ggml_opt_result_init(), lib.ggml_opt_result_init()
        self.callback = EpochCallback(meter.on_batch)
        self.null_callback = EpochCallback()  # a NULL function pointer: llama.cpp skips the call
        self.signals = _DeferredSignals()

    def __enter__(self) -> _Chunks:
        self.signals.__enter__()
        return self

    def __call__(self, rows: Windows, train: bool) -> None:
        if self.lib.kind == "stock" and rows.trained is not None and not rows.trained[:, 1:].all():
            raise FinetuneError("the stock llama.cpp engine cannot leave tokens out of the loss (--loss answer); "
                                "build the patched one (jenova-fast engine build) or use --loss all")
        dataset = self.datasets.filled(rows)
        self.meter.chunk = rows
        split = len(rows) if train else 0
        on_train, on_eval = (self.callback, self.null_callback) if train else (self.null_callback, self.callback)
        self.lib.llama_opt_epoch(self.ctx, dataset, self.result_train, self.result_eval, split, on_train, on_eval)
        self.signals.check()
        if self.meter.errors:
            raise self.meter.errors[0]

    def __exit__(self, *exc: object) -> None:
        self.signals.__exit__()
        self.lib.ggml_opt_result_free(self.result_train)
        self.lib.ggml_opt_result_free(self.result_eval)
        self.datasets.free()
