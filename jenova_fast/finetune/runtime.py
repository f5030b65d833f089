"""llama.cpp for the fine-tuning pipeline: the engines (`jenova_fast.engine`) as FinetuneErrors, models
loaded, contexts made, text tokenized."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from jenova_fast import _fs
from jenova_fast.engine import Choice, Engine, EngineError, choose, load
from jenova_fast.finetune.errors import FinetuneError

log = logging.getLogger(__name__)

GGML_TYPE_F32 = 0
LLAMA_LOAD_MODE_NONE = 0  # plain reads into writable buffers; training needs writable weights
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0  # FLASH_ATTN_EXT has no backward pass
GGML_BACKEND_DEVICE_TYPE_GPU = 1  # enum ggml_backend_dev_type


def engine(kind: str = "stock") -> Engine:
    """A loaded llama.cpp (`jenova_fast.engine`): its functions as llama-cpp-python names them. The stock one
    scores, generates and tokenizes; training runs on the engine the run chose."""
    try:
        return load(kind)  # type: ignore[arg-type]
    except EngineError as exc:
        raise FinetuneError(str(exc)) from exc


def llama_cpp_module() -> Engine:
    """llama-cpp-python's llama.cpp, or a FinetuneError naming the install command."""
    return engine("stock")


def choose_engine(requested: str) -> Choice:
    try:
        return choose(requested)
    except EngineError as exc:
        raise FinetuneError(str(exc)) from exc


def check_gpu_offload(kind: str = "stock") -> None:
    """--gpu-layers needs a llama.cpp built with a GPU backend; say how to get one."""
    if not engine(kind).llama_supports_gpu_offload():
        raise FinetuneError(
            f"--gpu-layers: the {kind} engine has no GPU backend; "
            + ("build it with one: jenova-fast engine build --gpu cuda (or metal, vulkan), " if kind == "patched" else
               "rebuild llama-cpp-python with one, e.g. CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install --force-reinstall "
               "--no-cache-dir 'llama-cpp-python==0.3.36' (-DGGML_METAL=on on a Mac, -DGGML_VULKAN=on for Vulkan), ")
            + "or leave --gpu-layers at 0")


@dataclass(frozen=True)
class Device:
    name: str
    free: int  # bytes
    total: int


def gpu_devices(kind: str = "stock") -> list[Device]:
    """The GPUs llama.cpp's backends see (none in a CPU build), with their free memory, through libggml's
    device registry: what `--gpu-layers` will use."""
    ggml = engine(kind)
    devices = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        if ggml.ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU:
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            devices.append(Device(ggml.ggml_backend_dev_name(dev).decode("utf-8", "replace"), free.value, total.value))
    return devices


def pick_threads(requested: int | None) -> int:
    cores = _fs.available_cores()
    if requested is None or requested <= 0:
        return cores
    if requested > cores:
        log.warning("--threads %d is more than the %d free cores; using %d (oversubscribing is 30-60x slower)",
                    requested, cores, cores)
        return cores
    return requested


@contextlib.contextmanager
def load_model(path: str | os.PathLike[str], *, writable: bool = False, vocab_only: bool = False,
               gpu_layers: int = 0, on: Engine | None = None, training: bool = False) -> Iterator[Any]:
    """A `llama_model *`, freed on exit. `writable` loads for training: without mmap, and without the CPU
    backend's weight repacking (a repacked frozen Q4_0/Q4_K matrix has no backend for the backward pass's
    OUT_PROD, and ggml aborts). `gpu_layers` as llama.cpp's n_gpu_layers (-1: all). `on`: the engine (stock)."""
    lc = on or llama_cpp_module()
    params = lc.llama_model_default_params()
    params.vocab_only = vocab_only
    params.n_gpu_layers = gpu_layers
    if writable:
        params.load_mode = LLAMA_LOAD_MODE_NONE
    if writable or training:
        params.use_extra_bufts = False
    model = lc.llama_model_load_from_file(os.fsencode(path), params)
    if not model:
        raise FinetuneError(f"{path}: llama.cpp could not load this model; check it with `python -m gguf.scripts"
                            ".gguf_dump {path}` and convert it again with a current convert_hf_to_gguf.py")
    try:
        yield model
    finally:
        lc.llama_model_free(model)


@contextlib.contextmanager
def new_context(model: Any, n_ctx: int, n_threads: int, *, training: bool = False,
                on: Engine | None = None) -> Iterator[Any]:
    """A `llama_context *` with ctx == batch == ubatch (what training and whole-window scoring need), on the
    engine that loaded `model`."""
    lc = on or llama_cpp_module()
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
    params.n_threads = params.n_threads_batch = n_threads
    params.no_perf = True
    if training:
        params.type_k = params.type_v = GGML_TYPE_F32  # OUT_PROD has no F16 support
        params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = lc.llama_init_from_model(model, params)
    if not ctx:
        raise FinetuneError(f"llama.cpp could not create a context of {n_ctx} tokens; lower --ctx")
    try:
        yield ctx
    finally:
        lc.llama_free(ctx)


def tokenize(model: Any, text: str, *, parse_special: bool = True, add_bos: bool = False) -> np.ndarray:
    """Token ids (int32). Special tokens are parsed by default, so `</s>` or `<|im_end|>` become single real
    tokens; no BOS by default (the caller decides, as templates often write it themselves)."""
    lc = llama_cpp_module()
    vocab = lc.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    n_max = len(data) + 16
    for _ in range(2):
        buf = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(vocab, data, len(data), buf, n_max, add_bos, parse_special)
        if n >= 0:
            return np.frombuffer(buf, dtype=np.int32, count=n).copy()
        n_max = -n
    raise FinetuneError("llama.cpp's tokenizer failed on a rendered record")


def special_tokens(model: Any) -> tuple[int, int, bool, str, str]:
    """(bos id, eos id, whether the model wants a BOS first, BOS text, EOS text)."""
    lc = llama_cpp_module()
    vocab = lc.llama_model_get_vocab(model)
    bos, eos = lc.llama_vocab_bos(vocab), lc.llama_vocab_eos(vocab)

    def text(token: int) -> str:
        if token < 0:
            return ""
        raw = lc.llama_vocab_get_text(vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    return bos, eos, bool(lc.llama_vocab_get_add_bos(vocab)), text(bos), text(eos)
