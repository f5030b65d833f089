"""Route A: train in this process through the libllama / libggml-base that llama-cpp-python installs.

It is what llama.cpp's `llama-finetune` does (llama_opt_init + llama_opt_epoch + llama_model_save_to_file)
with three differences that matter: special tokens are parsed (the real EOS is learned), the held-out windows
come from held-out records, and each step reports back through a callback for the progress bar.

llama-cpp-python declares `llama_opt_params` without its trailing `optimizer_type` field, and declares no
ggml_opt_* functions, so both are declared here against the shipped libraries.
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

from jenova_fast.finetune.errors import FinetuneError
from jenova_fast.finetune.runtime import library_dir, llama_cpp_module, load_model, new_context

log = logging.getLogger(__name__)

GGML_TYPE_I32 = 26
OPTIMIZERS = {"adamw": 0, "sgd": 1}  # enum ggml_opt_optimizer_type


class _AdamW(ctypes.Structure):
    _fields_ = [("alpha", ctypes.c_float), ("beta1", ctypes.c_float), ("beta2", ctypes.c_float),
                ("eps", ctypes.c_float), ("wd", ctypes.c_float)]


class _SGD(ctypes.Structure):
    _fields_ = [("alpha", ctypes.c_float), ("wd", ctypes.c_float)]


class OptimizerParams(ctypes.Structure):
    """struct ggml_opt_optimizer_params (ggml-opt.h)."""

    _fields_ = [("adamw", _AdamW), ("sgd", _SGD)]


class LlamaOptParams(ctypes.Structure):
    """struct llama_opt_params (llama.h), including `optimizer_type`."""

    _fields_ = [
        ("n_ctx_train", ctypes.c_uint32),
        ("param_filter", ctypes.c_void_p),
        ("param_filter_ud", ctypes.c_void_p),
        ("get_opt_pars", ctypes.c_void_p),
        ("get_opt_pars_ud", ctypes.c_void_p),
        ("optimizer_type", ctypes.c_int),
    ]


# void (*ggml_opt_epoch_callback)(bool train, ggml_opt_context_t, ggml_opt_dataset_t, ggml_opt_result_t,
#                                 int64_t ibatch, int64_t ibatch_max, int64_t t_start_us)
EpochCallback = ctypes.CFUNCTYPE(None, ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)


class _Lib:
    """The training entry points of libllama and libggml-base, with their C signatures."""

    def __init__(self) -> None:
        llama_cpp_module()  # loads the libraries (and their dependencies) the way llama-cpp-python does
        folder = library_dir()
        self.llama = ctypes.CDLL(str(folder / "libllama.so"))
        self.ggml = ctypes.CDLL(str(folder / "libggml-base.so"))
        p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        dbl = ctypes.POINTER(ctypes.c_double)
        signatures: list[tuple[Any, str, list[Any], Any]] = [
            (self.llama, "llama_opt_init", [p, p, LlamaOptParams], None),
            (self.llama, "llama_opt_epoch", [p, p, p, p, i64, EpochCallback, EpochCallback], None),
            (self.llama, "llama_model_save_to_file", [p, ctypes.c_char_p], None),
            (self.ggml, "ggml_opt_dataset_init", [c_int, c_int, i64, i64, i64, i64], p),
            (self.ggml, "ggml_opt_dataset_free", [p], None),
            (self.ggml, "ggml_opt_dataset_data", [p], p),
            (self.ggml, "ggml_opt_dataset_labels", [p], p),
            (self.ggml, "ggml_get_data", [p], p),
            (self.ggml, "ggml_nbytes", [p], ctypes.c_size_t),
            (self.ggml, "ggml_opt_result_init", [], p),
            (self.ggml, "ggml_opt_result_free", [p], None),
            (self.ggml, "ggml_opt_result_reset", [p], None),
            (self.ggml, "ggml_opt_result_loss", [p, dbl, dbl], None),
            (self.ggml, "ggml_opt_result_accuracy", [p, dbl, dbl], None),
            (self.ggml, "ggml_opt_get_default_optimizer_params", [p], OptimizerParams),
        ]
        for lib, name, argtypes, restype in signatures:
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, restype
            setattr(self, name, fn)
        # returns *(ggml_opt_optimizer_params *) userdata: the params struct below, which we may change
        self.constant_params = ctypes.cast(self.ggml.ggml_opt_get_constant_optimizer_params, ctypes.c_void_p).value

    def __getattr__(self, name: str) -> Any:  # the C functions set in __init__, for the type checker
        raise AttributeError(name)

    def result_stats(self, result: int) -> tuple[float, float]:
        loss, acc, unc = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        self.ggml_opt_result_loss(result, ctypes.byref(loss), ctypes.byref(unc))
        self.ggml_opt_result_accuracy(result, ctypes.byref(acc), ctypes.byref(unc))
        return loss.value, acc.value



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
# epoch (0-based) -> training windows (n, n_ctx + 1) of that epoch, so each epoch can be reshuffled; none: stop
WindowsForEpoch = Callable[[int], np.ndarray]

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


def _fill_dataset(lib: _Lib, dataset: int, rows: np.ndarray) -> None:
    """Copy windows (n, n_ctx + 1) into the dataset's data (inputs) and labels (next tokens) tensors."""
    n_ctx = rows.shape[1] - 1
    for getter, part in ((lib.ggml_opt_dataset_data, rows[:, :-1]), (lib.ggml_opt_dataset_labels, rows[:, 1:])):
        tensor = getter(dataset)
        nbytes = lib.ggml_nbytes(tensor)
        if nbytes != part.size * 4:
            raise RuntimeError(f"dataset tensor holds {nbytes} bytes, expected {part.size * 4} ({n_ctx=})")
        view = np.ctypeslib.as_array(ctypes.cast(lib.ggml_get_data(tensor), ctypes.POINTER(ctypes.c_int32)),
                                     shape=part.shape)
        view[...] = part


class _Datasets:
    """ggml datasets by window count, reused: training runs in chunks of a few windows each."""

    def __init__(self, lib: _Lib, n_ctx: int) -> None:
        self.lib, self.n_ctx = lib, n_ctx
        self.by_size: dict[int, int] = {}

    def filled(self, rows: np.ndarray) -> int:
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

    def __init__(self, lib: _Lib, names: frozenset[str] | None) -> None:
        get_name = lib.ggml.ggml_get_name
        get_name.argtypes, get_name.restype = [ctypes.c_void_p], ctypes.c_char_p
        self.seen: set[str] = set()

        def accept(tensor: int, _userdata: Any) -> bool:
            name = get_name(tensor).decode("utf-8", "replace")
            keep = names is None or name in names
            if keep:
                self.seen.add(name)
            return keep

        self.callback = ParamFilter(accept)
        self.pointer = ctypes.cast(self.callback, ctypes.c_void_p).value


ParamFilter = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


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
    heldout_windows: np.ndarray,
    *,
    epochs: int,
    lr: float,
    threads: int,
    trained: frozenset[str] | None = None,
    gpu_layers: int = 0,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train the F32 tensors of `base` named in `trained` (None: all of them) and save to `out` (as llama.cpp
    writes it: without chat template, with context_length = n_ctx; the caller restores both).

    Each epoch's windows are fed in chunks of at most ~CHUNK_SECONDS of steps; the optimizer state lives in
    the context, so chunks continue one AdamW run. KeyboardInterrupt is raised after the chunk it arrived in
    (a signal cannot stop llama.cpp mid-call), before anything is saved."""
    started = time.perf_counter()
    lib = _Lib()
    n_ctx = heldout_windows.shape[1] - 1
    result = TrainResult()
    param_filter = _ParamFilter(lib, trained)
    with load_model(base, writable=True, gpu_layers=gpu_layers) as model, \
            new_context(model, n_ctx, threads, training=True) as ctx:
        opt_params = lib.ggml_opt_get_default_optimizer_params(None)  # read by llama.cpp at every step
        opt_params.adamw.alpha = opt_params.sgd.alpha = lr
        opt_params.adamw.wd = opt_params.sgd.wd = weight_decay
        lib.llama_opt_init(ctx, model, LlamaOptParams(
            n_ctx_train=n_ctx, param_filter=param_filter.pointer, param_filter_ud=None,
            get_opt_pars=lib.constant_params, get_opt_pars_ud=ctypes.addressof(opt_params),
            optimizer_type=OPTIMIZERS[optimizer]))
        if trained is not None and trained - param_filter.seen:
            missing = sorted(trained - param_filter.seen)
            raise FinetuneError(f"{base}: llama.cpp did not offer {missing[0]} (and {len(missing) - 1} more) "
                                "for training; it trains only F32 tensors it knows")
        log.debug("training %d tensors", len(param_filter.seen))
        meter = _Meter(lib, result, progress, epochs, len(heldout_windows), started)
        with _Chunks(lib, ctx, n_ctx, meter) as run:
            for epoch in range(epochs):
                windows = train_windows(epoch)
                if len(windows) == 0:  # the caller stopped early (pipeline's early stopping)
                    break
                _epoch(run, meter, windows, heldout_windows, epoch)
        result.seconds = time.perf_counter() - started
        if out is not None:  # None: a benchmark that only times the steps
            lib.llama_model_save_to_file(model, os.fsencode(Path(out)))
    return result


def _epoch(run: _Chunks, meter: _Meter, windows: np.ndarray, heldout: np.ndarray, epoch: int) -> None:
    """One pass over the training windows, in chunks sized to ~CHUNK_SECONDS, then over the held-out ones."""
    meter.begin(epoch, len(windows))
    chunk, done = 4, 0  # a first short chunk measures the step time
    while done < len(windows):
        run(windows[done:done + chunk], train=True)
        done += chunk
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

    def __init__(self, lib: _Lib, result: TrainResult, progress: ProgressCallback | None, epochs: int,
                 n_eval: int, started: float) -> None:
        self.lib, self.result, self.progress, self.epochs, self.n_eval = lib, result, progress, epochs, n_eval
        self.started = self.last = started
        self.epoch = self.steps = self.n = 0
        self.loss = self.acc = 0.0
        self.errors: list[BaseException] = []

    def begin(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.last = epoch, steps, time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self.n, self.loss, self.acc = 0, 0.0, 0.0

    def means(self) -> tuple[float, float]:
        return self.loss / max(self.n, 1), self.acc / max(self.n, 1)

    def on_batch(self, train: bool, _opt: Any, _ds: Any, res: Any, _ib: int, _ibmax: int, _t: Any) -> None:
        try:  # an exception must not cross the C frames; it is re-raised after the chunk
            now = time.perf_counter()
            loss, acc = self.lib.result_stats(res)
            self.lib.ggml_opt_result_reset(res)  # so each call sees one step's loss
            self.n += 1
            self.loss += loss
            self.acc += acc
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

    def __init__(self, lib: _Lib, ctx: Any, n_ctx: int, meter: _Meter) -> None:
        self.lib, self.ctx, self.meter = lib, ctx, meter
        self.datasets = _Datasets(lib, n_ctx)
        self.result_train, self.result_eval = lib.ggml_opt_result_init(), lib.ggml_opt_result_init()
        self.callback = EpochCallback(meter.on_batch)
        self.null_callback = EpochCallback()  # a NULL function pointer: llama.cpp skips the call
        self.signals = _DeferredSignals()

    def __enter__(self) -> _Chunks:
        self.signals.__enter__()
        return self

    def __call__(self, rows: np.ndarray, train: bool) -> None:
        dataset = self.datasets.filled(rows)
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
